"""What a student can talk to, and loading it: the embedded default, a job's adapter, a merged model, any model.

A choice is a `trainer.models.ModelChoice` (or its string): see there for the kinds. A remote choice is served by
tutor/remote.py and not loaded here; a plain folder holding adapter_config.json is loaded as an adapter.

Loaded bases are cached (at most MAX_BASES, least recently used evicted). Every adapter of a base lives on one
PeftModel under its own adapter name, so switching adapters never reloads the base. A base and its adapters share
one lock: generate only inside `Loaded.activated()`, which holds it while the right adapter is switched on.
"""

import gc
import json
import os
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from trainer.config import JobConfig
from trainer.models import EMBEDDED, Kind, ModelChoice, ModelError, resolve_model, sized_for_model
from trainer.store import (
    Damaged, adapter_dir, config_as_trained, has_adapter, inside, is_job, job_folders, jobs_dir, merged_dir,
    merged_folders, read_config, read_merge_record, read_status, status_or_damage,
)
from tutor.remote import remote_choices

MAX_BASES = 2
EMBEDDED_LABEL = "SmolLM2-135M-Instruct (embedded default)"


class ModelLoadError(ModelError):
    """A model or adapter that cannot be loaded, with what to do about it."""


class BaseLock:
    """A plain lock that also counts the threads waiting for it: the batching loop that holds a base's lock for a
    whole batch of replies (tutor/serving.py) lets it go when someone waits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self):
        with self._count:
            self.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc_info):
        self._lock.release()


@dataclass
class Base:
    """One loaded base model, the adapters loaded on it, and the lock that guards both."""

    key: str
    model: torch.nn.Module  # the transformers model; a PeftModel once an adapter is loaded on it
    tokenizer: object
    lock: BaseLock = field(default_factory=BaseLock)
    adapters: dict[str, str] = field(default_factory=dict)  # adapter folder -> PEFT adapter name
    batcher: object = None  # tutor.serving.Batcher of this base's replies, made on first batched reply

    @property
    def has_adapters(self) -> bool:
        return bool(self.adapters)


@dataclass
class Loaded:
    """A model ready to generate. `name` is for people; generate inside `activated()`."""

    base: Base
    tokenizer: object
    name: str
    adapter: str | None = None  # the PEFT adapter name on `base`, None for the base model itself

    @property
    def model(self) -> torch.nn.Module:
        return self.base.model

    @contextmanager
    def activated(self):
        """Hold the base's lock with this choice's adapter switched on (or all adapters off); yield the model."""
        with self.base.lock, torch.inference_mode():
            model = self.base.model
            if not self.base.has_adapters:
                yield model
            elif self.adapter is None:
                with model.disable_adapter():
                    yield model
            else:
                model.set_adapter(self.adapter, inference_mode=True)
                yield model


_lock = threading.Lock()  # guards the caches below and serialises loading
_bases: "OrderedDict[str, Base]" = OrderedDict()
_by_choice: dict[ModelChoice, Loaded] = {}


def load_model(choice: "str | ModelChoice") -> Loaded:
    """Load (or fetch from the cache) what `choice` names. Raises ModelLoadError with advice when it cannot.

    Bases load one at a time under the cache lock; attaching an adapter waits only for replies on its own base.
    """
    choice = ModelChoice.parse(choice)
    with _lock:
        loaded = _by_choice.get(choice)
        if loaded is not None and _bases.get(loaded.base.key) is loaded.base:
            _bases.move_to_end(loaded.base.key)
            return loaded
        adapter = find_adapter(choice)
        path = base_path(choice) if adapter is None else adapter_base(adapter)
        base = _get_base(path, in_4bit(path, adapter))
    if adapter is None:
        loaded = Loaded(base, base.tokenizer, display_name(choice))
    else:
        name = _attach_adapter(base, adapter)
        loaded = Loaded(base, adapter_tokenizer(adapter, base), display_name(choice), adapter=name)
    with _lock:
        _by_choice[choice] = loaded
    return loaded


def load_for_evaluation(choice: "str | ModelChoice") -> Loaded:
    """A model of its own for a benchmark run (not cached, not shared with the Tutor), with nothing left to do at every
    token that can be done once: 4-bit weights dequantized to 16 bits where they fit the GPU twice over, and an
    adapter merged into the weights. Dequantized weights are the very values the 4-bit layers compute with, so the
    replies are the model's own; merging only rounds the adapter's update into them. On an H200 the embedded model's
    adapter generated 13x fewer tokens per second unmerged on its 4-bit base than the base alone."""
    from peft import PeftModel

    choice = ModelChoice.parse(choice)
    adapter = find_adapter(choice)
    path = base_path(choice) if adapter is None else adapter_base(adapter)
    model, tokenizer = load_base(path, in_4bit(path, adapter))
    if getattr(model, "hf_quantizer", None) is not None and fits_dequantized(model):
        model = model.dequantize(dtype=next(p.dtype for p in model.parameters() if p.is_floating_point()))
    base = Base(str(choice), model, tokenizer)
    if adapter is not None:
        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
            if getattr(model.base_model.model, "hf_quantizer", None) is None:
                model = model.merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise ModelLoadError(f"The adapter at {adapter} is broken or does not fit its base: {exc}") from None
        base.model, tokenizer = model.eval(), adapter_tokenizer(adapter, base)
    return Loaded(base, tokenizer, display_name(choice))


def fits_dequantized(model) -> bool:
    """Whether the model's weights in 16 bits take at most half the GPU memory still free."""
    weights = 2 * sum(p.numel() for p in model.parameters())  # a packed 4-bit parameter holds two (overcounts the rest)
    free, _ = torch.cuda.mem_get_info(model.device)
    return 2 * (2 * weights) <= free


