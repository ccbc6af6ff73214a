"""What happens to jobs: create, list, cancel, resume, delete, and the queue that starts one worker at a time.

A job is a folder that trainer/store.py owns (its files, its typed State, tolerant reads). States: queued ->
running -> completed | cancelled | failed; running -> cancelling -> cancelled; a worker that died without saying
so is found by `refresh` and marked interrupted. cancelled, failed and interrupted jobs can be resumed (queued again,
continuing from their last checkpoint). A job whose status cannot be read shows as damaged and can only be deleted.
One job trains at a time; the rest wait in order.
"""

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psutil

from trainer.config import JobConfig
from trainer.store import (
    ACTIVE, RESUMABLE, Damaged, JobError, State, cancel_flag, config_file, job_dir, job_folders, job_lock, jobs_dir,
    locked, log_file, now, read_progress, read_status, status_or_damage, tail, update_status, write_status,
)

NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 100
PROJECT_ROOT = Path(__file__).resolve().parents[1]
__all__ = ["JobError", "job_dir", "read_progress", "read_status", "tail", "update_status"]  # for the app and CLI


WORKERS = {"train": "trainer", "eval": "tutor"}  # a job's kind -> the package whose CLI runs it: python -m PKG KIND


def create_job(config: JobConfig, name: str = "", kind: str = "train") -> Path:
    """Validate the config and write a queued job's folder, whole or not at all (a full disk leaves nothing).
    `kind` is what its worker does: train (a JobConfig) or eval (tutor's EvalConfig); both wait in one queue."""
    config.validate()
    if len(name.strip()) > MAX_NAME or CONTROL_RE.search(name):
        raise JobError(f"A job name has at most {MAX_NAME} characters and no control characters (tabs, newlines, "
                       f"escapes); this one has {len(name.strip()):,} characters.")
    slug = NAME_RE.sub("-", name.strip()).strip("-")[:40] or "job"
    job_id = f"{datetime.now():%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"
    path = jobs_dir() / job_id
    tmp = jobs_dir() / f".{job_id}.partial"  # not a job id: never listed
    try:
        tmp.mkdir(parents=True)
        config.save(config_file(tmp))
        write_status(tmp, {
            "id": job_id, "name": name.strip() or slug, "state": State.QUEUED, "created": now(),
            "started": None, "finished": None, "reason": "", "step": 0, "total_steps": None, "pid": None,
            "kind": kind, "base_model": getattr(config, "base_model", ""),  # for the jobs table, which lists statuses
        })
        tmp.rename(path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise JobError(f"Cannot write the job under {jobs_dir()} ({exc.strerror or exc}): free disk space or check "
                       "the data root's permissions, then launch again.") from None
    return path


def worker_alive(status: dict) -> bool:
    """The recorded worker process still runs (and is the same process, not a reused pid)."""
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - status.get("pid_started", 0)) < 1
    except (psutil.Error, TypeError):
        return False


def refresh(path: Path) -> dict:
    """Read a job's status, marking it interrupted if its worker died without saying so; damaged if unreadable."""
    with locked(job_lock(path)):
        status = status_or_damage(path)
        if status["state"] in ACTIVE and not worker_alive(status):
            status.update(
                state=State.INTERRUPTED, finished=now(),
                reason=f"The worker stopped unexpectedly at step {status.get('step', 0)} (killed, crashed or the "
                "machine restarted). Resume continues from the last checkpoint.",
            )
            write_status(path, status)
        return status


def list_jobs() -> list[dict]:
    """Every job on disk, oldest first, with queue places for the waiting ones. A damaged job is listed as damaged."""
    statuses = []
    for folder in job_folders():
        try:
            statuses.append(refresh(folder))
        except FileNotFoundError:  # deleted while this listed the others
            continue
    statuses.sort(key=lambda s: str(s.get("queued_at") or s.get("created") or ""))
    place = 0
    for status in statuses:
        if status["state"] == State.QUEUED:
            place += 1
            status["queue_place"] = place
    return statuses


def cancel_job(job_id: str) -> dict:
    path = job_dir(job_id)
    with locked(job_lock(path)):
        status = read_status(path)
        if status["state"] == State.QUEUED:
            status.update(state=State.CANCELLED, finished=now(), reason="Cancelled before it started.")
        elif status["state"] == State.RUNNING:
            cancel_flag(path).touch()  # the worker stops at the next step, saving a checkpoint and the adapter
            status.update(state=State.CANCELLING, cancel_asked=now())
        elif status["state"] != State.CANCELLING:
            raise JobError(f"Job {job_id} is {status['state']}: only queued or running jobs can be cancelled.")
        write_status(path, status)
        return status


