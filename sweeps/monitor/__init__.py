"""Watching sweeps from the tracking store alone: the driver's live progress on the parent run
(progress.py), and what `status` and `list` read back from any MLflow store (status.py, listing.py)."""