def clear_cache() -> None:
    """Forget every loaded model and free its memory, once the batched replies still running on them have ended."""
    with _lock:
        bases = list(_bases.values())
        while _bases:
            _evict(next(iter(_bases)))
    for base in bases:  # outside the cache lock, so that other students' models load meanwhile
        if base.batcher is not None:
            base.batcher.join()  # its loop stops its batching manager and ends once idle


def job_of(choice: ModelChoice) -> Path | None:
    """The job folder an adapter choice names by its id, or None (a folder, or not an adapter choice)."""
    job = jobs_dir() / choice.ref
    if choice.kind is Kind.ADAPTER and choice.ref and "/" not in choice.ref and inside(jobs_dir(), job) and is_job(job):
        return job
    return None


def find_adapter(choice: "str | ModelChoice") -> Path | None:
    """The adapter folder a choice names, or None when it names a full model."""
    choice = ModelChoice.parse(choice)
    if choice.kind is Kind.ADAPTER:
        job = job_of(choice)
        if job is not None:
            if not has_adapter(job):
                raise ModelLoadError(f"Job {choice.ref} has no adapter yet (state: "
                                     f"{status_or_damage(job)['state']}); pick a finished job.")
            return adapter_dir(job).resolve()
        folder = adapter_folder(Path(choice.ref).expanduser())
        if folder is None:
            raise ModelLoadError(
                f"No adapter {choice.ref!r}: give a finished job's id or a folder holding adapter_config.json."
            )
        return folder
    if choice.kind is Kind.MODEL:
        return adapter_folder(Path(choice.ref).expanduser())
    return None


def adapter_folder(path: Path) -> Path | None:
    """`path` itself when it is an adapter folder, its adapter when it is a job folder, else None."""
    for folder in (path, adapter_dir(path)):
        if (folder / "adapter_config.json").is_file():
            return folder.resolve()
    return None


def base_path(choice: "str | ModelChoice") -> str:
    """Where a full model (embedded, merged, Hub id or folder) loads from."""
    choice = ModelChoice.parse(choice)
    if choice.kind is Kind.MERGED:
        folder = merged_dir() / choice.ref
        if not choice.ref or not inside(merged_dir(), folder) or not (folder / "config.json").exists():
            raise ModelLoadError(f"No merged model {choice.ref!r} under {merged_dir()}.")
        return str(folder.resolve())
    try:
        return resolve_model(str(choice))
    except ModelError as exc:
        raise ModelLoadError(str(exc)) from None


