"""Exceptions that the command line turns into a one-line message and a non-zero exit."""


class NgpOhemError(Exception):
    """Base class for every error a user can cause with bad input."""


class DatasetError(NgpOhemError):
    """A dataset on disk is missing, malformed or inconsistent; the message names the file."""


class ConfigError(NgpOhemError):
    """A configuration value is invalid; the message names the key."""


class DivergenceError(NgpOhemError):
    """The loss or a parameter became NaN/inf; the trace written so far is kept."""


class ClockContendedError(NgpOhemError):
    """With strict_clock, other processes took CPU from the run's cores: the run is discarded."""


class RunFolderError(NgpOhemError):
    """A run's output folder cannot be used: not a folder, not writable, or in use by another run."""
