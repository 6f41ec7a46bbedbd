"""ngp-ohem: Instant-NGP with online hard sample mining (Korhonen et al., ECCV 2024), as a benchmark suite."""

__version__ = "0.1.0"
