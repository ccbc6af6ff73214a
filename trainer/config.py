"""JobConfig: the single source of truth for a training job.

The Train form takes its defaults and choices from it, the CLI parses it (`--set key=value`), the worker
reads it, and it is saved as `config.yaml` beside the adapter it produced.
"""

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TUTOR_PROMPT = (
    "You are a patient math tutor. Think through the problem step by step inside <think>...</think>, "
    "then give the final answer in \\boxed{}."
)
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTENTION_PROJECTIONS = ALL_PROJECTIONS[:4]
# GSM8K's train set in the read-only benchmark copies beside the repository (../shared/data), when they are there
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repository
SHARED_GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"
QUANTIZATIONS = ["auto", "4bit", "8bit", "none"]
SWITCHES = ["auto", "on", "off"]  # a switch "auto" decides; configs from before wrote true/false for on/off (coerce)
# "auto" (quantization, gradient_checkpointing): the base's size decides, in one rule (trainer/models.py's
# sized_for_base)
AUTO_RULE = ("auto: a base of 1B parameters or more trains QLoRA (4-bit NF4 with gradient checkpointing), a smaller "
             "one unquantized without checkpointing.")
AUTO_RATE_RULE = ("0 (auto): 2e-3 for a base under 1B parameters (what taught the embedded model GSM8K best on an "
                  "H200), 2e-4 from 1B (QLoRA's rate; 2e-3 made a 4B base's loss rise).")
SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup"]
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "sgd"]
# "auto": PyTorch's varlen flash kernel for padding-free batches on a GPU with bf16, else sdpa (trainer/train.py).
ATTENTIONS = ["auto", "varlen", "sdpa", "flex_attention", "eager"]
METHODS = ["sft", "grpo"]
TRACKERS = ["none", "tensorboard", "trackio", "wandb"]  # report_to: each is the package (and module) to install


GROUPS = ["Model", "Data", "LoRA", "Optimization", "Advanced"]  # the Train form's sections, in this order


def about(group: str, label: str, help: str, choices: list | None = None) -> dict:
    """A field's metadata: its group and label in the Train form, its one-line help (form and CLI), its choices."""
    return {"group": group, "label": label, "help": help, **({"choices": choices} if choices else {})}


MAX_SAMPLES = 1_000_000  # examples of one job (or one part of a mixture); 10**9 generated data for ever


class ConfigError(ValueError):
    """An impossible job setting, with the field named and what would work."""


