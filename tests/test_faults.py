"""Faults survived, against the real app and worker processes on the tiny model: the app SIGKILLed while a job
trains and started again, the machine "restarting" with a checkpoint half written, the disk filling up while a
checkpoint is saved (a real, small tmpfs), out of memory in chat, and two API clients acting on the same jobs."""

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

import app
from tests.browser import app_env, app_process
from tests.test_access import call_by_index
from trainer import jobs
from trainer.config import JobConfig
from trainer.train import last_checkpoint

pytestmark = pytest.mark.slow


def form_values(tiny: Path, **changes) -> list:
    """The Train form's values, in order, for a short job on the tiny model."""
    config = {**JobConfig(base_model=str(tiny), quantization="none", max_samples=32, per_device_batch_size=2,
                          eval_fraction=0, save_steps=2, max_steps=12).to_dict(), **changes}
    return [", ".join(v) if isinstance(v, list) else v for v in (config[f.name] for f in app.CONFIG_FIELDS)]


def wait_until(path: Path, predicate, timeout=600) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        status = jobs.refresh(path)
        if predicate(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"timed out; status {jobs.read_status(path)}\n{jobs.tail(path)}")


def logged_steps(path: Path) -> list[int]:
    return [r["step"] for r in jobs.read_progress(path) if r.get("loss") is not None]


def workers_of(root: Path) -> list[psutil.Process]:
    """Live training workers of jobs under `root` (zombies excluded)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "--job" in cmdline and any(str(root) in a for a in cmdline):
            found.append(proc)
    return found


def wait_dead(proc: psutil.Process, timeout=60) -> None:
    """Until `proc` is gone or a zombie (its parent, the killed app, can no longer collect it)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {proc.pid} still runs")


@pytest.fixture
def no_stray_workers(data_root):
    """At the end, stop any worker left running by this test's jobs (under data_root, or a root the test adds):
    the app starts them in their own session, so nothing else would."""
    roots = [data_root]
    yield roots
    for root in roots:
        for proc in workers_of(root):
            proc.kill()


STEP = app.JOB_COLUMNS.index("step")


def table_rows(url: str) -> list[list]:
    """The jobs table as the page gets it (the handler is off the public API, so called as the page calls it)."""
    message = call_by_index(url, "/refresh_jobs", ["", None])
    assert message["success"], message
    return message["output"]["data"][0]["data"]


# ---------------------------------------------------------------- restarts and a half-written checkpoint

