"""Training throughput: the seed recipe as written against the app's defaults, on the same GSM8K chats.

    python benchmarks/train_throughput.py --data ../shared/data/gsm8k/train.jsonl --tokenizer DIR \
        --shapes llama3.2-3b gemma3-4b --runs seed default --out results.json

Each shape is a model with random weights in the real published configuration (vocabulary as published), written
once to --work and loaded back through the same code as a job (`embedded`: the real embedded SmolLM2-135M instead).
The tokenizer only turns the chats into ids (ids below every shape's vocabulary). Each run trains until --seconds of
measured time have passed after --warmup optimizer steps, and reports non-padding tokens per second, peak GPU memory
and MFU (--profile: also the GPU's busy share over the last two warm-up steps and its busiest kernels):

    MFU = 6 x parameters x tokens/s / the bf16 matmul rate measured on the same GPU (8192^3 products)

`seed` is the seed notebooks' recipe as written (TRL SFTTrainer, NF4 double-quant, peft's
prepare_model_for_kbit_training, LoRA r16 on all 7 projections, batch 2 x accumulation 8, max_length 2048, padded
batches, gradient checkpointing, paged_adamw_8bit). Every other run is `trainer.train.build_trainer` on
`JobConfig()` with the run's overrides (RUNS), as the worker builds it; `app` is the app's defaults as they are.
Runs train at their peak rate from the first step (no warmup). A figure counts only from a run that trains: each row
records its first and last loss and largest grad norm (`training_check`), and the script exits 1 when a run's loss or
grad norm is not finite or its loss did not fall.

--check-packing compares one padding-free batch's per-token losses with each example alone on the first shape;
--step SHAPE:TOKENS:CKPT times one QLoRA step of a shape too big to write to disk (gemma3-27b), built in memory.
"""

import argparse
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import ALL_PROJECTIONS, JobConfig  # noqa: E402

# Published configurations (config.json of meta-llama/Llama-3.2-3B-Instruct, google/gemma-3-4b-it and
# google/gemma-3-27b-it, text part); "tiny" only checks this script on a CPU.
SHAPES = {
    "llama3.2-3b": dict(
        model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
        max_position_embeddings=131072, hidden_act="silu",
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0,
                         "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},
    ),
    "gemma3-4b": dict(
        model_type="gemma3_text", vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=1024,
        rms_norm_eps=1e-6, max_position_embeddings=131072, tie_word_embeddings=True,
    ),
    "gemma3-27b": dict(
        model_type="gemma3_text", vocab_size=262208, hidden_size=5376, intermediate_size=21504, num_hidden_layers=62,
        num_attention_heads=32, num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=168, sliding_window=1024,
        rms_norm_eps=1e-6, max_position_embeddings=131072, tie_word_embeddings=True,
    ),
    "tiny-gemma3": dict(  # Gemma 3's sliding and full attention layers (5:1), small enough for a CPU
        model_type="gemma3_text", vocab_size=50000, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=32,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        model_type="llama", vocab_size=50000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    ),
}

