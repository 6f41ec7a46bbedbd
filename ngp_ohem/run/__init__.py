"""One training run, in parts that each do one job (no module here imports the trainer):

* :mod:`ngp_ohem.run.build` — a run's device, field, occupancy grid, ray geometry and strategy;
* :mod:`ngp_ohem.run.evaluation` — rendering and scoring test views (what ``ngp-ohem eval`` uses alone);
* :mod:`ngp_ohem.run.records` — the per-step window statistics, trace rows and the summary;
* :mod:`ngp_ohem.run.checkpoint` — saving and restoring any ``state_dict()`` object atomically;
* :mod:`ngp_ohem.run.trainer` — the step and the loop that ties them together.
"""
