"""Selecting the early-stop epoch from what MLflow holds: the pure selection (selection.py), its
document and text report (report.py), its plots (plots.py), and `mixup-sweep best` (command.py)."""
