"""Reliability, round two (issue 11): no student can stall the class. Against the real app with an instructor password
and a data root outside /tmp and the working folder (as the default ~/.local/share one is), and against real worker
processes: history bounded in turns, evaluation reports served, publish from a fresh client, launch checks, wrong
passwords slowed, cancel before the first step, a worker that does not stop killed, workers without the password."""

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

import app
from tests.browser import app_env, app_server
from tests.conftest import needs_shared_data
from tests.test_bad_input import PASSWORD, World, form, make_earlier_job
from trainer import jobs
from trainer.config import JobConfig
from trainer.store import write_json

COMPLETED = "20250101-120000-earlier-ab12"  # make_earlier_job's id
CANCELLED = "20250102-120000-cancelled-cd34"
EMBEDDED = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(embedded_dir, tiny_model_dir):
    root = Path.home() / f".math-studio-test-{uuid.uuid4().hex[:8]}" / "studio"  # outside /tmp and the repository
    (root / "models" / "embedded").mkdir(parents=True)
    (root / "models" / "embedded" / embedded_dir.name).symlink_to(embedded_dir)
    make_earlier_job(root, str(tiny_model_dir))
    cancelled = root / "jobs" / CANCELLED
    shutil.copytree(root / "jobs" / COMPLETED, cancelled)
    write_json(cancelled / "status.json", {"id": CANCELLED, "name": "cancelled", "state": "cancelled", "step": 1,
                                           "total_steps": 2, "created": "2025-01-02T12:00:00+00:00", "reason": ""})
    log = root.parent / "app.log"
    try:
        with app_server(app_env(MATH_STUDIO_HOME=str(root), INSTRUCTOR_PASSWORD=PASSWORD), log) as url:
            yield url, root, log
    finally:
        print(log.read_text()[-6000:] if log.exists() else "")  # shown when a test of this module fails
        shutil.rmtree(root.parent, ignore_errors=True)


def client_of(url):
    from gradio_client import Client

    return Client(url, verbose=False)


@pytest.mark.slow
def test_history_is_bounded_in_turns_too(server):
    """1,500 empty exchanges cost no characters and took 101.7 s in the server; at most 400 messages are taken."""
    from gradio_client.exceptions import AppError

    client = client_of(server[0])
    empty = [{"role": role, "content": ""} for _ in range(201) for role in ("user", "assistant")]
    with pytest.raises(AppError, match="too long to go on"):
        client.predict("What is 2 + 2?", empty, EMBEDDED, 0, 0.9, 4, "", False, api_name="/chat")
    reply = client.predict("What is 2 + 2?", empty[:400], EMBEDDED, 0, 0.9, 4, "", False, api_name="/chat")
    assert isinstance(reply, str) and reply


@pytest.mark.slow
def test_publish_works_from_a_fresh_client_and_only_for_completed_jobs(server):
    """A fresh API client had no choices: "Value ... is not in the list of choices: []"."""
    from gradio_client.exceptions import AppError

    card = client_of(server[0]).predict(PASSWORD, COMPLETED, "me/tutor", False, api_name="/publish_card")
    assert "me/tutor" in card and "list of choices" not in card
    with pytest.raises(AppError, match="is cancelled: only completed jobs"):
        client_of(server[0]).predict(PASSWORD, CANCELLED, "", api_name="/publish_merge")
    with pytest.raises(AppError, match="No job"):
        client_of(server[0]).predict(PASSWORD, "20990101-000000-none-0000", "me/x", True, False, "",
                                     api_name="/publish_push")
    choices = [value for _, value in client_of(server[0]).predict(PASSWORD, None, api_name="/publish_jobs")["choices"]]
    assert choices == [COMPLETED]  # the cancelled job's partial adapter is not offered


@pytest.mark.slow
@needs_shared_data()
def test_evaluation_report_is_served_with_a_data_root_outside_tmp(server):
    """Gradio serves files from the working folder and the temp folder only: the report (under the data root) made
    the whole benchmark end in InvalidPathError. Its view is asked for by a fresh client, which has no choices."""
    url, root, _ = server
    job = client_of(url).predict(PASSWORD, "", "", "gsm8k", "", 1, 1, 8, api_name="/evaluate")["value"]
    end = time.time() + 900
    while time.time() < end:
        summary, _, _, _, report = client_of(url).predict(PASSWORD, job, "all", api_name="/evaluation")
        if report or "failed" in summary:
            break
        time.sleep(3)
    assert report, summary
    assert json.loads(Path(report).read_text())["summary"]  # the downloaded report
    assert list(root.rglob("gsm8k-*.json"))  # and the one kept under the data root


