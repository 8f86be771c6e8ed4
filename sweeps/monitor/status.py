"""`mixup-sweep status [NAME] [--watch] [--json]`: where a sweep stands, from the tracking store alone
(so it works from a laptop against the team's MLflow server, whatever machine drives the sweep).

One parent run and one search of its children: the state (running / finished / interrupted / failed),
trials finished / running / failed / pending of the total, epochs trained of the total (the driver's
live progress metrics, monitor/progress.py), elapsed time and an ETA, the provisional best
configuration (the same selection as `best`, over the trials finished so far), and for a submitted
sweep the Ray job's state, asked of the cluster with a short timeout.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .. import keys
from ..best.command import find_parent_run, read_children, sweep_label_keys, sweep_metric_and_mode, trial_records
from ..best.selection import SelectionError, group_trials, select

STALE_S = 120.0  # a RUNNING sweep whose driver has not beaten for this long has lost its driver


@dataclass
class SweepStatus:
    name: str
    parent_run_id: str
    state: str  # running | finished | interrupted | failed
    note: str = ""
    trials_total: int = 0
    trials_finished: int = 0
    trials_running: int = 0
    trials_failed: int = 0
    trials_pending: int = 0
    epochs_done: int = 0
    epochs_total: int = 0
    progress: float = 0.0
    started: float = 0.0  # unix time
    elapsed_s: float = 0.0
    eta_s: Optional[float] = None
    best: Optional[dict[str, Any]] = None
    job: Optional[dict[str, str]] = None
    driver_host: str = ""
    heartbeat_age_s: Optional[float] = None

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "failed", "interrupted")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_state(parent, heartbeat_age: Optional[float]) -> tuple[str, str]:
    status = parent.info.status
    if status == "RUNNING":
        if heartbeat_age is not None and heartbeat_age > STALE_S:
            return "interrupted", (f"no word from its driver for {heartbeat_age:.0f} s (killed?); "
                                   f"continue with: mixup-sweep resume NAME")
        return "running", ""
    if status == "FINISHED":
        return "finished", ""
    if status == "KILLED":
        return "interrupted", "stopped before the end; continue with: mixup-sweep resume NAME"
    return "failed", "the driver failed; see `mixup-sweep logs NAME` (submitted) or its terminal"


def job_state(job_id: str, address: str, timeout_s: float = 3.0) -> str:
    """The Ray job's status as the cluster reports it, or why it cannot be asked."""
    from ..jobs.client import JobsError, job_client

    try:
        return str(job_client(address, timeout_s=timeout_s).get_job_status(job_id).value)
    except JobsError as e:
        return f"unknown ({e})"
    except Exception as e:  # the job is unknown to that cluster, a transient HTTP error, ...
        return f"unknown ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"


def sweep_status(client, uri: str, name: str, ask_cluster: bool = True) -> SweepStatus:
    experiment_id, parent, _ = find_parent_run(client, name, None, uri)
    m, tags = parent.data.metrics, parent.data.tags
    now = time.time()
    beat = m.get(keys.HEARTBEAT)
    heartbeat_age = now - beat if beat else None
    state, note = sweep_state(parent, heartbeat_age)
    records = trial_records(read_children(client, experiment_id, parent.info.run_id, parent))
    latest: dict[str, Any] = {}
    for r in records:  # a trial retried as several runs counts once: its newest run
        if r.trial_id not in latest or r.start_time >= latest[r.trial_id].start_time:
            latest[r.trial_id] = r
    statuses = [r.status for r in latest.values()]
    total = int(m.get(keys.TRIALS_TOTAL, len(latest)))
    finished, running, failed = statuses.count("FINISHED"), statuses.count("RUNNING"), statuses.count("FAILED")
    started = (parent.info.start_time or 0) / 1000
    end = (parent.info.end_time or 0) / 1000 if parent.info.status != "RUNNING" else now
    st = SweepStatus(
        name=name, parent_run_id=parent.info.run_id, state=state, note=note.replace("NAME", name),
        trials_total=total, trials_finished=finished, trials_running=running if state == "running" else 0,
        trials_failed=failed, trials_pending=max(0, total - finished - failed - (running if state == "running" else 0)),
        epochs_done=int(m.get(keys.EPOCHS_DONE, 0)), epochs_total=int(m.get(keys.EPOCHS_TOTAL, 0)),
        progress=float(m.get(keys.PROGRESS, 1.0 if state == "finished" else 0.0)), started=started,
        elapsed_s=max(0.0, end - started), driver_host=tags.get(keys.DRIVER_HOST_TAG, ""),
        heartbeat_age_s=round(heartbeat_age, 1) if heartbeat_age is not None else None,
    )
    if state == "finished":
        st.progress = 1.0
        st.epochs_done = st.epochs_total or st.epochs_done
    elif state == "running" and 0 < st.progress < 1:
        st.eta_s = round(st.elapsed_s * (1 - st.progress) / st.progress, 1)
    metric, mode, _ = sweep_metric_and_mode(parent, None)
    try:
        sel = select(group_trials(list(latest.values())), metric, mode, label_keys=sweep_label_keys(parent))
        st.best = {"label": sel.best.label, "config": sel.best_config, "metric": metric,
                   "mean": sel.best.metric.mean, "n": sel.best.metric.n,
                   "provisional": state != "finished"}
    except SelectionError:
        st.best = None  # nothing finished yet
    if keys.JOB_ID_TAG in tags:
        st.job = {"id": tags[keys.JOB_ID_TAG], "address": tags.get(keys.JOB_ADDRESS_TAG, "")}
        if ask_cluster and st.job["address"]:
            st.job["status"] = job_state(st.job["id"], st.job["address"])
            if st.state == "running" and st.job["status"] in ("STOPPED", "FAILED", "SUCCEEDED"):
                # The job ended without the driver closing its run (killed hard): not running any more.
                st.state, st.trials_running = "interrupted", 0
                st.note = (f"its Ray job is {st.job['status']} but the driver did not close its run; "
                           f"continue with: mixup-sweep submit --resume {name} ...")
    return st


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def format_status(st: SweepStatus) -> str:
    bar_width = 30
    filled = int(round(st.progress * bar_width))
    lines = [
        f"sweep {st.name!r}: {st.state}" + (f" ({st.note})" if st.note else ""),
        f"  progress  [{'#' * filled}{'.' * (bar_width - filled)}] {st.progress:.0%}   "
        f"epochs {st.epochs_done}/{st.epochs_total}",
        f"  trials    {st.trials_finished} finished, {st.trials_running} running, {st.trials_failed} failed, "
        f"{st.trials_pending} pending, of {st.trials_total}",
        f"  time      elapsed {_duration(st.elapsed_s)}" + (f", ETA {_duration(st.eta_s)}" if st.eta_s else ""),
    ]
    if st.best:
        b = st.best
        lines.append(f"  best      {b['label']}: {b['metric']} {b['mean']:.4f} (n={b['n']})"
                     + (" so far" if b["provisional"] else ""))
    if st.job:
        lines.append(f"  ray job   {st.job['id']} at {st.job['address']}: {st.job.get('status', 'not asked')}")
    lines.append(f"  MLflow    sweep run {st.parent_run_id}" + (f"; driver on {st.driver_host}" if st.driver_host else ""))
    return "\n".join(lines)
