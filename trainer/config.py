"""JobConfig: the single source of truth for a training job.

The Train form takes its defaults and choices from it, the CLI parses it (`--set key=value`), the worker
reads it, and it is saved as `config.yaml` beside the adapter it produced.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TUTOR_PROMPT = (
    "You are a patient math tutor. Think through the problem step by step inside <think>...</think>, "
    "then give the final answer in \\boxed{}."
)
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTENTION_PROJECTIONS = ALL_PROJECTIONS[:4]
QUANTIZATIONS = ["4bit", "8bit", "none"]
SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup"]
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "sgd"]
# "auto": PyTorch's varlen flash kernel for padding-free batches on a GPU with bf16, else sdpa (trainer/train.py).
ATTENTIONS = ["auto", "varlen", "sdpa", "flex_attention", "eager"]


class ConfigError(ValueError):
    """An impossible job setting, with the field named and what would work."""


@dataclass
class JobConfig:
    base_model: str = "embedded:smollm2-135m-instruct"
    dataset: str = "builtin:basic-math"
    dataset_split: str = "train"
    max_samples: int = 96
    system_prompt: str = TUTOR_PROMPT
    quantization: str = field(default="4bit", metadata={"choices": QUANTIZATIONS})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # 0.05 regularizes a little and costs 10 to 12% of the speed (benchmarks/README.md)
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    max_seq_length: int = 512
    per_device_batch_size: int = 64  # padding-free, checkpointing, no dropout: 32x the seed recipe, H200 (benchmarks/)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = field(default="cosine", metadata={"choices": SCHEDULERS})
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    num_epochs: float = 1.0
    max_steps: int = -1
    optimizer: str = field(default="adamw_torch", metadata={"choices": OPTIMIZERS})
    packing: bool = False  # TRL's best-fit packing into rows of max_seq_length (per_device_batch_size counts rows)
    padding_free: bool = True  # a micro-batch's examples end to end in one row, no padding, attention kept apart
    attention: str = field(default="auto", metadata={"choices": ATTENTIONS})
    gradient_checkpointing: bool = True  # a 4B model trains in 11 GiB at batch 64 (GSM8K); off: needs far more memory
    eval_fraction: float = 0.05
    seed: int = 42
    save_steps: int = 4
    bf16: bool = True  # where the GPU has it; CPUs and older GPUs train in fp32
    double_quant: bool = True

    def validate(self) -> "JobConfig":
        """Refuse impossible values before anything starts. Returns self so calls chain."""
        checks = [
            (self.base_model.strip() != "", "base_model", "give the embedded default, a Hub id or a local folder"),
            (self.dataset.strip() != "", "dataset", "give a spec such as builtin:basic-math or file:/path.jsonl"),
            (self.max_samples >= 0, "max_samples", "use a positive count, or 0 for every example"),
            (self.quantization in QUANTIZATIONS, "quantization", f"use one of {QUANTIZATIONS}"),
            (0 < self.lora_r <= 1024, "lora_r", "use a positive rank up to 1024, such as 8, 16 or 32"),
            (0 < self.lora_alpha <= 4096, "lora_alpha", "use a positive alpha up to 4096, commonly twice lora_r"),
            (0 <= self.lora_dropout < 1, "lora_dropout", "use a value in [0, 1), such as 0.05"),
            (len(self.target_modules) > 0, "target_modules", f"name at least one module, e.g. {ALL_PROJECTIONS}"),
            (32 <= self.max_seq_length <= 131072, "max_seq_length",
             "use at least 32 tokens, at most 131072; 512 to 2048 is typical"),
            (1 <= self.per_device_batch_size <= 1024, "per_device_batch_size", "use 1 or more, up to 1024"),
            (1 <= self.gradient_accumulation_steps <= 1024, "gradient_accumulation_steps", "use 1 or more, up to 1024"),
            (0 < self.learning_rate < 1, "learning_rate", "use a positive rate below 1, such as 2e-4"),
            (self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"use one of {SCHEDULERS}"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio", "use a fraction in [0, 1), such as 0.03"),
            (0 <= self.weight_decay < 1, "weight_decay", "use 0 or a small positive value such as 0.01"),
            (self.num_epochs > 0 or self.max_steps > 0, "num_epochs", "use a positive number of epochs or set max_steps"),
            (self.num_epochs <= 1000, "num_epochs", "use a finite number, at most 1000"),
            (self.max_steps == -1 or self.max_steps > 0, "max_steps", "use -1 (train by epochs) or a positive step count"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"use one of {OPTIMIZERS}"),
            (self.attention in ATTENTIONS, "attention", f"use one of {ATTENTIONS}"),
            (self.attention != "varlen" or self.padding_free or self.packing, "attention",
             "varlen attention needs padding_free or packing; use sdpa for padded batches"),
            (0 <= self.eval_fraction < 0.5, "eval_fraction", "use a fraction in [0, 0.5), such as 0.05"),
            (self.save_steps >= 1, "save_steps", "use 1 or more"),
        ]
        for ok, name, advice in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r} is not possible: {advice}.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, values: dict) -> "JobConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"Unknown config keys {unknown}; known keys are {sorted(known)}.")
        return cls(**{k: coerce(known[k], v) for k, v in values.items()})

    @classmethod
    def load(cls, path: Path) -> "JobConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, not {type(values).__name__}.")
        return cls.from_dict(values)

    def with_overrides(self, pairs: list[str]) -> "JobConfig":
        """Apply `key=value` strings (values parsed as YAML: numbers, booleans, lists)."""
        values = self.to_dict()
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise ConfigError(f"--set needs key=value, got {pair!r}.")
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        return JobConfig.from_dict(values)


def coerce(f: dataclasses.Field, value):
    """Turn a YAML/form value into the field's type, or say which field got what."""
    kind = f.type
    try:
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        if kind is float:
            return float(value)
        if kind == list[str]:
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{f.name} = {value!r} is not a valid {getattr(kind, '__name__', kind)} ({exc}).") from None


