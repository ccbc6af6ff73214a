"""The job store and queue: states on disk, one worker at a time, restart recovery, cancel and resume rules."""

import json
import subprocess
import sys
import time

import pytest

from trainer import jobs
from trainer.config import ConfigError, JobConfig
from trainer.models import EMBEDDED, ModelError, resolve_model


def wait_for(predicate, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def sleepy_worker(monkeypatch):
    """Workers that just sleep, so the queue logic runs with real processes but no training."""
    monkeypatch.setattr(jobs, "worker_command", lambda path, **kwargs: [sys.executable, "-c", "import time; time.sleep(30)"])


def test_create_job_writes_config_and_queued_status(data_root):
    path = jobs.create_job(JobConfig(lora_r=8), name="my job/../x")
    assert path.parent == data_root / "jobs"
    assert "/" not in path.name and ".." not in path.name
    assert JobConfig.load(path / "config.yaml").lora_r == 8
    status = jobs.read_status(path)
    assert status["state"] == "queued" and status["name"] == "my job/../x"
    assert status["base_model"] == JobConfig().base_model  # the jobs table's base model column
    with pytest.raises(ConfigError):
        jobs.create_job(JobConfig(lora_r=0))
    assert len(list((data_root / "jobs").iterdir())) == 1  # nothing written for the refused job


def test_job_ids_cannot_escape_the_store(data_root):
    for bad in ["../etc", "a/b", "", "x;rm -rf"]:
        with pytest.raises(jobs.JobError):
            jobs.job_dir(bad)


def test_queue_runs_one_job_at_a_time_in_order(data_root, sleepy_worker):
    first, second, third = (jobs.create_job(JobConfig(), name=n) for n in ("a", "b", "c"))
    assert jobs.schedule() == first.name
    assert jobs.schedule() is None  # one trains at a time
    listed = {s["id"]: s for s in jobs.list_jobs()}
    assert listed[first.name]["state"] == "running"
    assert (listed[second.name]["queue_place"], listed[third.name]["queue_place"]) == (1, 2)
    jobs.cancel_job(second.name)  # a queued job is cancelled at once
    assert jobs.read_status(second)["state"] == "cancelled"
    subprocess.run(["kill", "-9", str(jobs.read_status(first)["pid"])], check=True)
    assert wait_for(lambda: (jobs.reap(), jobs.refresh(first)["state"])[1] == "interrupted")
    assert "Resume" in jobs.read_status(first)["reason"]
    assert jobs.schedule() == third.name
    os_kill(jobs.read_status(third)["pid"])


def os_kill(pid):
    subprocess.run(["kill", "-9", str(pid)], check=False)


def test_cancel_running_asks_the_worker_and_resume_requeues(data_root, sleepy_worker):
    path = jobs.create_job(JobConfig())
    jobs.schedule()
    assert jobs.cancel_job(path.name)["state"] == "cancelling"
    assert (path / "CANCEL").exists()
    with pytest.raises(jobs.JobError, match="only cancelled, failed, interrupted"):
        jobs.resume_job(path.name)
    with pytest.raises(jobs.JobError, match="cancel it first"):
        jobs.delete_job(path.name)
    os_kill(jobs.read_status(path)["pid"])
    assert wait_for(lambda: (jobs.reap(), jobs.refresh(path)["state"])[1] == "interrupted")
    status = jobs.resume_job(path.name)
    assert status["state"] == "queued" and status["resume"] and not (path / "CANCEL").exists()
    jobs.update_status(path, state="cancelled")
    jobs.delete_job(path.name)
    assert not path.exists()


def test_a_restarted_app_finds_jobs_and_marks_dead_workers_interrupted(data_root):
    path = jobs.create_job(JobConfig())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobs.update_status(path, state="running", pid=dead.pid, pid_started=0, step=7)
    (state,) = [s["state"] for s in jobs.list_jobs()]  # what the app does on start
    assert state == "interrupted"
    assert "step 7" in jobs.read_status(path)["reason"]


def test_progress_reader_skips_a_line_cut_short(data_root):
    path = jobs.create_job(JobConfig())
    (path / "progress.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + '{"step": 2, "lo')
    assert jobs.read_progress(path) == [{"step": 1, "loss": 2.0}]


def test_model_names_resolve_or_explain(data_root, monkeypatch, tmp_path):
    assert (data_root / "models" / "embedded").exists()
    assert resolve_model(EMBEDDED).endswith("smollm2-135m-instruct")
    with pytest.raises(ModelError, match="Unknown embedded model"):
        resolve_model("embedded:gpt-5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="without config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="neither a local folder nor a Hub id"):
        resolve_model("not a model")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like having no network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelError, match="Cannot reach the Hugging Face Hub"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
