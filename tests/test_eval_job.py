"""Evaluation as a job: queued beside training, run by its own worker process, progress per batch, cancel, resume,
and the report kept with the job and beside the evaluated adapter's job."""

import json
import os
import time

import pytest

from tests.test_tutor_models import make_job
from trainer import jobs, store
from trainer.store import State
from tutor.eval_job import JobProgress, queue_evaluation, run_eval_job, seconds_left
from tutor.evaluate import EvalConfig, EvalError, Estimate, accuracy_interval


@pytest.fixture
def problems_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"What is {a} + {b}?", "answer": f"{a} plus {b}.\n#### {a + b}"} for a, b in
            [(2, 3), (4, 4), (10, 5)]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_wilson_interval_brackets_the_share_and_narrows_with_more_problems():
    low, high = accuracy_interval(24, 1319)  # the embedded model's GSM8K base score
    assert low < 24 / 1319 < high and round(low, 4) == 0.0123 and round(high, 4) == 0.0269
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(10, 10)[1] == 1.0
    assert accuracy_interval(50, 100)[1] - accuracy_interval(50, 100)[0] > \
        accuracy_interval(500, 1000)[1] - accuracy_interval(500, 1000)[0]


def test_an_unknown_adapter_or_benchmark_is_refused_before_it_queues(data_root):
    with pytest.raises(EvalError, match="benchmark"):
        queue_evaluation(EvalConfig(benchmark="gsm9k"))
    with pytest.raises(ValueError, match="No adapter"):
        queue_evaluation(EvalConfig(adapter="no-such-job"))
    assert store.job_folders() == []


def test_the_seconds_left_follow_the_estimate_until_a_problem_is_done_then_the_pace():
    assert seconds_left(0, 4, 0.0, 40.0) == 40.0 and seconds_left(0, 4, 0.0, 40.0, models_after=1) == 80.0
    assert seconds_left(2, 4, 30.0, 40.0) == 30.0  # 15 s a problem so far, 2 to go
    assert seconds_left(2, 4, 30.0, 40.0, models_after=1) == 90.0 and seconds_left(4, 4, 50.0, 40.0) == 0.0


def test_the_first_progress_row_carries_the_estimate_of_both_models(data_root):
    """Before the first batch ends the Evaluate tab can say what the run will take: the row written as generation
    starts holds the estimate (its ETA), for the base and, as long again, the adapter."""
    job = queue_evaluation(EvalConfig(limit=4))
    progress = JobProgress(job, models=2)
    progress.estimated(Estimate(4, 100.0, 10.0, "a warm-up"), "base")
    progress(0, 4, "base")
    (row,) = store.read_progress(job)
    assert row["step"] == 0 and row["total_steps"] == 8 and row["eta_s"] == 80
    assert store.read_status(job)["step"] == 0


def test_the_evaluate_tab_shows_a_running_evaluation_s_eta_before_its_first_batch_ends(data_root):
    import psutil

    import app

    job = queue_evaluation(EvalConfig(limit=4))
    store.update_status(job, state=State.RUNNING, pid=os.getpid(), pid_started=psutil.Process().create_time())
    progress = JobProgress(job, models=1)
    progress.estimated(Estimate(4, 150.0, 10.0, "a warm-up"), "base")
    progress(0, 4, "base")
    facts, bar, *_ = app.evaluation_view(None, job.name, "all")
    assert "`running`" in facts and "step 0 / 4 (0%) · ETA 0:01:00" in bar


@pytest.mark.slow
def test_an_evaluation_job_runs_in_the_queue_and_keeps_its_report(data_root, sharp_model_dir, problems_file):
    trained = make_job(data_root, "job-a", sharp_model_dir, seed=3)
    job = queue_evaluation(EvalConfig(adapter="job-a", data_file=str(problems_file), batch_size=1, max_new_tokens=8))
    assert store.read_status(job)["kind"] == "eval"
    assert jobs.schedule() == job.name  # the same queue as training: its worker is `python -m tutor eval --job`
    deadline = time.monotonic() + 300
    while jobs.refresh(job)["state"] in (State.QUEUED, State.RUNNING) and time.monotonic() < deadline:
        time.sleep(1)
    status = store.read_status(job)
    assert status["state"] == State.COMPLETED, store.tail(job)
    steps = [row["step"] for row in store.read_progress(job)]
    assert steps == sorted(steps) and steps[-1] == 6 and len(steps) >= 6  # a row per batch, base then adapter
    (report,) = store.read_reports(job)
    assert report["summary"]["base"]["total"] == 3 and len(report["summary"]["adapter"]["ci95"]) == 2
    assert [r["benchmark"] for r in store.read_reports(trained)] == ["gsm8k"]  # beside the adapter, for its card


@pytest.mark.slow
def test_a_cancelled_evaluation_stops_between_batches_and_resumes_from_the_start(data_root, sharp_model_dir,
                                                                                 problems_file):
    job = queue_evaluation(EvalConfig(model=str(sharp_model_dir), data_file=str(problems_file), batch_size=1,
                                      max_new_tokens=4))
    store.cancel_flag(job).touch()  # asked before the first batch ends
    assert run_eval_job(job) == 0
    status = store.read_status(job)
    assert status["state"] == State.CANCELLED and "resume" in status["reason"]
    assert store.read_reports(job) == [] and len(store.read_progress(job)) == 1

    jobs.resume_job(job.name)
    assert run_eval_job(job) == 0
    assert store.read_status(job)["state"] == State.COMPLETED
    assert store.read_reports(job)[0]["summary"]["base"]["total"] == 3