def field_choices(name: str) -> list | None:
    return next(f.metadata.get("choices") for f in dataclasses.fields(JobConfig) if f.name == name)


# The seed recipes, reproduced exactly; selectable in the Train form and by name on the CLI. The seeds trained padded
# batches with gradient checkpointing (peft's prepare_model_for_kbit_training turns it on).
SEED = {"padding_free": False, "gradient_checkpointing": True}
PRESETS: dict[str, JobConfig] = {
    # The embedded model on builtin:basic-math, sized for a CPU (about 25 tokens/s there): 61 examples, 16 steps, a loss
    # curve to watch in a few minutes. JobConfig()'s own batch of 32 is what won on a GPU (benchmarks/README.md).
    "offline-default": JobConfig(max_samples=64, per_device_batch_size=4),
    "gemma3-4b-mathx-qlora": JobConfig(
        base_model="google/gemma-3-4b-it", dataset="hub:XenArcAI/MathX-5M", max_samples=10_000,
        quantization="4bit", double_quant=True, lora_r=16, lora_alpha=32, lora_dropout=0.05,
        target_modules=list(ALL_PROJECTIONS), max_seq_length=2048, per_device_batch_size=2,
        gradient_accumulation_steps=8, learning_rate=2e-4, lr_scheduler="cosine", warmup_ratio=0.03,
        optimizer="paged_adamw_8bit", num_epochs=1, bf16=True, save_steps=200, **SEED,
    ),
    "gemma3-27b-mathx-lora": JobConfig(
        base_model="google/gemma-3-27b-it", dataset="hub:XenArcAI/MathX-5M", max_samples=10_000,
        quantization="none", lora_r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(ALL_PROJECTIONS),
        max_seq_length=2048, per_device_batch_size=2, gradient_accumulation_steps=8, learning_rate=2e-4,
        lr_scheduler="cosine", warmup_ratio=0.03, optimizer="paged_adamw_8bit", num_epochs=1, bf16=True,
        save_steps=200, **SEED,
    ),
    "tinyllama-math-mix-lora": JobConfig(
        base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        dataset="hub:openai/gsm8k:main*3000+hub:AI-MO/NuminaMath-CoT*5000+hub:reasoning-machines/gsm-hard*1000",
        max_samples=0, quantization="4bit", lora_r=32, lora_alpha=64, lora_dropout=0.1,
        target_modules=list(ALL_PROJECTIONS), learning_rate=1e-4, weight_decay=0.05, warmup_ratio=0.05,
        num_epochs=2, optimizer="paged_adamw_32bit", bf16=True, save_steps=200, **SEED,
    ),
    "llama3.2-3b-gsm8k-qlora": JobConfig(
        base_model="meta-llama/Llama-3.2-3B-Instruct", dataset="hub:openai/gsm8k:main", max_samples=0,
        quantization="4bit", lora_r=32, lora_alpha=64, lora_dropout=0.1, target_modules=list(ATTENTION_PROJECTIONS),
        max_seq_length=512, per_device_batch_size=4, gradient_accumulation_steps=4, learning_rate=1e-4,
        optimizer="paged_adamw_32bit", bf16=True, save_steps=200, **SEED,
    ),
}