def resume_job(job_id: str) -> dict:
    path = job_dir(job_id)
    refresh(path)
    with locked(job_lock(path)):
        status = read_status(path)
        if status["state"] not in RESUMABLE:
            raise JobError(f"Job {job_id} is {status['state']}: only {', '.join(RESUMABLE)} jobs can be resumed.")
        cancel_flag(path).unlink(missing_ok=True)
        status.update(state=State.QUEUED, queued_at=now(), resume=True, reason="", pid=None, finished=None)
        write_status(path, status)
        return status


def delete_job(job_id: str) -> None:
    """Delete a job that is not training; a damaged one too (that is what can be done with it)."""
    path = job_dir(job_id)
    refresh(path)
    with locked(job_lock(path)):  # the queue cannot start it while it is being deleted
        if status_or_damage(path)["state"] in ACTIVE:
            raise JobError(f"Job {job_id} is still training: cancel it first.")
        shutil.rmtree(path)


def worker_command(path: Path, gpus: int | None = None, kind: str = "train") -> list[str]:
    """The same command a user would run by hand to run this job in the foreground: training with more than one GPU
    visible goes through `accelerate launch`, one data-parallel process per GPU."""
    train = ["-m", WORKERS[kind], kind, "--config", str(config_file(path)), "--job", path.name]
    if kind != "train":
        return [sys.executable, *train]
    if gpus is None:
        import torch  # counts through NVML, without starting CUDA in this process

        gpus = torch.cuda.device_count()
    if gpus > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus), *train]
    return [sys.executable, *train]


def worker_env() -> dict[str, str]:
    """What a child process (a training worker, the answer verifier) is given: this environment without the secrets
    that only the web process uses."""
    return {k: v for k, v in os.environ.items() if k not in ("INSTRUCTOR_PASSWORD", "OAUTH_CLIENT_SECRET")}


def schedule() -> str | None:
    """Start the oldest queued job if nothing is training. Returns the started job's id, if any."""
    with locked(jobs_dir() / ".schedule.lock"):
        jobs = list_jobs()
        if any(s["state"] in ACTIVE or worker_alive(s) for s in jobs):  # a finished worker may still be exiting
            return None
        waiting = [s for s in jobs if s["state"] == State.QUEUED]
        if not waiting:
            return None
        path = jobs_dir() / waiting[0]["id"]
        return path.name if start_worker(path) else None


def start_worker(path: Path) -> bool:
    """Start a queued job's worker, holding the job's lock until it is marked running, so that a cancel or a delete
    at the same moment waits and then sees it running. False when it was cancelled or deleted since it was listed."""
    try:
        with locked(job_lock(path)):
            status = read_status(path)
            if status["state"] != State.QUEUED:
                return False
            with open(log_file(path), "a") as log:
                proc = subprocess.Popen(
                    worker_command(path, kind=status.get("kind", "train")), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=PROJECT_ROOT, start_new_session=True,  # the worker outlives an app restart
                    env=worker_env(),
                )
            status.update(state=State.RUNNING, pid=proc.pid, pid_started=psutil.Process(proc.pid).create_time(),
                          started=now(), reason="")
            write_status(path, status)
            return True
    except (FileNotFoundError, Damaged):  # deleted since it was listed, or damaged meanwhile
        return False


CANCEL_GRACE_S = float(os.environ.get("MATH_STUDIO_CANCEL_GRACE_S", "120"))  # a step, or a checkpoint save


def stop_overdue_cancels(grace_s: float = CANCEL_GRACE_S) -> list[str]:
    """Kill the workers of jobs still cancelling `grace_s` after the cancel (stuck in C code, say), and mark those jobs
    cancelled; resume continues from their last complete checkpoint. Returns their ids. Called by the app's queue."""
    stopped = []
    for status in list_jobs():
        asked = status.get("cancel_asked")
        if status["state"] != State.CANCELLING or not asked or \
                (datetime.now(timezone.utc) - datetime.fromisoformat(asked)).total_seconds() < grace_s:
            continue
        path = jobs_dir() / status["id"]
        with locked(job_lock(path)):
            status = read_status(path)
            if status["state"] != State.CANCELLING:  # it stopped meanwhile
                continue
            if worker_alive(status):
                os.killpg(status["pid"], signal.SIGKILL)  # its own session: accelerate's children go too
            cancel_flag(path).unlink(missing_ok=True)
            status.update(state=State.CANCELLED, finished=now(), pid=None,
                          reason=f"Cancelled: the worker did not stop within {grace_s:.0f} s and was stopped. Resume "
                          "continues from the last checkpoint.")
            write_status(path, status)
        stopped.append(status["id"])
    return stopped


def reap() -> None:
    """Collect exited worker children so they do not linger as zombies of the app process."""
    for child in psutil.Process().children():
        if child.status() == psutil.STATUS_ZOMBIE:
            os.waitpid(child.pid, os.WNOHANG)