# Runs: JobConfig overrides on top of the app's defaults ("seed" is built separately, as written). Each spells out
# the settings it was measured with (benchmarks/README.md), so the recorded commands measure the same thing later:
# the results were taken while JobConfig() had per_device_batch_size 16 and no gradient checkpointing ("default"), and
# quantization 4bit for every base (before "auto", issue 18).
Q4 = {"quantization": "4bit"}
B16 = {**Q4, "per_device_batch_size": 16, "gradient_checkpointing": "off", "lora_dropout": 0.05}
RUNS = {
    "app": {},  # the app's defaults as they are now (auto: the embedded base unquantized, no checkpointing)
    "default": B16,
    "ckpt": {**B16, "gradient_checkpointing": "on"},
    "sdpa": {**B16, "attention": "sdpa"},
    "flex": {**B16, "attention": "flex_attention"},
    "batch8": {**B16, "per_device_batch_size": 8},
    "batch32": {**B16, "per_device_batch_size": 32},
    "batch32-ckpt": {**Q4, "per_device_batch_size": 32, "gradient_checkpointing": "on", "lora_dropout": 0.05},
    "no-dropout": {**B16, "lora_dropout": 0.0},
    "app-no-dropout": {**Q4, "per_device_batch_size": 32, "gradient_checkpointing": "on", "lora_dropout": 0.0},
    "batch64-no-dropout": {**Q4, "per_device_batch_size": 64, "gradient_checkpointing": "on", "lora_dropout": 0.0},
    "packing": {**B16, "packing": True, "padding_free": False, "per_device_batch_size": 8},
    "seed-settings": {**Q4, "per_device_batch_size": 2, "gradient_accumulation_steps": 8, "max_seq_length": 2048,
                      "gradient_checkpointing": "on", "optimizer": "paged_adamw_8bit", "padding_free": False,
                      "attention": "sdpa"},
    "liger": B16,  # with Liger's RMSNorm, RoPE and SwiGLU kernels patched in (they stay for the process's later runs)
    # The app's defaults before auto (QLoRA for every base), and what a small model (the embedded one) might drop: the
    # base unquantized in bf16, no recomputed activations
    "qlora": {**Q4, "gradient_checkpointing": "on"},
    "no-ckpt": {**Q4, "gradient_checkpointing": "off"},
    "bf16": {"quantization": "none", "gradient_checkpointing": "on"},
    "bf16-no-ckpt": {"quantization": "none", "gradient_checkpointing": "off"},
}
EMBEDDED_SHAPE = "embedded"  # --shapes: the real embedded SmolLM2-135M-Instruct (trainer/models.py), not random weights


def model_config(shape: str):
    from transformers import AutoConfig

    values = dict(SHAPES[shape])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def parameter_count(config) -> int:
    """Parameters of a model configuration, tied embeddings counted once."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def write_random_model(shape: str, tokenizer_dir: str, folder: Path) -> Path:
    """A checkpoint with random bf16 weights in the shape, with the tokenizer beside it; refused (ValueError) when
    one chat's logits or gradients are not finite, since then nothing measured on it is a model that trains."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checked = folder / "checked.json"  # written last: a folder without it (older, or cut short) is written again
    if checked.exists():
        return folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(shape), dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # Random weights would mostly pick ids past the tokenizer's own (Gemma's 262,208 against SmolLM2's 49,152), which
    # decode to nothing, so the tutor would stream no text; and a random model can fall into repeating one piece of a
    # word, a reply with no space, which the tutor's streamer (as TextStreamer) holds back until it ends. So only the
    # ids that start a word (' the', ' sum'...: 31,985 of SmolLM2's) keep their output rows; every other row is scaled
    # to a tenth, and so are its logits: the largest of 230,000 such logits is about 0.5 times a word logit's spread,
    # the 50th largest word logit about 2.9 times, so sampling from the top 50 writes words. Scaled, not zeroed (issue
    # 18): the embeddings are tied, so these rows are also a prompt's inputs, and a chat starts with ids that start no
    # word ('<|im_start|>system'). Zero inputs stay zero through every layer; there RMSNorm multiplies by
    # 1/sqrt(eps) = 316, and the gradient at those positions grows by hundreds per layer until it overflows: on the
    # 28-layer Llama-3.2-3B shape the grad norm was NaN from the first step. Same shape, same work.
    starts_word = torch.tensor([tokenizer.decode([i]).startswith(" ") for i in range(len(tokenizer))], device=device)
    others = torch.ones(model.config.vocab_size, dtype=torch.bool, device=device)
    others[:len(tokenizer)] = ~starts_word
    with torch.no_grad():
        model.get_output_embeddings().weight[others] *= 0.1
    loss = check_trains(model, tokenizer)
    model.generation_config.top_k = 50  # sampling keeps to the top ids, as published generation configs do
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    checked.write_text(json.dumps({"shape": shape, "one_chat_loss": round(loss, 4), "logits_and_gradients": "finite"}))
    del model
    release()
    return folder