@pytest.mark.slow
def test_impossible_jobs_are_refused_at_launch(server, tiny_model_dir):
    from gradio_client.exceptions import AppError

    url, root, _ = server
    values = dict(zip([f.name for f in app.CONFIG_FIELDS], form(World(root, root, str(tiny_model_dir)))))
    for changes, message in [({"max_samples": 10**9}, "max_samples = 1000000000 is not possible"),
                             ({"dataset": "builtin:basic-math*1000000000"}, "positive whole number up to 1,000,000"),
                             ({"seed": -1}, "seed = -1 is not possible"),
                             ({"dataset": "file:/etc/passwd"}, "extension the trainer cannot read"),
                             ({"dataset": "hub:../.."}, "is not a Hub dataset id")]:
        with pytest.raises(AppError, match=message):
            client_of(url).predict(PASSWORD, "bad", *{**values, **changes}.values(), api_name="/launch_job")
    assert not [p.name for p in (root / "jobs").iterdir() if "-bad-" in p.name]  # no folder for any


@pytest.mark.slow
def test_wrong_passwords_are_slowed_down_and_logged_in_one_line(server):
    """23 guesses a second, each with 1.9 KB of traceback in the log, before."""
    from gradio_client.exceptions import AppError

    url, _, log = server
    client = client_of(url)
    for guess in range(app.PASSWORD_TRIES):
        with pytest.raises(AppError, match="Instructor login needed"):
            client.predict(f"guess-{guess}", None, api_name="/publish_jobs")
    with pytest.raises(AppError, match="too many wrong passwords"):  # now even the right one waits
        client.predict(PASSWORD, None, api_name="/publish_jobs")
    text = log.read_text()
    assert text.count("wrong instructor password from 127.0.0.1") == app.PASSWORD_TRIES
    assert "Traceback" not in text
    time.sleep(1.5)  # the first wait is 1 s
    assert client.predict(PASSWORD, None, api_name="/publish_jobs")["choices"]


def test_an_eta_beyond_a_day_does_not_wrap():
    shown = app.progress_html({"state": "running", "step": 1, "total_steps": 10**12}, {"eta_s": 90_061.0})
    assert "ETA 1 d 1:01:01" in shown
    assert app.duration_text(3_725) == "1:02:05"


# ---------------------------------------------------------------- workers

def test_preview_reads_a_bounded_number_of_examples(data_root, tiny_model_dir):
    from transformers import AutoTokenizer

    from trainer.data import PREVIEW_LIMIT, preview

    config = JobConfig(base_model=str(tiny_model_dir), max_samples=1_000_000)
    result = preview(config, AutoTokenizer.from_pretrained(tiny_model_dir))  # in the web process: 2,000, not 10**6
    assert result["count"] == len(result["lengths"]) == PREVIEW_LIMIT


@pytest.mark.slow
def test_cancel_stops_a_worker_still_preparing_its_data(data_root, tiny_model_dir, monkeypatch):
    """A million generated examples: cancel used to wait for all of them (and their tokenizing) and the first step."""
    monkeypatch.setenv("INSTRUCTOR_PASSWORD", PASSWORD)
    path = jobs.create_job(JobConfig(base_model=str(tiny_model_dir), quantization="none", max_samples=1_000_000,
                                     per_device_batch_size=2, max_steps=2))
    assert jobs.schedule() == path.name
    status = jobs.refresh(path)
    try:
        assert "INSTRUCTOR_PASSWORD" not in psutil.Process(status["pid"]).environ()  # only what it needs
        while jobs.refresh(path)["state"] == "running" and not jobs.read_status(path).get("device"):
            time.sleep(0.2)  # the worker has started (it records its device first)
        jobs.cancel_job(path.name)
        end = time.time() + 300
        while jobs.refresh(path)["state"] == "cancelling" and time.time() < end:
            time.sleep(0.5)
        status = jobs.read_status(path)
        assert status["state"] == "cancelled" and "before the first step" in status["reason"], (status, jobs.tail(path))
        assert status.get("step", 0) == 0
    finally:
        if psutil.pid_exists(status["pid"]):
            psutil.Process(status["pid"]).kill()


def test_a_cancel_while_preparing_survives_code_that_swallows_one_interrupt(data_root, monkeypatch):
    """Library code with a bare `except:` can eat the interrupt: the watcher interrupts again until preparing stops."""
    from trainer import train
    from trainer.store import cancel_flag

    monkeypatch.setattr(train, "REINTERRUPT_S", 0.5)
    path = jobs.create_job(JobConfig())
    cancel_flag(path).touch()
    swallowed = 0
    with pytest.raises(train.CancelledWhilePreparing):
        with train.cancellable(path):
            end = time.time() + 60
            while time.time() < end:
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    if swallowed:
                        raise
                    swallowed += 1  # the first one is eaten, as a bare `except:` would
    assert swallowed == 1


def test_a_worker_that_does_not_stop_is_killed_after_the_grace_period(data_root):
    path = jobs.create_job(JobConfig())
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        jobs.update_status(path, state="running", pid=stuck.pid, pid_started=psutil.Process(stuck.pid).create_time())
        jobs.cancel_job(path.name)
        assert jobs.stop_overdue_cancels(grace_s=3600) == []  # within the grace period: left alone
        assert jobs.stop_overdue_cancels(grace_s=0) == [path.name]
        assert stuck.wait(30) == -9
        status = jobs.refresh(path)
        assert status["state"] == "cancelled" and "did not stop" in status["reason"]
        jobs.delete_job(path.name)  # Delete works again
    finally:
        stuck.kill()