def adapter_base(adapter: Path) -> str:
    """The base model an adapter was trained on, as named in its own adapter_config.json."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"The adapter at {adapter} has an unreadable adapter_config.json ({exc}).") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise ModelLoadError(f"The adapter at {adapter} does not name its base model (base_model_name_or_path).")
    try:
        return resolve_model(base)
    except ModelError as exc:
        raise ModelLoadError(f"The adapter at {adapter} needs base model {base}, which cannot be used: {exc}") from None


def in_4bit(path: str, adapter: Path | None) -> bool:
    """Whether a GPU loads this base in 4-bit NF4: as the adapter was trained (its job's quantization, "auto" as its
    worker decided it), so that the adapter runs on the very weights it learned on (an adapter of the embedded model
    trained on bf16 weights scored 32.6% on builtin:basic-math run on 4-bit ones, H200, 2026-12-02); a base alone, a
    merged model or an adapter from elsewhere by the training rule (trainer.models.sized_for_model: 4-bit from 1B
    parameters). MATH_STUDIO_TUTOR_4BIT=0 or 1 decides for every model."""
    forced = os.environ.get("MATH_STUDIO_TUTOR_4BIT")
    if not torch.cuda.is_available():
        return False  # a CPU loads every model in full precision
    if forced in ("0", "1"):
        return forced == "1"
    job = adapter.parent if adapter is not None else None
    if job is not None and is_job(job) and adapter_dir(job).resolve() == adapter.resolve():
        try:
            return config_as_trained(job, read_status(job)).quantization == "4bit"
        except (Damaged, ValueError, TypeError):
            pass  # a damaged record: decided by the rule below
    try:
        return sized_for_model(JobConfig(), path).quantization == "4bit"
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read the configuration of the model {path}: {exc}") from None


def cache_key(path: str) -> str:
    folder = Path(path)
    return str(folder.resolve()) if folder.exists() else path


def _get_base(path: str, four_bit: bool) -> Base:
    key = f"{cache_key(path)} ({'4-bit' if four_bit else 'full precision'})"
    if key in _bases:
        _bases.move_to_end(key)
        return _bases[key]
    while len(_bases) >= MAX_BASES:
        _evict(next(iter(_bases)))
    model, tokenizer = load_base(path, four_bit)
    _bases[key] = Base(key, model, tokenizer)
    return _bases[key]


def _evict(key: str) -> None:
    """Drop a base and everything loaded on it. A generation still running keeps its own reference until it ends."""
    _bases.pop(key)
    for choice in [c for c, loaded in _by_choice.items() if loaded.base.key == key]:
        del _by_choice[choice]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_base(path: str, four_bit: bool = True):
    """A model and tokenizer for inference: on a GPU in 4-bit NF4 or 16-bit (`four_bit`, see in_4bit), full precision
    on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if torch.cuda.is_available():
        # PyTorch's cuDNN attention builds a plan for each new shape, and a growing reply is a new shape at every step:
        # on an H200 that cost 2 ms of host time per attention call against 0.05 ms on the GPU (benchmarks/README.md).
        # Its flash and memory-efficient kernels take the work instead. The switch is process-wide.
        torch.backends.cuda.enable_cudnn_sdp(False)
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs = {"device_map": {"": 0}, "dtype": compute}
        if four_bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
    else:
        kwargs = {"dtype": torch.float32}
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"Cannot load the model {path}: {exc}") from None
    model.eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Left padding (prompts end where generation starts) and a pad token, for batched generation."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _attach_adapter(base: Base, adapter: Path) -> str:
    """Load an adapter onto its base (once) and return its PEFT adapter name. Waits for replies on the base."""
    from peft import PeftModel

    with base.lock:
        if str(adapter) in base.adapters:
            return base.adapters[str(adapter)]
        name = f"adapter{len(base.adapters)}"
        try:
            if base.has_adapters:
                base.model.load_adapter(str(adapter), adapter_name=name, is_trainable=False)
            else:
                base.model = PeftModel.from_pretrained(base.model, str(adapter), adapter_name=name, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            _discard_failed(base, name)
            raise ModelLoadError(f"The adapter at {adapter} is broken or does not fit its base: {exc}") from None
        base.adapters[str(adapter)] = name  # under the lock: `activated()` never sees a PeftModel without its names
    return name


def _discard_failed(base: Base, name: str) -> None:
    """Undo a half-loaded adapter so the base stays usable."""
    if base.has_adapters:
        if name in base.model.peft_config:
            base.model.delete_adapter(name)
        base.model.set_adapter(next(iter(base.adapters.values())), inference_mode=True)
        return
    # PEFT may already have put this adapter's LoRA layers into the bare model: drop it so the next use loads it
    # afresh. (A reply that was waiting on this base still finishes on it; freshly trained LoRA layers start as
    # no-ops, so only an adapter saved with init_lora_weights=False could change that reply.)
    with _lock:
        if _bases.get(base.key) is base:
            _evict(base.key)


def adapter_tokenizer(adapter: Path, base: Base):
    """The tokenizer saved with the adapter when there is one (training may change its template), else the base's."""
    if not (adapter / "tokenizer_config.json").exists():
        return base.tokenizer
    from transformers import AutoTokenizer

    try:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(adapter))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"The adapter at {adapter} has a broken tokenizer: {exc}") from None


