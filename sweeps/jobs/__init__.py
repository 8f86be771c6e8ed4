"""Sweeps driven as Ray Jobs on a cluster, through Ray's job SDK (`JobSubmissionClient`): `submit`
(submit.py), and `logs` / `stop` of a submitted sweep (control.py). client.py turns an unreachable, a
non-Ray or an unauthenticated address into one clear line before anything is submitted."""
