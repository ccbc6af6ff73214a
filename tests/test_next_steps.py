"""A completed job's next steps in the Train tab (evaluate it, try it in the Tutor, merge, publish), called as the
buttons call them, on job folders written by the real writers."""

import os

import gradio as gr
import psutil
import pytest

import app
from tests.test_tutor_models import make_job
from trainer import jobs, store
from trainer.config import JobConfig
from trainer.store import State
from tutor.evaluate import EvalConfig


@pytest.fixture
def done(data_root, tiny_model_dir, monkeypatch):
    """A completed training job with its adapter, and a running job held by this test's own process, so that the
    scheduler the evaluate step calls leaves the queued evaluation waiting instead of starting a worker."""
    for name in ("INSTRUCTOR_PASSWORD", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    make_job(data_root, "job-a", tiny_model_dir, seed=1)
    busy = jobs.create_job(JobConfig(max_samples=8), name="busy")
    store.update_status(busy, state=State.RUNNING, pid=os.getpid(), pid_started=psutil.Process().create_time())
    return "job-a"


def test_evaluate_it_queues_a_small_gsm8k_evaluation_of_the_adapter(done):
    note, picker = app.evaluate_next("", done)
    (evaluation,) = [s for s in jobs.list_jobs() if s.get("kind") == "eval"]
    assert evaluation["state"] == State.QUEUED and "Evaluate" in note and evaluation["id"] in note
    assert picker.constructor_args["value"] == evaluation["id"]  # the Evaluate tab shows it
    config = store.read_config(jobs.job_dir(evaluation["id"]), EvalConfig)
    assert (config.adapter, config.benchmark, config.limit) == ("adapter:job-a", "gsm8k", app.NEXT_EVAL_LIMIT)


def test_try_it_in_the_tutor_picks_the_adapter_and_shows_the_tutor(done):
    picker, tabs = app.try_in_tutor("", done)
    assert picker.constructor_args["value"] == "adapter:job-a"
    assert "adapter:job-a" in [value for _, value in picker.constructor_args["choices"]]
    assert tabs.constructor_args["selected"] == "tutor"


def test_merge_and_publish_open_the_publish_tab_with_the_job(done):
    picker, tabs = app.publish_next("", done)
    assert picker.constructor_args["value"] == done and tabs.constructor_args["selected"] == "publish"


def test_next_steps_need_the_instructor_and_a_completed_job(done, data_root, tiny_model_dir, monkeypatch):
    make_job(data_root, "job-b", tiny_model_dir, seed=2, state="cancelled")
    for step in (app.evaluate_next, app.try_in_tutor, app.publish_next):
        with pytest.raises(gr.Error, match="only completed jobs"):
            step("", "job-b")
    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "secret")
    for step in (app.evaluate_next, app.try_in_tutor, app.publish_next):
        with pytest.raises(gr.Error, match="Instructor login needed"):
            step("wrong", done)
    assert [s for s in jobs.list_jobs() if s.get("kind") == "eval"] == []


def test_the_app_wires_the_next_steps_to_the_tabs(done):
    demo = app.build_app()
    tabs = [block for block in demo.blocks.values() if isinstance(block, gr.Tabs)]
    ids = [block.id for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert len(tabs) == 1 and {"tutor", "train", "evaluate", "publish"} <= set(ids)
    labels = {block.value for block in demo.blocks.values() if isinstance(block, gr.Button)}
    assert {"Evaluate it", "Try it in the Tutor", "Merge", "Publish"} <= labels