# ---- listing what can be picked ----


def list_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the model picker: the embedded default, completed jobs' adapters, merged models, and
    the tutor server's models when MATH_STUDIO_OPENAI_URL is set (see tutor/remote.py). A cancelled or failed job's
    adapter is partial: it is not offered (it can still be named as adapter:<job id>)."""
    choices = [(EMBEDDED_LABEL, EMBEDDED)]
    statuses = {job: status_or_damage(job) for job in job_folders() if has_adapter(job)}
    done = [job for job, status in statuses.items() if status["state"] == "completed"]
    for job in sorted(done, key=lambda job: str(statuses[job].get("finished") or ""), reverse=True):
        choices.append((adapter_label(job), str(ModelChoice(Kind.ADAPTER, job.name))))
    for folder in merged_folders():
        choices.append((merged_label(folder), str(ModelChoice(Kind.MERGED, folder.name))))
    return choices + remote_choices()


def adapter_label(job: Path) -> str:
    status = status_or_damage(job)
    date = str(status.get("finished") or status.get("created") or "")[:16].replace("T", " ")
    parts = [status.get("name") or job.name, short_model_name(adapter_base_name(adapter_dir(job))), date]
    return " · ".join(str(part) for part in parts if part)


def merged_label(folder: Path) -> str:
    base = short_model_name(str(read_merge_record(folder).get("base_model") or ""))
    return f"{folder.name} (merged{' from ' + base if base else ''})"


def adapter_base_name(adapter: Path) -> str:
    """The base model as the job's config names it (e.g. embedded:...), else as adapter_config.json does."""
    for folder in (adapter, adapter.parent):
        try:
            return read_config(folder).base_model
        except Damaged:
            continue  # absent or damaged: it only costs the label its base name; loading reads adapter_config.json
    try:
        return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    except (OSError, json.JSONDecodeError, AttributeError):
        return ""


_EMBEDDED_PATH = re.compile(r"(^embedded:|/models/embedded/)smollm2-135m-instruct/?$")


def short_model_name(name: str) -> str:
    """A base model named briefly: the embedded default by its name, a folder by its last part, a Hub id as is."""
    if not name:
        return ""
    if _EMBEDDED_PATH.search(name):
        return "SmolLM2-135M (embedded)"
    return Path(name).name if name.startswith(("/", "~", ".")) else name


def display_name(choice: "str | ModelChoice") -> str:
    choice = ModelChoice.parse(choice)
    if str(choice) == EMBEDDED:
        return EMBEDDED_LABEL
    job = job_of(choice)
    return adapter_label(job) if job is not None else str(choice)
