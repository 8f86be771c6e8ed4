"""`mixup-sweep logs NAME [--follow]` and `mixup-sweep stop NAME`.

A submitted sweep's parent run names its Ray job and the address it was submitted to (recorded by the
driver, monitor/progress.py), so both commands need only the tracking store. `stop` asks Ray to stop
the job: Ray sends the driver SIGTERM, which the driver treats as Ctrl-C (Ray Tune saves its state, the
sweep stays resumable, exit 143). A sweep driven by a local `run` has no Ray job: `stop` signals that
driver itself when it runs on this machine (its host and pid are in its sweep lease, lease.py)."""

from __future__ import annotations

import sys
from typing import Optional

from mixup_core import ConfigError

from .. import keys
from .client import JobsError, job_client
from .submit import follow_job


def submitted_job(parent) -> Optional[tuple[str, str]]:
    tags = parent.data.tags
    if keys.JOB_ID_TAG in tags and tags.get(keys.JOB_ADDRESS_TAG):
        return tags[keys.JOB_ID_TAG], tags[keys.JOB_ADDRESS_TAG]
    return None


def _client_for_job(address: str):
    try:
        return job_client(address)
    except JobsError as e:
        raise ConfigError(str(e)) from None


def show_logs(name: str, parent, follow: bool) -> int:
    job = submitted_job(parent)
    if job is None:
        raise ConfigError(f"sweep {name!r} was not submitted as a Ray job (a local `mixup-sweep run` drives it"
                          f"{' on ' + parent.data.tags[keys.DRIVER_HOST_TAG] if keys.DRIVER_HOST_TAG in parent.data.tags else ''}"
                          f"): its output is in that driver's terminal")
    job_id, address = job
    client = _client_for_job(address)
    if follow:
        return follow_job(client, job_id)
    sys.stdout.write(client.get_job_logs(job_id))
    return 0


def stop_sweep(name: str, parent, stop_local) -> int:
    """`stop_local(name, parent)`: stops a local driver (the sweep lease's holder), or raises."""
    if parent.info.status != "RUNNING":
        print(f"sweep {name!r} is not running (its run is {parent.info.status}); nothing to stop")
        return 0
    job = submitted_job(parent)
    if job is None:
        return stop_local(name, parent)
    job_id, address = job
    client = _client_for_job(address)
    stopped = client.stop_job(job_id)
    print(f"sweep {name!r}: asked Ray to stop job {job_id}" + ("" if stopped else " (it had already ended)")
          + f"; continue later with: mixup-sweep submit --resume {name} --address {address} ...")
    return 0
