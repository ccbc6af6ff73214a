"""The job store: every job is a folder under `<data_root>/jobs/`, and its state lives on disk there.

    config.yaml      the JobConfig            status.json   state, times, pid, reason, step, base model
    progress.jsonl   one line per log step    train.log     the worker's output
    checkpoints/     Trainer checkpoints      adapter/      the PEFT adapter (final or so far)
    metrics.json     summary of a finished run

States: queued -> running -> completed | cancelled | failed; running -> cancelling -> cancelled; a worker that
died without saying so is found by `refresh` and marked interrupted. cancelled, failed and interrupted jobs can
be resumed (queued again, continuing from their last checkpoint). One job trains at a time; the rest wait in order.
"""

import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psutil

from trainer.config import JobConfig
from trainer.paths import inside, jobs_dir

ACTIVE = ("running", "cancelling")
RESUMABLE = ("cancelled", "failed", "interrupted")
NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 100
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class JobError(ValueError):
    """A job action that cannot be done now, with the reason."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def job_dir(job_id: str) -> Path:
    if not ID_RE.match(job_id or ""):
        raise JobError(f"{job_id!r} is not a job id (letters, digits, '.', '_' and '-' only).")
    path = jobs_dir() / job_id
    if not inside(jobs_dir(), path) or not (path / "status.json").exists():
        raise JobError(f"No job {job_id!r} in {jobs_dir()}.")
    return path


@contextmanager
def locked(path: Path):
    """An exclusive advisory lock on `path`, shared between the app, the CLI and the worker processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def read_status(path: Path) -> dict:
    return json.loads((path / "status.json").read_text())


def update_status(path: Path, **changes) -> dict:
    with locked(path / ".lock"):
        status = read_status(path)
        status.update(changes)
        write_json(path / "status.json", status)
        return status


def create_job(config: JobConfig, name: str = "") -> Path:
    """Validate the config and write a queued job's folder. Returns the folder."""
    config.validate()
    if len(name.strip()) > MAX_NAME or CONTROL_RE.search(name):
        raise JobError(f"A job name has at most {MAX_NAME} characters and no control characters (tabs, newlines, "
                       f"escapes); this one has {len(name.strip()):,} characters.")
    slug = NAME_RE.sub("-", name.strip()).strip("-")[:40] or "job"
    job_id = f"{datetime.now():%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"
    path = jobs_dir() / job_id
    path.mkdir(parents=True)
    config.save(path / "config.yaml")
    write_json(path / "status.json", {
        "id": job_id, "name": name.strip() or slug, "state": "queued", "created": now(),
        "started": None, "finished": None, "reason": "", "step": 0, "total_steps": None, "pid": None,
        "base_model": config.base_model,  # for the jobs table, which lists statuses
    })
    return path


def worker_alive(status: dict) -> bool:
    """The recorded worker process still runs (and is the same process, not a reused pid)."""
    pid = status.get("pid")
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - status.get("pid_started", 0)) < 1
    except psutil.Error:
        return False


def refresh(path: Path) -> dict:
    """Read a job's status, marking it interrupted if its worker died without saying so."""
    with locked(path / ".lock"):
        status = read_status(path)
        if status["state"] in ACTIVE and not worker_alive(status):
            status.update(
                state="interrupted", finished=now(),
                reason=f"The worker stopped unexpectedly at step {status.get('step', 0)} (killed, crashed or the "
                "machine restarted). Resume continues from the last checkpoint.",
            )
            write_json(path / "status.json", status)
        return status


def list_jobs() -> list[dict]:
    """Every job on disk, oldest first, with queue places for the waiting ones."""
    statuses = []
    for folder in sorted(jobs_dir().iterdir()):
        try:
            if (folder / "status.json").exists():
                statuses.append(refresh(folder))
        except FileNotFoundError:  # deleted while this listed the others
            continue
    statuses.sort(key=lambda s: (s.get("queued_at") or s["created"]))
    place = 0
    for status in statuses:
        if status["state"] == "queued":
            place += 1
            status["queue_place"] = place
    return statuses


