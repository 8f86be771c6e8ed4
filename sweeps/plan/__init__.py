"""The plan of a sweep, derived from its validated spec alone (no Ray, no MLflow): which Ray trials it
creates (ray_trials.py), how prefix sharing turns grid trials into trunks and branches (sharing.py),
how packing groups them (packs.py), and the `--dry-run` listing of all that (dry_run.py)."""
