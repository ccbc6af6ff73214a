"""Training through real worker processes: the CLI, cancel and resume, a killed worker, a failing job."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer import jobs, store
from trainer.config import JobConfig
from trainer.train import last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"trainer {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def wait_until(path, predicate, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        jobs.reap()
        status = jobs.refresh(path)
        if predicate(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"timed out; status {jobs.read_status(path)}\n{jobs.tail(path)}")


def steps(path):
    return [r["step"] for r in jobs.read_progress(path) if r.get("loss") is not None]


def test_cli_trains_the_offline_default_on_the_embedded_model(data_root):
    cli("train", "--preset", "offline-default", "--set", "max_steps=3", "--set", "max_samples=24",
        "--set", "per_device_batch_size=4", "--set", "heldout_problems=3",
        "--set", "eval_fraction=0", "--name", "cli run")
    (job,) = list((data_root / "jobs").iterdir())
    status = jobs.read_status(job)
    assert status["state"] == "completed" and status["step"] == 3
    adapter = job / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and set(config["target_modules"]) == set(JobConfig().target_modules)
    assert load_file(adapter / "adapter_model.safetensors")  # non-empty LoRA weights
    assert (adapter / "tokenizer_config.json").exists() and (adapter / "config.yaml").exists()
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["final_loss"] > 0
    # held-out builtin:basic-math problems scored before (the base) and after (the adapter) by `python -m tutor eval`
    heldout = metrics["heldout"]
    assert heldout["data"] == "builtin:basic-math (test split)" and isinstance(heldout["in_training_data"], int)
    for when in ("before", "after"):
        assert heldout[when]["total"] == 3 and heldout[when]["accuracy"] == heldout[when]["correct"] / 3
    report = store.read_json(store.heldout_report_file(job))  # every reply kept, outside eval/ (the card's benchmarks)
    assert report["data"]["source"] == "builtin:basic-math" and report["summary"]["adapter"]["total"] == 3
    assert not (job / "eval").exists() and jobs.read_status(job)["reason"] == ""
    assert steps(job) == [1, 2, 3]
    listed = cli("list").stdout
    assert job.name in listed and "completed" in listed
    assert "lora_r: 16" in cli("show", job.name).stdout
    assert "only cancelled, failed, interrupted" in cli("resume", job.name, check=False).stderr


def test_cancel_resume_and_a_killed_worker_lose_nothing(data_root, tiny_model_dir):
    config = JobConfig(base_model=str(tiny_model_dir), quantization="none", max_steps=8, save_steps=2,
                       max_samples=64, per_device_batch_size=2, eval_fraction=0)
    path = jobs.create_job(config, name="resilient")
    assert jobs.schedule() == path.name
    wait_until(path, lambda s: s["step"] >= 2)
    jobs.cancel_job(path.name)
    status = wait_until(path, lambda s: s["state"] == "cancelled")
    stopped_at = status["step"]
    assert last_checkpoint(path).name == f"checkpoint-{stopped_at}"  # saved at the step it stopped
    assert (path / "adapter" / "adapter_model.safetensors").exists()  # the adapter so far

    jobs.resume_job(path.name)
    jobs.schedule()
    status = wait_until(path, lambda s: s["state"] == "running" and s["step"] >= stopped_at + 2)
    os.kill(status["pid"], signal.SIGKILL)  # the worker dies mid-training
    status = wait_until(path, lambda s: s["state"] == "interrupted")
    assert "Resume" in status["reason"]
    checkpoint = last_checkpoint(path)
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) >= stopped_at

    jobs.resume_job(path.name)
    jobs.schedule()
    status = wait_until(path, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "completed", status["reason"]
    assert status["step"] == 8
    logged = steps(path)
    assert logged == sorted(logged) and logged[-1] == 8 and len(logged) == len(set(logged))  # one curve, continued
    assert logged[: stopped_at] == list(range(1, stopped_at + 1))


def test_a_failing_job_is_marked_failed_with_the_reason(data_root, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "x", "body": "y"}) + "\n")
    config = JobConfig(base_model=str(tiny_model_dir), quantization="none", dataset=f"file:{bad}", max_steps=2)
    path = jobs.create_job(config)
    jobs.schedule()
    status = wait_until(path, lambda s: s["state"] == "failed")
    assert "title" in status["reason"] and "problem" in status["reason"]  # names the columns found and needed
    assert "Traceback" in jobs.tail(path)  # the log keeps the details


def test_a_step_whose_gradient_is_not_finite_is_skipped_and_three_in_a_row_fail_the_job(tmp_path):
    """One overflowing batch (a GRPO job on an H200: a NaN gradient norm at its last step, between finite ones) leaves
    the weights as they were instead of spreading NaN into every weight through clipping; three in a row fail."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from trainer.train import MAX_SKIPPED_IN_A_ROW, Diverged, JobCallback

    job = tmp_path / "job"
    job.mkdir()
    store.write_status(job, {"id": "job", "state": "running"})
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    callback, args = JobCallback(job), TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    state, control = TrainerState(max_steps=10, global_step=0), TrainerControl()

    def step(grad: float) -> dict:
        model.weight.grad = torch.full_like(model.weight, grad)
        model.bias.grad = torch.full_like(model.bias, 0.1)
        before = model.weight.detach().clone()
        callback.on_pre_optimizer_step(args, state, control, model=model)
        optimizer.step()
        state.global_step += 1
        callback.on_log(args, state, control, logs={"loss": 0.5, "grad_norm": grad, "learning_rate": 0.1})
        return {"moved": not torch.equal(before, model.weight), "finite": bool(torch.isfinite(model.weight).all())}

    assert step(0.2) == {"moved": True, "finite": True}
    assert step(math.nan) == {"moved": False, "finite": True}  # skipped: the weights stay as they were
    assert step(0.2)["moved"]  # the next sound batch trains again and resets the count
    for _ in range(MAX_SKIPPED_IN_A_ROW - 1):
        assert step(math.inf) == {"moved": False, "finite": True}
    with pytest.raises(Diverged, match=f"{MAX_SKIPPED_IN_A_ROW} steps in a row"):
        step(math.nan)
    rows = store.read_progress(job)
    assert [row.get("skipped", False) for row in rows] == [False, True, False] + [True] * MAX_SKIPPED_IN_A_ROW


def test_a_step_whose_gradient_norm_is_nan_fails_the_job_before_its_weights_are_saved(tmp_path):
    """A NaN step (seen in a GRPO job on an H200: the last step's grad norm NaN, then an adapter that wrote nothing)
    is logged, then stops training with the reason; the row before it passes."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from trainer.train import Diverged, JobCallback, explain_failure

    job = tmp_path / "job"
    job.mkdir()
    store.write_status(job, {"id": "job", "state": "running"})
    callback, args = JobCallback(job), TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[])
    state = TrainerState(max_steps=10, global_step=4)
    callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "grad_norm": 0.03, "learning_rate": 1e-4})
    state.global_step = 5
    with pytest.raises(Diverged) as caught:
        callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "grad_norm": float("nan")})
    assert [row["step"] for row in store.read_progress(job)] == [4, 5]
    assert explain_failure(caught.value).startswith("Training diverged at step 5: grad_norm became nan")