def cancel_job(job_id: str) -> dict:
    path = job_dir(job_id)
    with locked(path / ".lock"):
        status = read_status(path)
        if status["state"] == "queued":
            status.update(state="cancelled", finished=now(), reason="Cancelled before it started.")
        elif status["state"] == "running":
            (path / "CANCEL").touch()  # the worker stops at the next step, saving a checkpoint and the adapter
            status.update(state="cancelling")
        elif status["state"] != "cancelling":
            raise JobError(f"Job {job_id} is {status['state']}: only queued or running jobs can be cancelled.")
        write_json(path / "status.json", status)
        return status


def resume_job(job_id: str) -> dict:
    path = job_dir(job_id)
    refresh(path)
    with locked(path / ".lock"):
        status = read_status(path)
        if status["state"] not in RESUMABLE:
            raise JobError(f"Job {job_id} is {status['state']}: only {', '.join(RESUMABLE)} jobs can be resumed.")
        (path / "CANCEL").unlink(missing_ok=True)
        status.update(state="queued", queued_at=now(), resume=True, reason="", pid=None, finished=None)
        write_json(path / "status.json", status)
        return status


def delete_job(job_id: str) -> None:
    path = job_dir(job_id)
    refresh(path)
    with locked(path / ".lock"):  # the queue cannot start it while it is being deleted
        if read_status(path)["state"] in ACTIVE:
            raise JobError(f"Job {job_id} is still training: cancel it first.")
        shutil.rmtree(path)


def worker_command(path: Path, gpus: int | None = None) -> list[str]:
    """The same command a user would run by hand to train this job in the foreground: with more than one GPU
    visible, through `accelerate launch`, one data-parallel process per GPU."""
    train = ["-m", "trainer", "train", "--config", str(path / "config.yaml"), "--job", path.name]
    if gpus is None:
        import torch  # counts through NVML, without starting CUDA in this process

        gpus = torch.cuda.device_count()
    if gpus > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus), *train]
    return [sys.executable, *train]


def schedule() -> str | None:
    """Start the oldest queued job if nothing is training. Returns the started job's id, if any."""
    with locked(jobs_dir() / ".schedule.lock"):
        jobs = list_jobs()
        if any(s["state"] in ACTIVE or worker_alive(s) for s in jobs):  # a finished worker may still be exiting
            return None
        waiting = [s for s in jobs if s["state"] == "queued"]
        if not waiting:
            return None
        path = jobs_dir() / waiting[0]["id"]
        return path.name if start_worker(path) else None


def start_worker(path: Path) -> bool:
    """Start a queued job's worker, holding the job's lock until it is marked running, so that a cancel or a delete
    at the same moment waits and then sees it running. False when it was cancelled or deleted since it was listed."""
    try:
        with locked(path / ".lock"):
            status = read_status(path)
            if status["state"] != "queued":
                return False
            with open(path / "train.log", "a") as log:
                proc = subprocess.Popen(
                    worker_command(path), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=PROJECT_ROOT, start_new_session=True,  # the worker outlives an app restart
                )
            status.update(state="running", pid=proc.pid, pid_started=psutil.Process(proc.pid).create_time(),
                          started=now(), reason="")
            write_json(path / "status.json", status)
            return True
    except FileNotFoundError:  # the job folder was deleted since it was listed
        return False


def reap() -> None:
    """Collect exited worker children so they do not linger as zombies of the app process."""
    for child in psutil.Process().children():
        if child.status() == psutil.STATUS_ZOMBIE:
            os.waitpid(child.pid, os.WNOHANG)


def read_progress(path: Path) -> list[dict]:
    file = path / "progress.jsonl"
    if not file.exists():
        return []
    rows = []
    for line in file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed worker; the next resume rewrites the file
    return rows


def tail(path: Path, lines: int = 40) -> str:
    file = path / "train.log"
    if not file.exists():
        return ""
    with open(file, "rb") as handle:
        handle.seek(max(0, file.stat().st_size - 64_000))
        return "\n".join(handle.read().decode("utf-8", "replace").splitlines()[-lines:])