@dataclass
class JobConfig:
    base_model: str = field(default="embedded:smollm2-135m-instruct", metadata=about("Model", "Base model", (
        "embedded:smollm2-135m-instruct (ships with the app), a Hugging Face Hub id such as google/gemma-3-4b-it, "
        "or a local folder.")))
    dataset: str = field(default="builtin:basic-math", metadata=about("Data", "Dataset", (
        "builtin:basic-math, hub:owner/name[:config], file:/path.jsonl (or .json/.csv/.parquet, e.g. an upload); "
        "join with + and cap each with *N.")))
    dataset_split: str = field(default="train", metadata=about("Data", "Split", (
        "The split of hub: datasets to train on (train, test, ...).")))
    max_samples: int = field(default=96, metadata=about("Data", "Max examples", (
        "Train on at most this many examples (0: all of them).")))
    system_prompt: str = field(default=TUTOR_PROMPT, metadata=about("Data", "System prompt", (
        "The tutor's instructions, put before every example (and used in the Tutor).")))
    quantization: str = field(default="auto", metadata=about("Model", "Quantization", (
        "Load the base in 4 or 8 bits (QLoRA: far less memory, a GPU only) or unquantized (none). " + AUTO_RULE),
        choices=QUANTIZATIONS))
    lora_r: int = field(default=64, metadata=about("LoRA", "LoRA rank", (
        "Size of the low-rank update: higher learns more and trains a little slower. 64 taught the embedded model "
        "GSM8K best on an H200, 2.5 points more than 16 (benchmarks/README.md).")))
    lora_alpha: int = field(default=128, metadata=about("LoRA", "LoRA alpha", (
        "Scale of the update (alpha / rank); commonly twice the rank.")))
    lora_dropout: float = field(default=0.0, metadata=about("LoRA", "LoRA dropout", (
        "Dropout on the adapter's input: 0.05 regularizes a little and costs 10 to 12% of the speed.")))
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS), metadata=about(
        "LoRA", "Target modules", "The linear layers that get an adapter, comma-separated (all-linear: every one)."))
    max_seq_length: int = field(default=512, metadata=about("Data", "Max tokens per example", (
        "Longer examples are cut; the preview shows how many would be.")))
    # padding-free, checkpointing, no dropout: 32x the seed recipe, H200 (benchmarks/)
    per_device_batch_size: int = field(default=64, metadata=about("Optimization", "Batch size per device", (
        "Examples per forward pass on each GPU (or the CPU); lower it when memory runs out.")))
    gradient_accumulation_steps: int = field(default=1, metadata=about("Optimization", "Gradient accumulation", (
        "Forward passes summed into one optimizer step: a bigger batch without more memory.")))
    learning_rate: float = field(default=0.0, metadata={"group": "Optimization", "label": "Learning rate", "help": (
        "The peak rate for a batch of lr_reference_batch examples. The trainer scales it with the batch by the square "
        "root rule, rate x sqrt(batch / lr_reference_batch), where batch = per_device_batch_size x "
        f"gradient_accumulation_steps x GPUs: a smaller or larger batch keeps learning. {AUTO_RATE_RULE}")})
    lr_reference_batch: int = field(default=64, metadata={
        "group": "Optimization", "label": "Reference batch for the rate", "help": (
        "The batch (examples per optimizer step) at which learning_rate applies unscaled; 0: no scaling, "
        "learning_rate as written at any batch.")})
    lr_scheduler: str = field(default="cosine", metadata=about("Optimization", "Rate schedule", (
        "How the rate changes over training after warmup."), choices=SCHEDULERS))
    warmup_ratio: float = field(default=0.03, metadata=about("Optimization", "Warmup share", (
        "The share of steps over which the rate rises from 0 to its peak.")))
    weight_decay: float = field(default=0.0, metadata=about("Optimization", "Weight decay", (
        "Pulls adapter weights toward 0 (0: none; 0.01 is common).")))
    num_epochs: float = field(default=3.0, metadata=about("Optimization", "Epochs", (
        "Passes over the data (fractions allowed); max_steps overrides it.")))
    max_steps: int = field(default=-1, metadata=about("Optimization", "Max steps", (
        "Stop after this many optimizer steps (-1: train by epochs).")))
    optimizer: str = field(default="adamw_torch", metadata=about("Optimization", "Optimizer", (
        "paged_/8bit optimizers save GPU memory (bitsandbytes); adamw_torch everywhere else."), choices=OPTIMIZERS))
    packing: bool = field(default=False, metadata=about("Data", "Packing", (
        "Pack examples end to end into rows of max_seq_length (TRL's best fit); the batch size then counts rows.")))
    padding_free: bool = field(default=True, metadata=about("Advanced", "Padding-free batches", (
        "A micro-batch's examples end to end in one row, no padding, attention kept apart (faster).")))
    attention: str = field(default="auto", metadata=about("Advanced", "Attention kernel", (
        "auto: PyTorch's varlen flash kernel for padding-free batches on a GPU with bf16, else sdpa."),
        choices=ATTENTIONS))
    # a 4B model trains in 11 GiB at batch 64 (GSM8K); off: needs far more memory
    gradient_checkpointing: str = field(default="auto", metadata=about("Advanced", "Gradient checkpointing", (
        "on: recompute activations in the backward pass: far less memory, about 30% slower. " + AUTO_RULE),
        choices=SWITCHES))
    eval_fraction: float = field(default=0.05, metadata=about("Data", "Held-out share", (
        "The share of examples kept aside to measure eval loss (0: none).")))
    heldout_problems: int = field(default=0, metadata=about("Data", "Held-out problems scored", (
        "After training, score this many problems of builtin:basic-math's held-out split (drawn with another seed "
        "than training's) with the base model (before) and with the new adapter (after), greedy as the Evaluate "
        "tab scores, and record both accuracies in the job's metrics; 0: off. On a CPU each problem takes seconds.")))
    seed: int = field(default=42, metadata=about("Advanced", "Seed", (
        "Random seed for the data order, the split and the adapter's initial weights.")))
    save_steps: int = field(default=4, metadata=about("Advanced", "Checkpoint every", (
        "Save a checkpoint (what Resume continues from) every this many steps.")))
    report_to: str = field(default="none", metadata=about("Advanced", "Experiment tracking", (
        "Also log the run's metrics to TensorBoard (beside the checkpoints), Trackio or Weights & Biases; "
        "its package must be installed where the job trains."), choices=TRACKERS))
    bf16: bool = field(default=True, metadata=about("Advanced", "bf16", (
        "Train in bfloat16 where the GPU has it; CPUs and older GPUs train in fp32.")))
    double_quant: bool = field(default=True, metadata=about("Model", "Double quantization", (
        "4bit only: quantize the quantization constants too (about 0.4 bits per weight less).")))
    method: str = field(default="sft", metadata={"group": "Model", "label": "Method", "choices": METHODS, "help": (
        "sft: imitate the dataset's worked solutions. grpo: reinforcement from verified answers (TRL's GRPOTrainer): "
        "sample num_generations replies per problem and reward those whose final answer checks out.")})
    init_adapter: str = field(default="", metadata={"group": "Model", "label": "Start from adapter", "help": (
        "grpo: a completed job's id whose adapter training starts from (SFT, then GRPO); it keeps that adapter's "
        "LoRA settings. Empty: a new adapter on the base model.")})
    num_generations: int = field(default=4, metadata={
        "group": "Advanced", "label": "grpo: replies per problem", "help": (
        "grpo: replies sampled per problem, compared with each other. per_device_batch_size x "
        "gradient_accumulation_steps counts replies and must be a multiple of it; on a CPU a step holds one group.")})
    max_completion_length: int = field(default=128, metadata={
        "group": "Advanced", "label": "grpo: reply tokens", "help": (
        "grpo: tokens a sampled reply may have; longer ones are cut. builtin:basic-math's replies take up to 120; "
        "raise it to 256 or more for GSM8K and MATH. On a CPU the default is 64, and quantization auto loads the "
        "base unquantized whatever its size (generating is most of a step there).")})
    beta: float = field(default=0.04, metadata={"group": "Advanced", "label": "grpo: KL beta", "help": (
        "grpo: KL coefficient that keeps the policy near where it started; 0 skips the reference pass (faster).")})
    grpo_learning_rate: float = field(default=5e-5, metadata={
        "group": "Advanced", "label": "grpo: learning rate", "help": (
        "grpo: the peak rate, used as written (learning_rate is SFT's). Reinforcement steps want a far lower rate "
        "than imitation: with LoRA about 1e-5 to 1e-4.")})
    temperature: float = field(default=1.0, metadata={
        "group": "Advanced", "label": "grpo: temperature", "help": "grpo: sampling temperature of the replies."})
    answer_reward_weight: float = field(default=1.0, metadata={
        "group": "Advanced", "label": "grpo: answer reward weight", "help": (
        "grpo: weight of the reward 1 for a final answer equal to the gold one (trainer/answers.py), else 0.")})
    format_reward_weight: float = field(default=0.2, metadata={
        "group": "Advanced", "label": "grpo: format reward weight", "help": (
        "grpo: weight of the reward for the reply's form (0.5 for <think>...</think>, 0.5 for a final \\boxed{}); "
        "0: no format reward.")})

    def validate(self) -> "JobConfig":
        """Refuse impossible values before anything starts. Returns self so calls chain."""
        checks = [
            (self.base_model.strip() != "", "base_model", "give the embedded default, a Hub id or a local folder"),
            (self.dataset.strip() != "", "dataset", "give a spec such as builtin:basic-math or file:/path.jsonl"),
            (0 <= self.max_samples <= MAX_SAMPLES, "max_samples",
             f"use a positive count up to {MAX_SAMPLES:,}, or 0 for every example"),
            (self.quantization in QUANTIZATIONS, "quantization", f"use one of {QUANTIZATIONS}"),
            (self.gradient_checkpointing in SWITCHES, "gradient_checkpointing", f"use one of {SWITCHES}"),
            (0 < self.lora_r <= 1024, "lora_r", "use a positive rank up to 1024, such as 8, 16 or 32"),
            (0 < self.lora_alpha <= 4096, "lora_alpha", "use a positive alpha up to 4096, commonly twice lora_r"),
            (0 <= self.lora_dropout < 1, "lora_dropout", "use a value in [0, 1), such as 0.05"),
            (len(self.target_modules) > 0, "target_modules", f"name at least one module, e.g. {ALL_PROJECTIONS}"),
            (32 <= self.max_seq_length <= 131072, "max_seq_length",
             "use at least 32 tokens, at most 131072; 512 to 2048 is typical"),
            (1 <= self.per_device_batch_size <= 1024, "per_device_batch_size", "use 1 or more, up to 1024"),
            (1 <= self.gradient_accumulation_steps <= 1024, "gradient_accumulation_steps", "use 1 or more, up to 1024"),
            (0 <= self.learning_rate < 1, "learning_rate", "use a positive rate below 1, such as 2e-4, or 0 (auto)"),
            (self.lr_reference_batch >= 0, "lr_reference_batch", "use the batch learning_rate was chosen at, or 0"),
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
            (self.attention != "varlen" or self.method == "sft", "attention",
             "grpo generates and scores padded batches, which varlen attention cannot take; use auto or sdpa"),
            (0 <= self.eval_fraction < 0.5, "eval_fraction", "use a fraction in [0, 0.5), such as 0.05"),
            (0 <= self.heldout_problems <= 10_000, "heldout_problems", "use 0 (off) or a count up to 10000"),
            (self.save_steps >= 1, "save_steps", "use 1 or more"),
            (self.report_to in TRACKERS, "report_to", f"use one of {TRACKERS}"),
            (self.report_to == "none" or importlib.util.find_spec(self.report_to) is not None, "report_to",
             f"the {self.report_to} package is not installed here: `pip install {self.report_to}`, or use none"),
            (0 <= self.seed < 2**32, "seed", "use a whole number from 0 to 4294967295"),
            (self.method in METHODS, "method", f"use one of {METHODS}"),
            (not self.init_adapter or self.method == "grpo", "init_adapter",
             "a starting adapter is for grpo jobs; leave it empty for sft"),
            (self.num_generations >= 2, "num_generations", "use 2 or more: GRPO compares replies to the same problem"),
            (self.method != "grpo" or self.per_device_batch_size * self.gradient_accumulation_steps
             % max(self.num_generations, 1) == 0, "per_device_batch_size",
             f"for grpo, per_device_batch_size x gradient_accumulation_steps counts sampled replies and must be a "
             f"multiple of num_generations ({self.num_generations}), e.g. {self.num_generations * 4}"),
            (1 <= self.max_completion_length <= 131072, "max_completion_length", "use 1 or more tokens, such as 256"),
            (0 <= self.beta < 10, "beta", "use 0 (no KL penalty) or a small value such as 0.04"),
            (0 < self.grpo_learning_rate < 1, "grpo_learning_rate", "use a positive rate below 1, such as 5e-5"),
            (0 < self.temperature <= 10, "temperature", "use a positive temperature such as 1.0"),
            (self.answer_reward_weight >= 0, "answer_reward_weight", "use 0 or more, such as 1.0"),
            (self.format_reward_weight >= 0, "format_reward_weight", "use 0 or more, such as 0.2"),
            (self.answer_reward_weight + self.format_reward_weight > 0, "answer_reward_weight",
             "give at least one reward a positive weight"),
        ]
        for ok, name, advice in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r} is not possible: {advice}.")
        return self

    def scaled_learning_rate(self, processes: int = 1) -> float:
        """learning_rate for this job's batch (examples per optimizer step over `processes` GPUs), by the square
        root rule from lr_reference_batch (see the field's help). An auto rate (0) is decided for the base first
        (trainer/models.py's sized_for_base)."""
        if not self.learning_rate:
            raise ValueError("learning_rate is still auto: decide it for the base first (trainer.models.sized_for_base).")
        if not self.lr_reference_batch:
            return self.learning_rate
        batch = self.per_device_batch_size * self.gradient_accumulation_steps * processes
        return self.learning_rate * (batch / self.lr_reference_batch) ** 0.5

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

    def overrides(self) -> list[str]:
        """`key=value` strings (values as YAML) for what differs from the defaults: with_overrides turns them back."""
        defaults = JobConfig().to_dict()
        return [f"{key}={yaml_scalar(value)}" for key, value in self.to_dict().items() if value != defaults[key]]


