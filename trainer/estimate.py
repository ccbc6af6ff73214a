"""Before Launch: what a training job will take on this machine: optimizer steps, tokens, time and peak memory.

Rough by design, and it says so. The figures come from:
  - the data preview's token counts (trainer/data.py's `preview`: the examples the job takes, their lengths);
  - the Trainer's own step count (ceil of batches over accumulation, times epochs, or max_steps);
  - throughput measured on this machine (tokens/s in progress.jsonl of a completed job on the same base model and
    device, between its first and last training step: loading the model is not counted), else a stated rough rate:
    6 x parameters FLOP per token at a typical rate for the device (ROUGH_FLOPS);
  - the settings the worker decides for the base when they are "auto" (quantization, gradient checkpointing: the
    same rule, trainer/models.py's sized_for_base, on the parameter count read here);
  - peak memory = base weights at the quantization's bytes per weight + LoRA parameters with their gradient and two
    AdamW moments + activations + the runtime (RUNTIME_BYTES). On a CPU the weights count whole: bitsandbytes reads
    the checkpoint at full precision before quantizing it, and the process keeps that memory (the embedded model at
    batch 4 peaked at 1.93 GiB RSS in 4bit against 2.07 unquantized on this CPU; the formula gives 1.7 for both).
    Activations: tokens per micro-batch x hidden size x
    bytes per value x (layers x 1 + ACTIVATION_VALUES) with gradient checkpointing (each layer keeps its input, one
    layer at a time is recomputed whole), or x layers x ACTIVATION_VALUES without.
ACTIVATION_VALUES is fitted to the H200 measurements in benchmarks/README.md without checkpointing (Llama-3.2-3B at
batch 16: 22.8 GiB; Gemma-3-27B at 1,900 tokens: 63.5 GiB); with checkpointing the formula gives 8.3 GiB for
Llama-3.2-3B at batch 64 (measured 6.8) and 18 GiB for Gemma-3-27B (measured 18.0).
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from trainer import store
from trainer.config import JobConfig
from trainer.data import PREVIEW_LIMIT, split_indices
from trainer.models import sized_for_base

GiB = 2**30
# Bytes per weight of the decoder's linear layers: 4-bit NF4 (absmax per 64 weights: fp32, or 8-bit with double
# quantization) and 8-bit; unquantized weights take the training dtype's bytes.
QUANTIZED_BYTES = {("4bit", False): 0.5 + 4 / 64, ("4bit", True): 0.5 + 1 / 64 + 4 / (64 * 256), ("8bit", False): 1.0,
                   ("8bit", True): 1.0}
ADAPTER_COPIES = 4  # a LoRA weight, its gradient and AdamW's two moments, each in the training dtype
ACTIVATION_VALUES = 36  # values kept per token, per hidden unit, per layer, for the backward pass (fitted: see above)
# CPU: Python with torch, transformers, TRL and bitsandbytes (a 3M-parameter model's job peaked at 1.08 GiB RSS on this
# CPU, sampled every 0.5 s); GPU: CUDA's context and the allocator's slack
RUNTIME_BYTES = {"cpu": 1.05 * GiB, "gpu": 1 * GiB}
ROUGH_FLOPS = {"cpu": 10e9, "gpu": 100e12}  # per core / per GPU, as trained here: a guess until a job has run
FLOP_PER_TOKEN = 6  # x parameters: forward and backward of one token


@dataclass(frozen=True)
class ModelShape:
    params: int  # every parameter, tied ones once
    quantizable: int  # weights of the linear layers but the output head: what 4bit and 8bit quantize
    hidden: int
    layers: int
    lora_per_rank: int  # LoRA parameters per unit of rank on the job's target modules (in + out features of each)


@dataclass(frozen=True)
class Machine:
    name: str  # as the worker writes it into status.json's "device" (trainer/train.py's device_name)
    gpus: int  # 0: the CPU
    cores: int
    bf16: bool
    free_bytes: int  # free RAM on the CPU, free memory of the fullest GPU

    @property
    def kind(self) -> str:
        return "gpu" if self.gpus else "cpu"


@dataclass(frozen=True)
class DataSize:
    examples: int  # what the job takes (after max_samples), held-out ones included
    mean_tokens: float  # per example as trained: cut at max_seq_length
    longest: int  # tokens of the longest example as trained
    at_least: bool  # the preview read only its first PREVIEW_LIMIT examples: the dataset may hold more


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float
    source: str  # "measured on this machine in job X ..." or "rough: ..."


@dataclass(frozen=True)
class Estimate:
    data: DataSize
    steps: int
    tokens: int  # trained, counted as the worker's tokens/s counts them (no padding)
    seconds: float
    throughput: Throughput
    memory: dict[str, float]  # bytes: weights, adapter, activations, runtime
    settings: dict[str, str]  # quantization and gradient_checkpointing as the job will train, "auto" decided
    free_bytes: int
    device: str  # "cpu" or "gpu"
    remedies: list[str]  # what would lower the peak, for this job on this device

    @property
    def peak_bytes(self) -> float:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.free_bytes


def data_size(preview: dict, config: JobConfig) -> DataSize:
    """The job's data as the preview measured it (`preview`'s lengths and count)."""
    trained = [min(length, config.max_seq_length) for length in preview["lengths"]]
    capped = preview["count"] >= PREVIEW_LIMIT and config.max_samples != preview["count"]
    return DataSize(preview["count"], sum(trained) / len(trained), max(trained), capped)


def training_steps(config: JobConfig, data: DataSize, processes: int = 1) -> tuple[int, int]:
    """(optimizer steps, tokens trained), as the Trainer counts steps: batches per process per epoch over gradient
    accumulation, rounded up, times the epochs (rounded up); or max_steps."""
    train = data.examples - len(split_indices(data.examples, config.eval_fraction, config.seed)[1])
    rows = math.ceil(train * data.mean_tokens / config.max_seq_length) if config.packing else train
    batches = math.ceil(math.ceil(rows / processes) / config.per_device_batch_size)
    per_epoch = max(math.ceil(batches / config.gradient_accumulation_steps), 1)
    if config.max_steps > 0:
        per_row = config.max_seq_length if config.packing else data.mean_tokens
        rows_seen = config.max_steps * config.gradient_accumulation_steps * config.per_device_batch_size * processes
        return config.max_steps, round(rows_seen * per_row)
    return math.ceil(config.num_epochs * per_epoch), round(config.num_epochs * train * data.mean_tokens)


def dtype_bytes(config: JobConfig, machine: Machine) -> int:
    """bf16 where the GPU has it and the job asks for it, else fp32 (as trainer/train.py's use_bf16)."""
    return 2 if config.bf16 and machine.bf16 else 4


def peak_memory(config: JobConfig, shape: ModelShape, micro_batch_tokens: int, value_bytes: int,
                device: str) -> dict[str, float]:
    """Peak memory of one training process in bytes, by part (see the module's docstring for the formula)."""
    quantized = value_bytes if device == "cpu" else QUANTIZED_BYTES.get((config.quantization, config.double_quant),
                                                                        value_bytes)
    weights = shape.quantizable * quantized + (shape.params - shape.quantizable) * value_bytes
    adapter = shape.lora_per_rank * config.lora_r * ADAPTER_COPIES * value_bytes
    per_layer = micro_batch_tokens * shape.hidden * value_bytes
    checkpointed = config.gradient_checkpointing == "on"
    kept = shape.layers + ACTIVATION_VALUES if checkpointed else shape.layers * ACTIVATION_VALUES
    return {"weights": weights, "adapter": adapter, "activations": per_layer * kept, "runtime": RUNTIME_BYTES[device]}


def micro_batch_tokens(config: JobConfig, data: DataSize) -> int:
    """Tokens in the largest micro-batch: full rows when packed, else every example as long as the longest."""
    return config.per_device_batch_size * (config.max_seq_length if config.packing else data.longest)


def rough_throughput(shape: ModelShape, machine: Machine) -> Throughput:
    units = machine.gpus or machine.cores
    rate = ROUGH_FLOPS[machine.kind] * units
    return Throughput(rate / (FLOP_PER_TOKEN * shape.params),
                      f"rough: {FLOP_PER_TOKEN} x {shape.params / 1e6:,.0f}M parameters FLOP per token at "
                      f"{ROUGH_FLOPS[machine.kind] / 1e9:,.0f} GFLOP/s per {'GPU' if machine.gpus else 'core'}; "
                      "no completed job on this base model and device yet")


def steady_rate(rows: list[dict]) -> float:
    """tokens/s of a run between its first and last training step, from progress rows (each row's tokens_per_second
    and elapsed_s count from the worker's start, model loading included); the last row's own when there is one."""
    steps = [r for r in rows if r.get("loss") is not None and isinstance(r.get("tokens_per_second"), (int, float))
             and isinstance(r.get("elapsed_s"), (int, float))]
    if not steps:
        return 0.0
    first, last = steps[0], steps[-1]
    if last["elapsed_s"] <= first["elapsed_s"]:
        return float(last["tokens_per_second"])
    tokens = last["tokens_per_second"] * last["elapsed_s"] - first["tokens_per_second"] * first["elapsed_s"]
    return tokens / (last["elapsed_s"] - first["elapsed_s"])


@dataclass(frozen=True)
class Run:
    """A completed training job as the estimate reads it."""
    job_id: str
    device: str
    config: JobConfig
    tokens_per_s: float


COMPARED = ["quantization", "per_device_batch_size", "max_seq_length", "gradient_checkpointing", "padding_free",
            "packing", "lora_r", "target_modules"]  # settings that change tokens/s, shown when they differ


def measured_throughput(config: JobConfig, device: str, runs: list[Run]) -> Throughput | None:
    """tokens/s of the completed run on the same base model, method and device whose speed-setting keys match the
    job's most (the newest among equals); None when there is none."""
    same = [r for r in runs if r.device == device and r.tokens_per_s > 0
            and (r.config.base_model, r.config.method) == (config.base_model, config.method)]
    if not same:
        return None

    def differing(run: Run) -> list[str]:
        return [key for key in COMPARED if getattr(run.config, key) != getattr(config, key)]

    best = min(reversed(same), key=lambda r: len(differing(r)))  # runs oldest first: ties go to the newest
    other = differing(best)
    return Throughput(best.tokens_per_s, f"measured on this machine in job {best.job_id}"
                      + (f" (its {', '.join(other)} differ)" if other else " (same settings)"))


def estimate(config: JobConfig, data: DataSize, shape: ModelShape, machine: Machine,
             throughput: Throughput) -> Estimate:
    """`config` as the worker trains it: its "auto" settings decided for the base's size first."""
    config = sized_for_base(config, shape.params)
    steps, tokens = training_steps(config, data, max(machine.gpus, 1))
    memory = peak_memory(config, shape, micro_batch_tokens(config, data), dtype_bytes(config, machine), machine.kind)
    settings = {"quantization": config.quantization, "gradient_checkpointing": config.gradient_checkpointing}
    return Estimate(data, steps, tokens, tokens / throughput.tokens_per_s, throughput, memory, settings,
                    machine.free_bytes, machine.kind, remedies(config, machine.kind))


def remedies(config: JobConfig, device: str) -> list[str]:
    """What lowers this job's peak memory, of the settings it has now."""
    found = []
    if config.per_device_batch_size > 1:
        found.append("lower per_device_batch_size (raise gradient_accumulation_steps to keep the batch)")
    found.append("lower max_seq_length")
    if config.gradient_checkpointing != "on":
        found.append("turn on gradient_checkpointing")
    if device == "gpu" and config.quantization != "4bit":
        found.append("quantize to 4bit")
    return found


def duration_words(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"about {seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"about {seconds / 3600:.1f} h"
    return f"about {seconds / 86400:.0f} days"


def summary(e: Estimate) -> str:
    """The estimate in a few lines of Markdown, with a warning when the job will not fit."""
    more = "at least " if e.data.at_least else ""
    parts = ", ".join(f"{name} {size / GiB:.2f}" for name, size in e.memory.items())
    memory = "RAM" if e.device == "cpu" else "GPU memory"
    lines = [
        f"**Estimate for this machine:** {more}{e.steps:,} step{'s' * (e.steps != 1)} · {more}{e.tokens:,} tokens "
        f"({more}{e.data.examples:,} examples, {e.data.mean_tokens:,.0f} tokens on average) · "
        f"{duration_words(e.seconds)} of training at {e.throughput.tokens_per_s:,.0f} tokens/s "
        f"({e.throughput.source}) · peak memory about **{e.peak_bytes / GiB:.1f} GiB** ({parts} GiB) of "
        f"{e.free_bytes / GiB:.1f} GiB {memory} free now. Trains with quantization {e.settings['quantization']}, "
        f"gradient checkpointing {e.settings['gradient_checkpointing']}."]
    if e.data.at_least:
        lines.append(f"The preview reads the first {PREVIEW_LIMIT:,} examples only: the dataset may hold more.")
    if not e.fits:
        lines.append(f"**Will not fit:** about {e.peak_bytes / GiB:.1f} GiB needed, {e.free_bytes / GiB:.1f} GiB "
                     f"{memory} free: {'; '.join(e.remedies)}.")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- what the estimate reads: the model, the machine, jobs

def model_shape(model_path: str, target_modules: list[str]) -> ModelShape:
    """The model's sizes, built on the meta device (no weights loaded)."""
    import torch
    from transformers import AutoConfig

    from trainer.models import meta_model

    config = AutoConfig.from_pretrained(model_path)
    model = meta_model(config)
    linear = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name}
    targeted = [m for name, m in linear.items() if "all-linear" in target_modules
                or name.rsplit(".", 1)[-1] in target_modules]
    text = config.get_text_config()
    return ModelShape(params=sum(p.numel() for p in model.parameters()),
                      quantizable=sum(m.weight.numel() for m in linear.values()), hidden=text.hidden_size,
                      layers=text.num_hidden_layers,
                      lora_per_rank=sum(m.in_features + m.out_features for m in targeted))


def this_machine() -> Machine:
    """This machine as a training job would use it: every GPU (data parallel), else the CPU."""
    import psutil
    import torch

    from trainer.train import device_name

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        free = min(torch.cuda.mem_get_info(i)[0] for i in range(gpus))
        return Machine(device_name(), gpus, cores, torch.cuda.is_bf16_supported(), free)
    return Machine(device_name(), 0, cores, False, psutil.virtual_memory().available)


def past_runs() -> list[Run]:
    """Completed training jobs with their steady tokens/s, oldest first."""
    runs = []
    for job in store.job_folders():
        status = store.status_or_damage(job)
        if status["state"] != store.State.COMPLETED or status.get("kind", "train") != "train":
            continue
        rate = steady_rate(store.read_progress(job))
        try:
            config = store.config_as_trained(job, status)
        except store.Damaged:
            continue
        if rate > 0:
            runs.append(Run(job.name, str(status.get("device") or ""), config, rate))
    return runs


def estimate_job(config: JobConfig, model_path: str | Path, preview: dict) -> Estimate:
    """The estimate for `config` on this machine, from the data preview of the same config."""
    shape = model_shape(str(model_path), config.target_modules)
    config = sized_for_base(config, shape.params)  # past runs are compared by what they trained with
    machine = this_machine()
    throughput = measured_throughput(config, machine.name, past_runs()) or rough_throughput(shape, machine)
    return estimate(config, data_size(preview, config), shape, machine, throughput)
