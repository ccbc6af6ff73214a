"""Shared fixtures: an isolated data root per test, the embedded model converted once, a tiny model."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".pytest-data"  # survives between runs so the embedded model is converted once


def needs_shared_data():
    return pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"{SHARED_DATA} is absent (it sits beside the project in CI)")


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 converted to safetensors, shared by the whole session."""
    os.environ["MATH_STUDIO_HOME"] = str(CACHE)
    from trainer.models import embedded_checkpoint

    return embedded_checkpoint()


@pytest.fixture
def data_root(tmp_path, monkeypatch, embedded_dir) -> Path:
    """A fresh, empty data root for one test, with the already converted embedded model linked in."""
    root = tmp_path / "studio"
    (root / "models" / "embedded").mkdir(parents=True)
    (root / "models" / "embedded" / embedded_dir.name).symlink_to(embedded_dir)
    monkeypatch.setenv("MATH_STUDIO_HOME", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_dir, tmp_path_factory) -> Path:
    """A 2-layer Llama with the embedded model's tokenizer and chat template: fast to load and to train."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    shutil.copy(embedded_dir / "generation_config.json", path / "generation_config.json")
    return path


@pytest.fixture
def empty_model_cache():
    """No model loaded by an earlier test, and none left loaded by this one."""
    from tutor import models

    models.clear_cache()
    yield
    models.clear_cache()


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with large random weights: its greedy text depends on every prompt token (and on padding
    mistakes), where the freshly initialised tiny model writes the same token whatever it is given."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("sharp-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.3)
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, path / name)
    return path
