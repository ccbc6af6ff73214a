"""benchmarks/peers.py: the chats and configurations it gives the peers, its figures, its wheel folders, and one run of
the app's own path through a worker process on the CPU (the peers themselves need the GPU machine)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from benchmarks import peers
from trainer.config import TUTOR_PROMPT, JobConfig

GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A book costs $12. How much do 2 books cost?", "answer": "2*12=<<2*12=24>>24\n#### 24"},
    {"question": "Sara ran 5 km on Monday and 6 km on Tuesday. How far did she run?", "answer": "5+6=11\n#### 11"},
    {"question": "There are 20 cookies shared by 4 kids. How many does each get?", "answer": "20/4=5\n#### 5"},
]


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in GSM8K))
    return path


def test_every_tool_gets_the_same_tutor_chats(gsm8k_file, tmp_path):
    chats = peers.write_chats(str(gsm8k_file), 3, tmp_path / "data")
    read = peers.read_chats(str(chats))
    assert len(read) == 3
    for messages in read:
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == TUTOR_PROMPT
        assert messages[2]["content"].startswith("<think>") and "\\boxed{" in messages[2]["content"]
        assert "<<" not in messages[2]["content"]  # GSM8K's calculator notes removed, as the app trains
    assert {m[1]["content"] for m in read} <= {row["question"] for row in GSM8K}
    # LLaMA-Factory finds them by name, as a sharegpt dataset whose first turn may be the system prompt
    info = json.loads((tmp_path / "data" / peers.DATASET_INFO).read_text())[peers.DATASET_NAME]
    assert info["file_name"] == peers.CHATS and info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "messages"} and info["tags"]["system_tag"] == "system"


def spec(tmp_path, **changes):
    return {"tool": "llamafactory", "shape": "tiny", "model": "/models/tiny", "folder": str(tmp_path / "run"),
            "chats": str(tmp_path / "data" / "chats.jsonl"), "samples": 2000, "warmup": 2, "seconds": 12, "batch": 0,
            "gpu": True, **peers.shared_settings(), **changes}


def test_llamafactory_runs_its_qlora_recipe_with_the_shared_lora_settings(tmp_path):
    config = peers.llamafactory_config(spec(tmp_path))
    defaults = JobConfig()
    assert config["quantization_bit"] == 4 and config["quantization_method"] == "bitsandbytes"
    assert (config["lora_rank"], config["lora_alpha"], config["lora_target"]) == (defaults.lora_r, defaults.lora_alpha,
                                                                                   "all")
    assert config["cutoff_len"] == defaults.max_seq_length and config["template"] == peers.LLAMAFACTORY_TEMPLATE
    assert config["dataset"] == peers.DATASET_NAME and config["dataset_dir"] == str(tmp_path / "data")
    assert (config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == (1, 8)
    assert config["learning_rate"] == 1e-4 and config["warmup_steps"] == 0 and config["bf16"]
    same_batch = peers.llamafactory_config(spec(tmp_path, batch=16))
    assert (same_batch["per_device_train_batch_size"], same_batch["gradient_accumulation_steps"]) == (16, 1)
    on_cpu = peers.llamafactory_config(spec(tmp_path, gpu=False))
    assert "quantization_bit" not in on_cpu and not on_cpu["bf16"]


def write_rows(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_the_figures_come_from_the_steps_after_warmup(tmp_path):
    rows = []
    for step, (t, tokens, loss) in enumerate([(1.0, 1000, 2.0), (1.5, 2000, 1.9), (2.0, 3000, 1.7), (3.0, 5000, 1.5),
                                              (4.0, 7000, 1.2)], start=1):
        rows += [{"step": step, "t": t, "tokens": tokens, "peak_allocated_gib": 1.0 + step, "peak_reserved_gib": 9.0},
                 {"step": step, "loss": loss, "grad_norm": 0.5 * step}]
    write_rows(tmp_path / "run", rows)
    row = peers.summarize(tmp_path / "run", warmup=2, loss_tokens=3000, params=10**9, tflops=100.0)
    assert row["steps_measured"] == 3 and row["tokens_measured"] == 5000 and row["seconds_measured"] == 2.5
    assert row["tokens_per_s"] == 2000.0
    assert row["mfu"] == pytest.approx(6 * 10**9 * 2000 / 100e12, abs=1e-4)
    assert row["loss_at_tokens"] == {"tokens": 3000, "step": 3, "loss": 1.7}
    assert (row["first_loss"], row["last_loss"], row["max_grad_norm"], row["problems"]) == (2.0, 1.2, 2.5, [])
    assert (row["peak_allocated_gib"], row["peak_reserved_gib"]) == (6.0, 9.0)


def test_a_run_that_does_not_train_is_refused(tmp_path):
    write_rows(tmp_path / "run", [{"step": 1, "t": 1.0, "tokens": 100}, {"step": 1, "loss": 0.0, "grad_norm": None},
                                  {"step": 2, "t": 2.0, "tokens": 200}, {"step": 2, "loss": 0.0, "grad_norm": None}])
    row = peers.summarize(tmp_path / "run", warmup=2, loss_tokens=10**6, params=1, tflops=None)
    assert "tokens_per_s" not in row  # nothing after the warmup steps to time
    assert row["loss_at_tokens"]["step"] is None
    assert any("not finite" in problem for problem in row["problems"])
    assert any("did not fall" in problem for problem in row["problems"])


def fake_wheel(folder, name, version="1.0"):
    """A real (tiny) wheel that pip installs: one module saying its version."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", f"__version__ = '{version}'\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_a_tool_runs_from_its_own_folder_of_wheels_installed_once(tmp_path):
    wheels, carried = tmp_path / "peers", tmp_path / "whl"
    fake_wheel(wheels / "unsloth", "fakeunsloth")
    for name in peers.REUSED["unsloth"]:
        fake_wheel(carried, name, "9.9")
    fake_wheel(carried, "transformers", "9.9")  # not reused: the tool keeps the machine's own (or its folder's)
    site = peers.tool_site("unsloth", wheels, carried, tmp_path / "work")
    assert (site / "fakeunsloth" / "__init__.py").exists()
    assert all((site / name / "__init__.py").exists() for name in peers.REUSED["unsloth"])
    assert not (site / "transformers").exists()
    (wheels / "unsloth" / "fakeunsloth-1.0-py3-none-any.whl").unlink()
    assert peers.tool_site("unsloth", wheels, carried, tmp_path / "work") == site  # once: not installed again
    with pytest.raises(peers.ToolUnavailable, match="llamafactory is not installed here"):
        peers.tool_site("llamafactory", wheels, carried, tmp_path / "work")
    (wheels / "llamafactory").mkdir()
    (wheels / "llamafactory" / "broken-1.0-py3-none-any.whl").write_text("not a zip file")
    with pytest.raises(peers.ToolUnavailable, match="llamafactory's wheels did not install"):
        peers.tool_site("llamafactory", wheels, carried, tmp_path / "work")


