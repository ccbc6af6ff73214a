"""An evaluation as a job: queued with the training jobs (a machine trains or evaluates, in turn), run by its own
worker process (`python -m tutor eval --config FILE --job ID`), progress written per batch, cancellable between
batches, and its report kept in its own folder and beside the adapter's job (for the model card and comparisons).

A cancelled, failed or interrupted evaluation resumed from the queue runs again from the start.
"""

import logging
import os
import time
from pathlib import Path

import psutil

from trainer import jobs, store
from trainer.store import State
from tutor.evaluate import EvalConfig, Estimate, adapter_choice, evaluate, summary_lines, write_report
from tutor.models import base_path, find_adapter

log = logging.getLogger("tutor.eval")


class Cancelled(Exception):
    """The job's cancel flag appeared: stop between two batches."""


def queue_evaluation(config: EvalConfig, name: str = "") -> Path:
    """Check the config and queue the evaluation. Returns the job folder."""
    config.validate()
    if config.adapter:  # an unknown model or adapter is refused now, not in the worker a minute later
        find_adapter(adapter_choice(config.adapter))
    if config.model:
        base_path(config.model)
    return jobs.create_job(config, name=name or f"eval {config.adapter or config.model or 'embedded'}", kind="eval")


class JobProgress:
    """evaluate()'s progress callback: a row per batch in the job's progress with the seconds left (eta_s), its
    status's step, and the cancel check. Steps count problems over every model evaluated (base, then adapter)."""

    def __init__(self, job: Path, models: int):
        self.job, self.models, self.done_before, self.label = job, models, 0, None
        self.estimate_s, self.started = 0.0, time.monotonic()

    def estimated(self, estimate: Estimate, label: str) -> None:
        self.estimate_s = estimate.seconds

    def __call__(self, done: int, total: int, label: str) -> None:
        if label != self.label:
            if self.label is not None:
                self.done_before += total
            self.label, self.started = label, time.monotonic()
        step, steps = self.done_before + done, total * self.models
        models_after = self.models - 1 - self.done_before // total
        eta = seconds_left(done, total, time.monotonic() - self.started, self.estimate_s, models_after)
        store.append_progress(self.job, {"step": step, "total_steps": steps, "model": label, "eta_s": round(eta),
                                         "time": store.now()})
        store.update_status(self.job, step=step, total_steps=steps)
        if store.cancel_flag(self.job).exists():
            raise Cancelled


def seconds_left(done: int, total: int, elapsed_s: float, estimate_s: float, models_after: int = 0) -> float:
    """What is left of an evaluation: of this model's run, by its estimate until a problem is done, then by its pace
    so far; and as long again for each model after it."""
    run_s = elapsed_s * total / done if done else estimate_s
    return max(0.0, run_s - elapsed_s) + models_after * run_s


def run_eval_job(job: Path) -> int:
    """The worker's top level: the one place exceptions are caught. Returns the process exit code."""
    store.update_status(job, state=State.RUNNING, started=store.now(), reason="", pid=os.getpid(),
                        pid_started=psutil.Process().create_time())
    store.write_progress(job, [])
    try:
        config = store.read_config(job, EvalConfig)
        progress = JobProgress(job, 2 if config.adapter else 1)
        report = evaluate(config, progress=progress, estimated=progress.estimated)
        path = write_report(report, store.report_file(job, config.test_set))
        adapter_job = store.job_of_adapter(find_adapter(adapter_choice(config.adapter))) if config.adapter else None
        if adapter_job is not None:
            write_report(report, store.report_file(adapter_job, config.test_set))
    except Cancelled:
        store.cancel_flag(job).unlink(missing_ok=True)
        store.update_status(job, state=State.CANCELLED, finished=store.now(),
                            reason="Cancelled; resume runs the evaluation again from the start.")
        return 0
    except BaseException as exc:  # noqa: BLE001 - recorded as failed with the reason, then the exit code says so
        log.exception("evaluation %s failed", job.name)
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        store.update_status(job, state=State.FAILED, finished=store.now(), reason=reason)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    print("\n".join(summary_lines(report)), f"\nreport: {path}", flush=True)
    store.update_status(job, state=State.COMPLETED, finished=store.now(), resume=False)
    return 0