def check_trains(model, tokenizer) -> float:
    """One forward and backward pass on a short tutor chat: its loss, or ValueError when its logits or gradients are
    not finite."""
    from trainer.config import TUTOR_PROMPT

    chat = [{"role": "system", "content": TUTOR_PROMPT}, {"role": "user", "content": "What is 15% of 80?"},
            {"role": "assistant", "content": "<think>80 x 0.15 = 12</think> \\boxed{12}"}]
    ids = tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True)["input_ids"].to(model.device)
    output = model(input_ids=ids, labels=ids)
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    bad = [what for what, ok in [("logits", torch.isfinite(output.logits).all()),
                                  ("gradients", all(torch.isfinite(g).all() for g in grads))] if not ok]
    model.zero_grad(set_to_none=True)
    if bad:
        raise ValueError(f"The random model's {' and '.join(bad)} are not finite on one chat (loss "
                         f"{output.loss.item():.4g}): it cannot train.")
    return output.loss.item()


def training_check(rows: list[dict]) -> dict:
    """Whether a run really trained, from its logged steps (the Trainer's log_history or the worker's progress rows,
    both with `loss` and `grad_norm`): its first and last loss, the largest grad norm, and `problems`, empty when every
    loss and grad norm is finite and the last loss is below the first. A speed figure counts only without problems."""
    steps = [r for r in rows if r.get("loss") is not None]  # not the end-of-training summary, not evaluations
    losses = [float(r["loss"]) for r in steps]
    norms = [float(r["grad_norm"]) for r in steps if r.get("grad_norm") is not None]
    problems = []
    if len(losses) < 2:
        problems.append(f"{len(losses)} logged loss(es): too few to see it fall")
    if not all(map(math.isfinite, losses)):
        problems.append("a loss is not finite")
    if len(norms) < len(losses) or not all(map(math.isfinite, norms)):
        problems.append("a grad norm is not finite, or not logged")
    if len(losses) >= 2 and not losses[-1] < losses[0]:
        problems.append(f"the loss did not fall ({losses[0]:.4g} to {losses[-1]:.4g})")
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "max_grad_norm": max(norms, key=lambda n: n if not math.isnan(n) else math.inf, default=None),
            "problems": problems}


def matmul_tflops(size: int = 8192, repeats: int = 20) -> float:
    """Median bf16 matmul rate on random data (TFLOP/s)."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * size**3 / statistics.median(times) / 1e12


class CountingCollator:
    """Counts the non-padding tokens of every micro-batch the trainer takes."""

    def __init__(self, collator):
        self.collator, self.tokens = collator, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        mask = batch.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return batch


class Stopwatch(TrainerCallback):
    """Starts the clock after `warmup` optimizer steps and stops training `seconds` later."""

    def __init__(self, counter: CountingCollator, warmup: int, seconds: float):
        self.counter, self.warmup, self.seconds = counter, warmup, seconds
        self.start = self.tokens = None
        self.steps = 0
        self.elapsed = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        now = time.perf_counter()
        if state.global_step == self.warmup:
            self.start, self.tokens = now, self.counter.tokens
        elif self.start is not None:
            self.steps, self.elapsed = state.global_step - self.warmup, now - self.start
            if self.elapsed >= self.seconds and self.steps >= 3:
                control.should_training_stop = True


class StepProfile(TrainerCallback):
    """Profiles the GPU over optimizer steps `first` to `last` (before the clock starts): the kernels' busy time
    against the wall time (far less means the host sets the pace, not the GPU) and the busiest kernels."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.profiler, self.started, self.report = first, last, None, 0.0, {}

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.first - 1 and torch.cuda.is_available():
            from torch.profiler import ProfilerActivity, profile

            sync()
            self.profiler = profile(activities=[ProfilerActivity.CUDA])
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.last and self.profiler is not None:
            sync()
            wall = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            events = self.profiler.key_averages()
            busy = sum(event.self_device_time_total for event in events) / 1e6
            self.report = {"steps": self.last - self.first + 1, "wall_s": round(wall, 3), "gpu_busy_s": round(busy, 3),
                           "gpu_busy_share": round(busy / wall, 3),
                           "kernels": sum(event.count for event in events if event.self_device_time_total > 0),
                           "top": events.table(sort_by="self_device_time_total", row_limit=12)}
            self.profiler = None


