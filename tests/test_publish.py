"""Merge, model card, push and Space deploy, against a local stand-in for the Hub API (tests/hub_standin.py)."""

import argparse
import dataclasses
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, SpaceCard
from huggingface_hub.repocard import metadata_load

from tests.hub_standin import HubStandin
from trainer.config import JobConfig
from trainer.store import update_status, write_json
from trainer.publish import (
    PublishError, add_merge_args, add_push_args, base_hub_id, check_name, hub_datasets, list_merged, main_merge,
    main_push, merge_job, model_card, push_job,
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKEtoken123SecretValue987"
JOB_ID = "20250101-120000-tiny-ab12"
EVAL = {  # as tutor/evaluate.py writes it (fewer keys)
    "benchmark": "gsm8k", "data": {"source": "shared/data/gsm8k/test.jsonl", "problems": 50},
    "protocol": {"shots": 0, "decoding": "greedy (do_sample=False, num_beams=1)", "max_new_tokens": 384,
                 "device": "cpu (torch.float32)"},
    "summary": {"base": {"model": "base", "accuracy": 0.12, "correct": 6, "total": 50},
                "adapter": {"model": "adapter", "accuracy": 0.2, "correct": 10, "total": 50}},
}


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny base whose B matrices are random, so it really changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                             task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def make_job(root: Path, base_model: str, adapter: Path | None, state: str = "completed") -> Path:
    """A finished job's folder as the trainer leaves it."""
    path = root / "jobs" / JOB_ID
    path.mkdir(parents=True)
    config = JobConfig(base_model=base_model, dataset="hub:openai/gsm8k:main*200+builtin:basic-math", max_samples=200,
                       quantization="4bit", lora_r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                       max_steps=6)
    config.save(path / "config.yaml")
    write_json(path / "status.json", {
        "id": JOB_ID, "name": "tiny", "state": state, "created": "2025-01-01T12:00:00+00:00",
        "started": "2025-01-01T12:00:01+00:00", "finished": "2025-01-01T12:01:17+00:00", "reason": "",
        "step": 6, "total_steps": 6, "device": "CPU (2 cores)",
    })
    rows = [{"step": s, "total_steps": 6, "loss": 2.5 - 0.2 * s, "eval_loss": 2.4 - 0.2 * s if s % 3 == 0 else None,
             "learning_rate": 2e-4} for s in range(1, 7)]
    (path / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(path / "metrics.json", {
        "train_runtime_s": 76.4, "final_loss": 1.3, "first_loss": 2.3, "train_tokens": 12345, "steps": 6,
        "hardware": "CPU (2 cores)", "base_model": base_model, "dataset": config.dataset, "train_examples": 190,
    })
    (path / "eval").mkdir()
    write_json(path / "eval" / "gsm8k-20250101-115000.json", {**EVAL, "summary": {"base": EVAL["summary"]["base"]}})
    write_json(path / "eval" / "gsm8k-20250101-121000.json", EVAL)  # the latest report per benchmark counts
    if adapter is not None:
        shutil.copytree(adapter, path / "adapter")
        config.save(path / "adapter" / "config.yaml")
    return path


@pytest.fixture
def job(data_root, tiny_model_dir, tiny_adapter) -> Path:
    return make_job(data_root, str(tiny_model_dir), tiny_adapter)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the stand-in is local
    with HubStandin(user="alice", token=TOKEN) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)  # what push_job and deploy read, at call time
        # As if HF_ENDPOINT had been set before huggingface_hub was imported: a few of its paths (create_repo on
        # a repo it may not create) build URLs from this import-time constant instead of HfApi(endpoint=...).
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", standin.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield standin


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- pure helpers

def test_names_are_checked():
    for bad in ["../escape", "a/b", "a b", "x;rm -rf", "$(id)", ".", "..", ".hidden", "-flag", ""]:
        with pytest.raises(PublishError, match="not a usable name"):
            check_name(bad)
    assert check_name("gsm8k-tutor_v1.0") == "gsm8k-tutor_v1.0"


def test_dataset_and_base_metadata():
    assert hub_datasets("hub:openai/gsm8k:main*3000+hub:AI-MO/NuminaMath-CoT*5000+builtin:basic-math") == [
        "openai/gsm8k", "AI-MO/NuminaMath-CoT"]
    assert hub_datasets("builtin:basic-math") == []
    assert base_hub_id("embedded:smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_hub_id("google/gemma-3-4b-it") == "google/gemma-3-4b-it"


# ---------------------------------------------------------------- model card

def test_adapter_card_has_metadata_and_everything_known(data_root):
    path = make_job(data_root, "embedded:smollm2-135m-instruct", adapter=None)
    text = model_card(path, merged=False, repo_id="alice/tutor")
    (data_root / "README.md").write_text(text)
    card = ModelCard.load(data_root / "README.md")  # the header read back as the Hub reads it
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["openai/gsm8k"]
    assert {"math", "lora", "qlora", "transformers", "base_model:adapter:HuggingFaceTB/SmolLM2-135M-Instruct"} <= \
        set(card.data.tags)
    (result,) = card.data.eval_results  # the latest gsm8k report; the fine-tuned model's accuracy, not the base's
    assert (card.data.model_name, result.dataset_type, result.metric_type, result.metric_value) == (
        "tutor", "gsm8k", "accuracy", 0.2)
    assert result.task_type == "text-generation" and "50 problems" in result.metric_name
    assert metadata_load(data_root / "README.md")["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.2
    config = yaml.safe_load((path / "config.yaml").read_text())
    for key, value in config.items():  # every hyperparameter, as in config.yaml
        assert f"{key}:" in card.text, key
    assert "max_samples: 200" in card.text and "lora_r: 4" in card.text
    assert "1 min 16 s" in card.text and "CPU (2 cores)" in card.text and "1.3000" in card.text
    assert "190" in card.text  # examples used
    assert "![Training loss](loss.png)" in card.text
    assert (path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert "| gsm8k | 50 | 12.0% (6/50) | 20.0% (10/50) |" in card.text
    assert "0-shot, greedy (do_sample=False, num_beams=1), max_new_tokens 384" in card.text
    assert "AutoPeftModelForCausalLM.from_pretrained(\"alice/tutor\")" in card.text
    assert "Intended use and limits" in card.text


@pytest.mark.parametrize("resolved, qlora", [("4bit", True), ("none", False)])
def test_the_card_says_the_quantization_the_job_trained_with_not_auto(data_root, resolved, qlora):
    path = make_job(data_root, "embedded:smollm2-135m-instruct", adapter=None)
    dataclasses.replace(JobConfig.load(path / "config.yaml"), quantization="auto").save(path / "config.yaml")
    update_status(path, resolved={"quantization": resolved, "gradient_checkpointing": "off"})  # as the worker does
    card = ModelCard(model_card(path, merged=False, repo_id="alice/tutor"))
    assert ("qlora" in card.data.tags) == qlora and ("QLoRA: the base was loaded in 4-bit" in card.text) == qlora
    assert f"quantization: {resolved}" in card.text and "gradient_checkpointing: 'off'" in card.text


def test_merged_card_and_local_base(data_root, tiny_model_dir):
    path = make_job(data_root, str(tiny_model_dir), adapter=None)
    card = ModelCard(model_card(path, merged=True, repo_id="alice/tutor-merged"))
    assert card.data.library_name == "transformers"
    assert card.data.base_model is None  # a local folder has no Hub id to point at
    assert "merged" in card.data.tags and not any(t.startswith("base_model:") for t in card.data.tags)
    assert [r.metric_value for r in card.data.eval_results] == [0.2]
    assert str(tiny_model_dir) in card.text
    assert "AutoModelForCausalLM.from_pretrained(\"alice/tutor-merged\")" in card.text
    assert "AutoPeftModel" not in card.text


# ---------------------------------------------------------------- merge

def greedy(model, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_merge_matches_base_plus_adapter(job, data_root, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = merge_job(job)
    assert target == data_root / "models" / "merged" / JOB_ID
    assert json.loads((target / "merge.json").read_text())["job_id"] == JOB_ID
    assert json.loads((target / "merge.json").read_text())["base_model"] == str(tiny_model_dir)
    for name in ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "config.yaml"]:
        assert (target / name).exists(), name
    assert not (target / "adapter_config.json").exists()
    assert [m["name"] for m in list_merged()] == [JOB_ID]

    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer.chat_template  # the chat template travels with the merged model
    merged = AutoModelForCausalLM.from_pretrained(target).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(torch.tensor([[1, 2, 3, 4]])).logits
        adapted = PeftModel.from_pretrained(base, job / "adapter").eval()
        adapted_logits = adapted(torch.tensor([[1, 2, 3, 4]])).logits
        merged_logits = merged(torch.tensor([[1, 2, 3, 4]])).logits
    assert (adapted_logits - base_logits).abs().max() > 1e-2  # the adapter changes the model...
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)  # ...and the merge keeps that change
    for prompt in ["What is 2 + 3?", "Solve x^2 = 9.", "Half of 18?"]:
        assert greedy(merged, tokenizer, prompt) == greedy(adapted, tokenizer, prompt)


def test_merge_refuses_unfinished_jobs_and_taken_names(data_root, tiny_model_dir, tiny_adapter):
    path = make_job(data_root, str(tiny_model_dir), tiny_adapter, state="running")
    with pytest.raises(PublishError, match="is running"):
        merge_job(path)
    write_json(path / "status.json", {**json.loads((path / "status.json").read_text()), "state": "completed"})
    with pytest.raises(PublishError, match="not a usable name"):
        merge_job(path, "../../outside")
    (data_root / "models" / "merged" / "taken").mkdir(parents=True)
    with pytest.raises(PublishError, match="already exists"):
        merge_job(path, "taken")


def test_merge_cli(job, data_root, capsys):
    parser = argparse.ArgumentParser()
    add_merge_args(parser)
    assert main_merge(parser.parse_args([JOB_ID, "--name", "cli-merge"])) == 0
    assert capsys.readouterr().out.strip() == str(data_root / "models" / "merged" / "cli-merge")


# ---------------------------------------------------------------- push

def test_push_adapter_uploads_every_file_with_the_card(job, hub):
    seen = []
    url = push_job(job, "alice/tutor", progress=lambda fraction, message: seen.append((fraction, message)))
    assert url == f"{hub.url}/alice/tutor"
    repo = hub.repo("alice/tutor")
    assert repo.private is True
    create = next(r for r in hub.requests if r.path == "/api/repos/create")
    assert json.loads(create.body) == {"name": "tutor", "organization": "alice", "visibility": "private"}
    expected = {p.relative_to(job / "adapter").as_posix(): p.read_bytes() for p in files_under(job / "adapter")}
    expected.pop("README.md")  # PEFT's template card is replaced by ours
    for name, content in expected.items():
        assert repo.files[name] == content, name
    assert repo.files["config.yaml"] == (job / "config.yaml").read_bytes()
    assert repo.files["loss.png"] == (job / "loss.png").read_bytes()
    assert set(repo.files) == set(expected) | {"README.md", "loss.png"}
    card = ModelCard(repo.files["README.md"].decode())
    assert card.data.library_name == "peft" and card.data.datasets == ["openai/gsm8k"]
    assert "AutoPeftModelForCausalLM.from_pretrained(\"alice/tutor\")" in card.text
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert any("adapter_model.safetensors" in m for _, m in seen)


def test_pushed_adapter_names_its_base_by_hub_id(data_root, tiny_adapter, hub):
    path = make_job(data_root, "embedded:smollm2-135m-instruct", tiny_adapter)
    push_job(path, "alice/smol-tutor")
    local = json.loads((path / "adapter" / "adapter_config.json").read_text())
    pushed = json.loads(hub.repo("alice/smol-tutor").files["adapter_config.json"])
    assert local["base_model_name_or_path"] != "HuggingFaceTB/SmolLM2-135M-Instruct"  # a local path...
    assert pushed == {**local, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # ...the Hub id


def test_offline_mode_is_explained(job, hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_job(job, "alice/tutor")


def test_token_goes_only_into_the_authorization_header(job, hub, data_root, tmp_path):
    url = push_job(job, "alice/tutor", token=TOKEN)
    assert TOKEN not in url
    assert hub.requests
    for request in hub.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert TOKEN not in json.dumps(others) and TOKEN not in request.path
        assert TOKEN.encode() not in request.body
    for file in files_under(tmp_path):  # the data root and everything else this test wrote
        assert TOKEN.encode() not in file.read_bytes(), file


def test_public_push_and_updating_an_existing_repo(job, hub):
    push_job(job, "alice/open-tutor", private=False)
    assert hub.repo("alice/open-tutor").private is False
    push_job(job, "alice/open-tutor", private=False)  # the repo exists now: updated, not an error
    assert len(hub.repo("alice/open-tutor").commits) == 2


def test_missing_token(job, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="No Hugging Face token"):
        push_job(job, "alice/tutor")
    assert hub.requests == []


def test_invalid_token(job, hub):
    wrong = "hf_FAKEwrongToken000"
    with pytest.raises(PublishError, match="rejected \\(401\\)") as caught:
        push_job(job, "alice/tutor", token=wrong)
    assert wrong not in str(caught.value)
    assert ("model", "alice/tutor") not in hub.repos


@pytest.mark.parametrize("repo_id", ["bob/their-model", "carol/new-model"])
def test_repo_of_someone_else(job, hub, repo_id):
    hub.add_repo("bob/their-model")  # exists, public, owned by bob; carol's namespace is simply not alice's
    with pytest.raises(PublishError, match="signed in as alice\\) may not write to " + repo_id):
        push_job(job, repo_id)
    assert hub.repos.get(("model", "bob/their-model")).files == {}


def test_network_failure_then_retry_works(job, hub):
    hub.fail_next("/commit/")  # the connection drops during the commit
    with pytest.raises(PublishError, match="Cannot reach the Hugging Face Hub"):
        push_job(job, "alice/tutor")
    assert hub.repo("alice/tutor").files == {}
    url = push_job(job, "alice/tutor")
    assert url.endswith("/alice/tutor")
    assert "adapter_model.safetensors" in hub.repo("alice/tutor").files


def test_hub_unreachable(job, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(PublishError, match="Cannot reach the Hugging Face Hub at http://127.0.0.1") as caught:
        push_job(job, "alice/tutor", token=TOKEN)
    assert TOKEN not in str(caught.value)


def test_server_error_is_explained(job, hub):
    hub.fail_next("/commit/", status=400)
    with pytest.raises(PublishError, match="refused the request for alice/tutor \\(HTTP 400"):
        push_job(job, "alice/tutor")


def test_push_merged_merges_first(job, hub, data_root):
    url = push_job(job, "alice/tutor-merged", merged=True)
    assert url.endswith("/alice/tutor-merged")
    merged = data_root / "models" / "merged" / JOB_ID
    files = hub.repo("alice/tutor-merged").files
    assert files["model.safetensors"] == (merged / "model.safetensors").read_bytes()
    assert json.loads(files["merge.json"])["job_id"] == JOB_ID
    assert "adapter_config.json" not in files
    assert ModelCard(files["README.md"].decode()).data.library_name == "transformers"


def test_push_cli(job, hub, capsys):
    parser = argparse.ArgumentParser()
    add_push_args(parser)
    args = parser.parse_args([JOB_ID, "--repo", "alice/cli-tutor", "--public"])
    assert args.private is False and parser.parse_args([JOB_ID, "--repo", "a/b"]).private is True
    assert main_push(args) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{hub.url}/alice/cli-tutor"
    assert "[100%]" in out.err and TOKEN not in out.out + out.err
    assert hub.repo("alice/cli-tutor").private is False


# ---------------------------------------------------------------- the Space

def load_deploy():
    spec = importlib.util.spec_from_file_location("space_deploy", ROOT / "spaces" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spaces_is_a_plain_folder_with_a_valid_header():
    assert not (ROOT / "spaces" / "__init__.py").exists()  # Hugging Face's `spaces` package must not be shadowed
    header = SpaceCard.load(ROOT / "spaces" / "README.md").data
    pinned = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    assert header.sdk == "gradio" and header.sdk_version == pinned["gradio"]
    assert header.app_file == "app.py" and header.suggested_hardware == "t4-small"
    space_pins = [line for line in (ROOT / "spaces" / "requirements.txt").read_text().splitlines()
                  if line and not line.startswith("#")]
    assert f"torch=={pinned['torch']}" in space_pins  # from PyPI: the CUDA build on Linux
    assert not [line for line in space_pins if line.startswith("gradio")]  # the Space's sdk_version provides it


def test_deploy_creates_and_updates_the_space(hub):
    deploy = load_deploy()
    url = deploy.deploy("alice/studio", "t4-small", TOKEN, instructor_password="teach-me", log=lambda m: None)
    assert url == f"{hub.url}/spaces/alice/studio"
    space = hub.repo("alice/studio", "space")
    assert space.sdk == "gradio" and space.hardware == "t4-small" and space.private is False
    assert space.variables == {"MATH_STUDIO_HOME": "/data/math-agent-studio"}
    assert space.secrets == {"INSTRUCTOR_PASSWORD": "teach-me"}
    assert space.files["README.md"] == (ROOT / "spaces" / "README.md").read_bytes()
    assert space.files["requirements.txt"] == (ROOT / "spaces" / "requirements.txt").read_bytes()
    assert space.files["trainer/publish.py"] == (ROOT / "trainer" / "publish.py").read_bytes()
    assert "app.py" in space.files and "tutor/__init__.py" in space.files
    assert not [f for f in space.files if f.startswith(("tests/", ".venv/", "spaces/")) or "__pycache__" in f]
    deploy.deploy("alice/studio", "a10g-small", TOKEN, storage_bucket="alice/studio-data", log=lambda m: None)
    assert space.hardware == "a10g-small" and len(space.commits) == 2
    assert "alice/studio-data" in hub.buckets
    assert space.volumes == [{"type": "bucket", "source": "alice/studio-data", "mountPath": "/data"}]


def test_deploy_command(hub, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url,
           "INSTRUCTOR_PASSWORD": "teach-me"}
    done = subprocess.run([sys.executable, "spaces/deploy.py", "--space", "alice/cli-studio", "--hardware", "t4-small",
                           "--private"], cwd=ROOT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"{hub.url}/spaces/alice/cli-studio")
    assert TOKEN not in done.stdout + done.stderr
    space = hub.repo("alice/cli-studio", "space")
    assert space.private is True and space.secrets == {"INSTRUCTOR_PASSWORD": "teach-me"} and "app.py" in space.files


def test_push_from_the_app_uses_the_instructors_login(job, hub, monkeypatch):
    import gradio as gr

    import app

    monkeypatch.delenv("HF_TOKEN")  # no server token: only the login's can push
    login = gr.OAuthToken(token=TOKEN, scope="openid profile write-repos", expires_at=2**31)
    result, _ = app.push_model("", job.name, "alice/login-tutor", True, False, "", login=login)
    assert "alice/login-tutor" in result and "adapter_model.safetensors" in hub.repo("alice/login-tutor").files