def test_app_killed_while_training_then_the_machine_restarts_mid_checkpoint(data_root, tiny_model_dir, tmp_path,
                                                                           no_stray_workers):
    from gradio_client import Client

    env = app_env(MATH_STUDIO_HOME=str(data_root))
    with app_process(env, tmp_path / "app1.log") as (first_app, url):
        launched = Client(url, verbose=False).predict("", "survivor", *form_values(tiny_model_dir),
                                                      api_name="/launch_job")
        path = data_root / "jobs" / launched["value"]
        status = wait_until(path, lambda s: s["state"] == "running" and s["step"] >= 2)
        first_app.kill()  # SIGKILL: no cleanup at all
        first_app.wait()
    worker = psutil.Process(status["pid"])
    killed_at = jobs.read_status(path)["step"]
    wait_until(path, lambda s: s["step"] > killed_at)  # the worker trains on without the app
    worker.suspend()  # held still while the app starts again, so that it cannot finish meanwhile

    with app_process(env, tmp_path / "app2.log") as (second_app, url):
        (row,) = [r for r in table_rows(url) if r[0] == path.name]
        assert row[2] == "running"  # still listed, still training: its worker is alive
        worker.resume()
        seen = int(row[STEP].split("/")[0])
        end = time.time() + 300
        while int([r for r in table_rows(url) if r[0] == path.name][0][STEP].split("/")[0]) <= seen:
            assert time.time() < end, "no progress shown after the restart"
            time.sleep(0.5)
        # Now the machine "restarts": the app and the worker die at once, the worker in the middle of writing
        # checkpoints (as a kill during save leaves them: one without its state file, one with it cut short).
        worker.kill()
        second_app.kill()
        second_app.wait()
    wait_dead(worker)
    good = last_checkpoint(path)
    assert good is not None
    n = int(good.name.split("-")[1])
    partial = [path / "checkpoints" / f"checkpoint-{n + 1}", path / "checkpoints" / f"checkpoint-{n + 3}"]
    for folder in partial:
        shutil.copytree(good, folder)
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (partial[0] / "trainer_state.json").unlink()
    state = (partial[1] / "trainer_state.json").read_text()
    (partial[1] / "trainer_state.json").write_text(state[: len(state) // 2])
    assert last_checkpoint(path) == good  # a checkpoint whose writing was cut short is never the one resumed

    with app_process(env, tmp_path / "app3.log") as (_, url):
        (row,) = [r for r in table_rows(url) if r[0] == path.name]
        assert row[2] == "interrupted"
        Client(url, verbose=False).predict("", path.name, api_name="/job_action_1")  # Resume
        status = wait_until(path, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "completed", status["reason"]
    assert f"resuming from checkpoint-{n}" in (path / "train.log").read_text()
    assert not any(folder.exists() for folder in partial)  # cut-short checkpoints are cleared on resume
    assert logged_steps(path) == list(range(1, 13))  # one curve: nothing lost, nothing twice
    assert (path / "adapter" / "adapter_model.safetensors").exists()


# ---------------------------------------------------------------- the disk fills up while a checkpoint is saved

@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs, mounted for this test (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all free space on `disk` but `leave` bytes."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def test_disk_full_while_saving_a_checkpoint(small_disk, tiny_model_dir, monkeypatch, no_stray_workers):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(small_disk / "studio"))
    no_stray_workers.append(small_disk)
    path = jobs.create_job(JobConfig(base_model=str(tiny_model_dir), quantization="none", max_samples=32,
                                     per_device_batch_size=2, eval_fraction=0, save_steps=3, max_steps=9),
                           name="full disk")
    jobs.schedule()
    status = wait_until(path, lambda s: last_checkpoint(path) is not None or s["state"] != "running")
    assert status["state"] == "running", status
    worker = psutil.Process(status["pid"])
    worker.suspend()  # still before the next checkpoint: fill the disk now
    assert last_checkpoint(path).name == "checkpoint-3"
    filler = fill(small_disk, leave=512 << 10)  # room for a few status and progress lines, not for a checkpoint
    worker.resume()
    status = wait_until(path, lambda s: s["state"] not in ("running", "cancelling"))
    assert status["state"] == "failed"
    assert "The disk is full" in status["reason"] and "then resume" in status["reason"]
    assert last_checkpoint(path).name == "checkpoint-3"  # the last good one...
    assert [c.name for c in (path / "checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]  # ...and no half one
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, path / "checkpoints" / "checkpoint-3")  # the last good checkpoint loads
    assert json.loads((path / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3

    filler.unlink()  # space freed: resume continues from checkpoint-3
    jobs.resume_job(path.name)
    jobs.schedule()
    status = wait_until(path, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "completed", status["reason"]
    assert logged_steps(path) == list(range(1, 10))
    assert "resuming from checkpoint-3" in (path / "train.log").read_text()


# ---------------------------------------------------------------- out of memory in chat

@pytest.mark.parametrize("error", [
    "CUDA out of memory. Tried to allocate 20.00 GiB",
    "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 GB",
])
def test_out_of_memory_in_chat_is_a_message_and_the_next_question_works(error, tiny_model_dir, data_root,
                                                                        monkeypatch):
    import gradio as gr
    import torch

    from tutor.models import clear_cache, load_model

    monkeypatch.delenv("INSTRUCTOR_PASSWORD", raising=False)
    clear_cache()
    loaded = load_model(str(tiny_model_dir))
    kind = torch.OutOfMemoryError if error.startswith("CUDA") else RuntimeError

    def out_of_memory(**kwargs):
        raise kind(error)

    args = ([], str(tiny_model_dir), 0, 0.9, 4, "", False)
    with monkeypatch.context() as patch:
        patch.setattr(loaded.base.model, "generate", out_of_memory)
        with pytest.raises(gr.Error, match="ran out of memory for this reply: lower max new tokens"):
            list(app.chat("What is 2 + 2?", *args))
    assert not [t for t in threading.enumerate() if t.name == "stream_reply"]  # no generation left hanging
    assert list(app.chat("What is 2 + 2?", *args))  # the same model answers the next question
    def broken(**kwargs):
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:  # an error that is not about memory is not dressed up as one
        patch.setattr(loaded.base.model, "generate", broken)
        with pytest.raises(RuntimeError, match="boom"):
            list(app.chat("What is 2 + 2?", *args))
    clear_cache()


def test_out_of_memory_in_training_names_what_to_change():
    from trainer.train import explain_failure

    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    for exc in [cpu, MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")]:
        assert "Lower per_device_batch_size" in explain_failure(exc)
    full = Exception("No space left on device (os error 28)")  # what the tokenizers library raises
    assert "The disk is full" in explain_failure(full)
    torch_save = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert "The disk is full" in explain_failure(torch_save, free_bytes=0)
    assert "The disk is full" not in explain_failure(torch_save, free_bytes=10 << 30)


# ---------------------------------------------------------------- two API clients at once

class WorkerWatch:
    """Samples the live training workers under a data root every 0.1 s; remembers the most seen at once."""

    def __init__(self, root: Path):
        self.root, self.most, self.stop = root, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.1):
            self.most = max(self.most, len(workers_of(self.root)))

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.most


def at_once(*calls) -> list:
    """Run the calls in threads released together; each result, or the exception it raised."""
    start, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, call):
        start.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def test_a_late_monitor_tick_leaves_a_new_pick_alone(data_root, monkeypatch):
    """The monitor ticks every 2 s with the pick the page had when it sent. A tick sent just before a launch (no pick
    yet) can answer after the launch has picked the new job: it must not set the pick back, or the monitor would say
    "Pick a job" for good while the job runs."""
    import gradio as gr

    monkeypatch.delenv("INSTRUCTOR_PASSWORD", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    _, picker, *monitor = app.refresh_jobs("", None)
    assert "value" not in picker.constructor_args  # the choices only: the page keeps its pick
    assert monitor == [gr.skip()] * app.MONITOR_SIZE  # and its monitor
    _, picker, facts, progress, *_ = app.refresh_jobs("", "20260101-000000-deleted")  # a pick deleted meanwhile
    assert picker.constructor_args["value"] is None and facts == "Pick a job to monitor." and progress == ""


def test_two_clients_on_the_same_jobs(data_root, tiny_model_dir, tmp_path, no_stray_workers):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    watch = WorkerWatch(data_root)
    with app_process(app_env(MATH_STUDIO_HOME=str(data_root)), tmp_path / "app.log") as (_, url):
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        values = form_values(tiny_model_dir, max_steps=6)
        launched = at_once(lambda: alice.predict("", "alice", *values, api_name="/launch_job"),
                           lambda: bob.predict("", "bob", *values, api_name="/launch_job"))
        first, second = (data_root / "jobs" / r["value"] for r in launched)
        states = {path: jobs.refresh(path)["state"] for path in (first, second)}
        assert sorted(states.values()) == ["queued", "running"], states  # one trains at a time
        running, waiting = (first, second) if states[first] == "running" else (second, first)
        wait_until(running, lambda s: s["state"] == "running" and s["step"] >= 1)

        # Cancel and resume at the same moment: resuming a running job is refused, the cancel goes through.
        cancelled, resumed = at_once(lambda: alice.predict("", running.name, api_name="/job_action"),
                                     lambda: bob.predict("", running.name, api_name="/job_action_1"))
        assert not isinstance(cancelled, Exception), cancelled
        assert isinstance(resumed, AppError) and "can be resumed" in str(resumed)
        assert wait_until(running, lambda s: s["state"] not in ("running", "cancelling"))["state"] == "cancelled"

        # The waiting job starts; two resumes of the cancelled one at once: one queues it, the other is refused.
        wait_until(waiting, lambda s: s["state"] == "running")
        results = at_once(lambda: alice.predict("", running.name, api_name="/job_action_1"),
                          lambda: bob.predict("", running.name, api_name="/job_action_1"))
        assert sorted(isinstance(r, AppError) for r in results) == [False, True], results
        assert "is queued" in str(next(r for r in results if isinstance(r, AppError)))
        for path in (waiting, running):
            status = wait_until(path, lambda s: s["state"] in ("completed", "failed", "cancelled"))
            assert status["state"] == "completed", status["reason"]
            assert logged_steps(path) == list(range(1, 7))
    assert watch.close() == 1  # never two workers at once, never one started twice