def seed_trainer(model_dir: str, tokenizer, train_ds, out: Path, max_steps: int):
    """The seed notebooks' recipe as written, at its peak rate from the first step (see run_one)."""
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map="auto")
    model = prepare_model_for_kbit_training(model)  # gradient checkpointing; norms and embeddings in fp32
    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=2, gradient_accumulation_steps=8, max_length=2048,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0, optim="paged_adamw_8bit", bf16=True,
        activation_checkpointing=True, logging_steps=1, save_strategy="no", max_steps=max_steps, report_to=[],
        use_cpu=not torch.cuda.is_available(),  # a CPU only checks this script
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=ALL_PROJECTIONS, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer, peft_config=lora)


def app_trainer(config: JobConfig, work: Path):
    """The worker's own trainer for `config`, in a job folder under a scratch data root."""
    from trainer import jobs
    from trainer.train import build_trainer

    os.environ["MATH_STUDIO_HOME"] = str(work / "studio")
    path = jobs.create_job(config, name="bench")
    trainer, _ = build_trainer(config, path)
    return trainer


def apply_liger(shape: str) -> None:
    from liger_kernel.transformers import apply_liger_kernel_to_gemma3_text, apply_liger_kernel_to_llama

    patch = apply_liger_kernel_to_llama if SHAPES[shape]["model_type"] == "llama" else apply_liger_kernel_to_gemma3_text
    patch(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False)


def packing_check(model_dir: Path, data: str, work: Path) -> dict:
    """Per-token losses of one padding-free batch against each example alone, with the app's defaults.

    Returns the largest and mean absolute differences for the default attention, for sdpa's position-id mask, and
    for plain causal attention over the whole row (which lets examples see each other: it should differ).
    """
    config = JobConfig(base_model=str(model_dir), dataset=f"file:{data}", max_samples=16, eval_fraction=0,
                       per_device_batch_size=16, lora_dropout=0.0)
    trainer = app_trainer(config, work)
    model = trainer.model.eval()
    batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in
             next(iter(trainer.get_train_dataloader())).items()}
    starts = batch["cu_seq_lens_q"].tolist()

    def losses(input_ids, labels, **extra):
        with torch.no_grad():
            return -model(input_ids=input_ids, labels=labels, fused_lm_head=True, **extra).log_probs[0].float()

    def alone(start, end, implementation):
        extra = {}
        if implementation == "varlen":
            cu = torch.tensor([0, end - start], device=model.device, dtype=torch.int32)
            extra = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": end - start, "max_length_k": end - start}
        return losses(batch["input_ids"][:, start:end], batch["labels"][:, start:end], **extra)

    def compare(packed, implementation):
        diffs = torch.cat([(packed[s : e - 1] - alone(s, e, implementation)).abs() for s, e in zip(starts, starts[1:])])
        return {"max_abs": round(diffs.max().item(), 5), "mean_abs": round(diffs.mean().item(), 6)}

    result = {"examples": len(starts) - 1, "tokens": starts[-1], "dtype": str(model.dtype)}
    default = model.config._attn_implementation
    result[default] = compare(losses(**batch), default)
    model.set_attn_implementation("sdpa")
    result["sdpa"] = compare(losses(**batch), "sdpa")
    running = torch.arange(starts[-1], device=model.device)[None]
    result["causal_over_row"] = compare(losses(batch["input_ids"], batch["labels"], position_ids=running), "sdpa")
    del trainer, model
    release()
    return result