def test_a_tool_that_cannot_run_is_a_result_and_resume_runs_it_again(gsm8k_file, embedded_dir, tmp_path):
    out = tmp_path / "peers.json"
    none = str(tmp_path / "none")
    argv = ["--data", str(gsm8k_file), "--tokenizer", str(embedded_dir), "--tools", "unsloth", "llamafactory",
            "--shapes", "embedded", "tiny", "--embedded", str(tmp_path / "nowhere"), "--samples", "4",
            "--wheels", none, "--carried", none, "--work", str(tmp_path / "work"), "--out", str(out)]
    assert peers.main(argv) == 0  # errors are results; only a run that trains badly fails the benchmark
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [(row["tool"], row["shape"]) for row in runs] == [("unsloth", "embedded"), ("llamafactory", "embedded"),
                                                             ("unsloth", "tiny"), ("llamafactory", "tiny")]
    assert all(row["error"].startswith("ModelError") and "nowhere" in row["error"] for row in runs[:2])
    assert all("is not installed here: no wheels at" in row["error"] for row in runs[2:])
    assert result["shared"] == peers.shared_settings() and result["settings"]["samples"] == 4
    assert peers.main([*argv, "--resume"]) == 0
    assert len(json.loads(out.read_text())["runs"]) == 4  # rows with an error are run again, not kept beside


def test_a_worker_imports_nothing_before_its_tool_and_records_why_it_failed(tmp_path):
    """Unsloth patches transformers, TRL and PEFT as they are imported: the worker must not import them first. Here
    the tool is missing, which the worker records as the run's error."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps(spec(tmp_path, tool="unsloth", folder=str(folder))))
    run = subprocess.run([sys.executable, peers.__file__, "--worker", str(folder / "spec.json")], cwd=folder,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "empty")), capture_output=True, text=True)
    assert run.returncode == 1
    result = json.loads((folder / "result.json").read_text())
    assert result["error"].startswith("ModuleNotFoundError") and "unsloth" in result["error"]
    assert result["versions"]["transformers"] is None and result["versions"]["torch"] is None


@pytest.mark.slow
def test_the_apps_path_trains_in_a_worker_process_on_the_cpu(gsm8k_file, embedded_dir, tmp_path):
    out = tmp_path / "peers.json"
    code = peers.main(["--data", str(gsm8k_file), "--tokenizer", str(embedded_dir), "--tools", "app", "--shapes",
                       "tiny", "--samples", "4", "--warmup", "1", "--seconds", "0", "--loss-tokens", "500",
                       "--work", str(tmp_path / "work"), "--out", str(out)])
    row = json.loads(out.read_text())["runs"][0]
    assert code == 0, row
    assert "error" not in row and row["problems"] == []
    assert row["tokens_per_s"] > 0 and row["steps_measured"] >= 3
    assert row["last_loss"] < row["first_loss"]
    assert row["loss_at_tokens"]["step"] is not None
    defaults = JobConfig()
    assert row["recipe"]["per_device_train_batch_size"] == defaults.per_device_batch_size
    assert (row["recipe"]["lora_r"], row["recipe"]["lora_alpha"]) == (defaults.lora_r, defaults.lora_alpha)
    assert row["recipe"]["target_modules"] == sorted(defaults.target_modules)
    assert row["versions"]["transformers"] and row["load_s"] > 0
    # the worker counted every token of the padding-free rows it trained on: 4 chats per step, each step the same
    steps = [json.loads(line) for line in (tmp_path / "work/runs/app-tiny/rows.jsonl").read_text().splitlines()]
    tokens = [r["tokens"] for r in steps if "t" in r]
    assert tokens[1] - tokens[0] == tokens[0] > 4 * 50