def yaml_scalar(value) -> str:
    """One value as a line of YAML flow style (what --set reads): 0.0002, [q_proj, v_proj], 'a: b'."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


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
        if f.metadata.get("choices") == SWITCHES and isinstance(value, bool):
            return "on" if value else "off"  # configs written before "auto", and YAML, which reads on/off as booleans
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{f.name} = {value!r} is not a valid {getattr(kind, '__name__', kind)} ({exc}).") from None


# The seed recipes, reproduced exactly; selectable in the Train form and by name on the CLI. The seeds trained padded
# batches with gradient checkpointing (peft's prepare_model_for_kbit_training turns it on).
SEED = {"padding_free": False, "gradient_checkpointing": "on", "lr_reference_batch": 0}  # their rates as written
PRESETS: dict[str, JobConfig] = {
    # The embedded model on builtin:basic-math, sized for a CPU: 380 examples in 95 steps of 4, one epoch, rank 16, no
    # gradient checkpointing (memory is plenty there; it costs about 30% more time), a checkpoint and an eval loss
    # every 16 steps. It then scores 100 held-out problems before and after, which showed the gain on this CPU: 4 to
    # 19 of 100 (benchmarks/README.md). 2e-3 as written at its batch of 4. Less did not teach: the square root rule's
    # 5e-4 with the former 64 examples (16 steps) left it repeating <think>, 0 of 32 right; 128 examples at 2e-3
    # taught the reply's form but not the answers, 4 of 100 as the base. Measured with the base in 4-bit (the default
    # then), kept so; quantization auto would train this small base unquantized.
    "offline-default": JobConfig(max_samples=400, per_device_batch_size=4, num_epochs=1, lora_r=16, lora_alpha=32,
                                 learning_rate=2e-3, lr_reference_batch=4, quantization="4bit",
                                 gradient_checkpointing="off", save_steps=16, heldout_problems=100),
    # The embedded model on all of GSM8K's train set (../shared/data when there, else the Hub) with the defaults that
    # taught it most on an H200 (lr 2e-3 at batch 64, 3 epochs, LoRA r64): 1.8% to 9.1% on GSM8K's test, about 6
    # minutes there (benchmarks/README.md, "Defaults that teach"), measured with the defaults of then, 4-bit and
    # gradient checkpointing, kept so: auto would train this base unquantized without checkpointing, 2.2x faster
    # (benchmarks/README.md), but that run's gain on GSM8K is not measured yet.
    "gsm8k-embedded": JobConfig(
        dataset=f"file:{SHARED_GSM8K_TRAIN}" if SHARED_GSM8K_TRAIN.is_file() else "hub:openai/gsm8k:main",
        max_samples=0, eval_fraction=0, save_steps=50, quantization="4bit", gradient_checkpointing="on",
        learning_rate=2e-3,
    ),
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