def qlora_step(shape: str, tokens: int, checkpointing: bool, data: str, tokenizer_dir: str) -> dict:
    """One QLoRA optimizer step of a big shape, built in bf16 on the GPU and quantized to NF4 in place (its
    checkpoint would not fit the disk). LoRA r16 on all 7 projections, the app's padding-free batches and attention,
    TRL's fused LM head. Returns step times and the peak memory of the steps (building excluded)."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    from trl.trainer.utils import add_fused_lm_head

    import trainer.train  # noqa: F401 - registers the varlen attention
    from trainer.data import build_datasets

    device = "cuda" if torch.cuda.is_available() else "cpu"  # a CPU only checks this script
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(shape), dtype=torch.bfloat16,
                                                 attn_implementation="varlen" if device == "cuda" else "sdpa")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name != "lm_head":
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False, device="meta",
                                          compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
                layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4", module=layer).to(device)
                setattr(parent, name, layer)
    model.is_loaded_in_4bit = True
    model.requires_grad_(False)
    add_fused_lm_head(model, outputs=("log_probs",))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=ALL_PROJECTIONS,
                                             task_type="CAUSAL_LM"))
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train_ds, _ = build_datasets(JobConfig(dataset=f"file:{data}", max_samples=400, eval_fraction=0), tokenizer)
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    rows, batches = [], []
    for row in train_ds:  # examples end to end, up to `tokens` per batch
        if sum(len(r["input_ids"]) for r in rows) + len(row["input_ids"]) > tokens:
            batches.append(collate(rows))
            rows = []
        rows.append(row)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    reset_peak()
    times, counts, logged = [], [], []
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batches[0].items()}
    for _ in range(3):  # the same batch each step, so that its loss must fall (training_check)
        sync()
        start = time.perf_counter()
        output = model(**batch, fused_lm_head=True)
        output.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # as the Trainer clips (max_grad_norm 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        counts.append(batch["input_ids"].numel())
        logged.append({"loss": output.loss.item(), "grad_norm": norm.item()})
    result = {"shape": shape, "parameters": parameter_count(model_config(shape)),
              "tokens_per_step": counts, "checkpointing": checkpointing, "step_s": [round(t, 3) for t in times],
              "tokens_per_s_after_first": round(sum(counts[1:]) / sum(times[1:]), 1), **peak_memory(),
              **training_check(logged)}
    del model, optimizer, output
    release()
    return result


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_one(shape: str, run: str, model_dir: Path, data: str, samples: int, warmup: int, seconds: float,
            work: Path, params: int, peak_tflops: float | None, profile: bool = False) -> dict:
    from transformers import AutoTokenizer

    from trainer.data import build_datasets

    overrides = RUNS.get(run, {})
    # No warmup: a run of seconds is a few dozen of its 10^5 steps, which a 3% warmup would keep at a rate near 0,
    # where the loss cannot fall (training_check). The rate's schedule does not change the work of a step.
    config = JobConfig(base_model=str(model_dir), dataset=f"file:{data}", max_samples=samples, eval_fraction=0,
                       save_steps=10**6, max_steps=10**5, warmup_ratio=0, **overrides)
    reset_peak()
    started = time.perf_counter()
    if run == "seed":
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        train_ds, _ = build_datasets(JobConfig(dataset=config.dataset, max_samples=samples, eval_fraction=0,
                                               max_seq_length=2048), tokenizer)
        trainer = seed_trainer(str(model_dir), tokenizer, train_ds, work / "seed-out", max_steps=10**5)
    else:
        if run == "liger":
            apply_liger(shape)
        trainer = app_trainer(config, work)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    profiler = StepProfile(max(warmup - 1, 1), warmup) if profile else None
    if profiler:
        trainer.add_callback(profiler)  # before the stopwatch: the profile is put away before the clock starts
    watch = Stopwatch(counter, warmup, seconds)
    trainer.add_callback(watch)
    load_s = time.perf_counter() - started
    row = {"shape": shape, "run": run, "overrides": overrides, "parameters": params, "load_s": round(load_s, 1),
           "attention": trainer.model.config._attn_implementation,
           "loaded_in_4bit": bool(getattr(trainer.model, "is_loaded_in_4bit", False)),  # what auto decided, for "app"
           "checkpointing": bool(trainer.args.activation_checkpointing)}
    try:
        trainer.train()
        tokens_per_s = (counter.tokens - watch.tokens) / watch.elapsed
        row.update(steps_measured=watch.steps, seconds_measured=round(watch.elapsed, 2),
                   tokens_measured=counter.tokens - watch.tokens, tokens_per_s=round(tokens_per_s, 1),
                   **training_check(trainer.state.log_history))
        if peak_tflops:
            row["mfu"] = round(6 * params * tokens_per_s / (peak_tflops * 1e12), 4)
        if profiler and profiler.report:
            row["profile"] = profiler.report
            print(profiler.report["top"], flush=True)
    except torch.OutOfMemoryError as exc:
        row["error"] = f"out of memory: {str(exc)[:200]}"
    row.update(peak_memory())
    del trainer, counter, watch
    release()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="GSM8K train.jsonl")
    parser.add_argument("--tokenizer", required=True, help="a folder with a chat tokenizer (SmolLM2's)")
    parser.add_argument("--shapes", nargs="*", default=["llama3.2-3b", "gemma3-4b"], choices=[*SHAPES, EMBEDDED_SHAPE])
    parser.add_argument("--runs", nargs="*", default=["seed", "app"], choices=["seed", *RUNS])
    parser.add_argument("--samples", type=int, default=2000, help="GSM8K chats to train on")
    parser.add_argument("--warmup", type=int, default=3, help="optimizer steps before the clock starts")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per run")
    parser.add_argument("--work", default=tempfile.gettempdir() + "/train-throughput", help="scratch folder")
    parser.add_argument("--check-packing", action="store_true", help="first compare packed and unpacked losses")
    parser.add_argument("--step", nargs="*", default=[], metavar="SHAPE:TOKENS:CKPT",
                        help="one QLoRA step of a shape built in memory, e.g. gemma3-27b:2048:0 (CKPT 1 or 0)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the GPU over the last 2 warm-up steps of each run (busy time, busiest kernels)")
    parser.add_argument("--out", default="", help="write the results JSON here")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "versions": {m.__name__: m.__version__ for m in map(__import__, ["torch", "transformers", "trl", "peft"])},
              "command": " ".join(sys.argv), "runs": []}
    peak = matmul_tflops() if torch.cuda.is_available() else None
    result["bf16_matmul_tflops"] = round(peak, 1) if peak else None

    def save():
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    for spec in args.step:
        shape, tokens, checkpointing = spec.split(":")
        try:
            row = qlora_step(shape, int(tokens), checkpointing == "1", args.data, args.tokenizer)
        except Exception as exc:  # noqa: BLE001 - out of memory is the answer to "does it fit"; recorded
            row = {"shape": shape, "tokens": int(tokens), "checkpointing": checkpointing == "1",
                   "error": f"{type(exc).__name__}: {exc}"[:500]}
        release()  # outside the except block, whose traceback holds the model
        result.setdefault("steps", []).append(row)
        print(json.dumps(row), flush=True)
        save()
    for index, shape in enumerate(args.shapes):
        if shape == EMBEDDED_SHAPE:
            from transformers import AutoConfig

            from trainer.models import EMBEDDED, resolve_model

            os.environ["MATH_STUDIO_HOME"] = str(work / "studio")  # where app_trainer's jobs go: converted once there
            model_dir = Path(resolve_model(EMBEDDED))
            params = parameter_count(AutoConfig.from_pretrained(model_dir))
        else:
            params = parameter_count(model_config(shape))
            model_dir = write_random_model(shape, args.tokenizer, work / shape)
        if args.check_packing and index == 0:
            result["packing_check"] = {"shape": shape, **packing_check(model_dir, args.data, work)}
            print(json.dumps(result["packing_check"]), flush=True)
            save()
        for run in args.runs:
            try:
                row = run_one(shape, run, model_dir, args.data, args.samples, args.warmup if run != "seed" else 1,
                              args.seconds, work, params, peak, args.profile)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is a result; the others go on
                row = {"shape": shape, "run": run, "attention": "-", "error": f"{type(exc).__name__}: {exc}"[:500]}
            release()
            result["runs"].append(row)
            print(json.dumps(row), flush=True)
            save()
    for row in result["runs"]:
        print(f"{row['shape']:12s} {row['run']:14s} {row.get('tokens_per_s', row.get('error'))!s:>10} tok/s  "
              f"MFU {row.get('mfu', '-')!s:6}  peak {row.get('peak_reserved_gib', '-')} GiB  {row['attention']}  "
              f"loss {row.get('first_loss')} -> {row.get('last_loss')}  {'; '.join(row.get('problems', []))}")
    refused = [row for row in result["runs"] + result.get("steps", []) if row.get("problems")]
    for row in refused:
        print(f"REFUSED {row['shape']} {row.get('run', 'step')}: not a run that trains: {'; '.join(row['problems'])}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
