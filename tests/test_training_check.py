"""A speed figure counts only from a run that trains (issue 18): benchmarks/train_throughput.py training_check, used
by every benchmark that trains (train_throughput, data_parallel, gsm8k_sweep)."""

import math
from types import SimpleNamespace

from benchmarks.train_throughput import training_check
from trainer import jobs
from trainer.config import JobConfig
from trainer.store import read_progress
from trainer.train import Diverged, JobCallback

SUMMARY = {"train_runtime": 13.3, "train_loss": 9.1, "epoch": 1.0}  # the Trainer's last entry: no step's loss


def steps(losses, norms):
    return [{"loss": loss, "grad_norm": norm, "learning_rate": 2e-3} for loss, norm in zip(losses, norms)] + [SUMMARY]


def test_a_run_whose_loss_falls_with_finite_gradients_trains():
    check = training_check(steps([12.3, 11.0, 9.7], [40.0, 55.5, 21.0]))
    assert check == {"first_loss": 12.3, "last_loss": 9.7, "max_grad_norm": 55.5, "problems": []}


def test_the_issue_runs_are_refused():
    """As logged on the H200 (results/nan_check-h200.json): the app run's grad norm NaN from the first step and its loss
    0 after it (the loss fell!), and the seed run's loss flat at 11.9 with a NaN grad norm."""
    app = training_check(steps([11.89, 0.0, 0.0], [math.nan] * 3))
    assert app["problems"] == ["a grad norm is not finite, or not logged"]
    assert math.isnan(app["max_grad_norm"])
    seed = training_check(steps([11.89, 11.89, 11.87, 11.91], [math.nan, 1.0, math.nan, 2.0]))
    assert seed["problems"] == ["a grad norm is not finite, or not logged", "the loss did not fall (11.89 to 11.91)"]
    assert math.isnan(seed["max_grad_norm"])


def test_non_finite_losses_missing_norms_and_single_steps_are_refused():
    assert training_check(steps([12.0, math.inf], [1.0, 1.0]))["problems"][0] == "a loss is not finite"
    assert training_check(steps([12.0, 11.0], [1.0, None]))["problems"] == ["a grad norm is not finite, or not logged"]
    assert training_check(steps([12.0], [1.0]))["problems"] == ["1 logged loss(es): too few to see it fall"]
    assert training_check([SUMMARY])["problems"][0] == "0 logged loss(es): too few to see it fall"


def test_the_workers_progress_rows_carry_what_the_check_reads(data_root):
    """data_parallel.py and gsm8k_sweep.py check the job's progress.jsonl, as the worker's callback writes it."""
    path = jobs.create_job(JobConfig(), name="check")
    callback = JobCallback(path)
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=2, epoch=0.0, num_input_tokens_seen=0)
    for loss, norm in [(1.5, 0.9), (1.2, math.nan)]:
        state.global_step += 1
        try:
            callback.on_log(None, state, None, logs={"loss": loss, "grad_norm": norm, "learning_rate": 1e-3})
        except Diverged:  # the worker stops the job at a NaN step, after writing its row
            assert math.isnan(norm)
    check = training_check(read_progress(path))
    assert (check["first_loss"], check["last_loss"]) == (1.5, 1.2)
    assert check["problems"] == ["a grad norm is not finite, or not logged"]
