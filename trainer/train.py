"""The training worker: runs one job in this process with TRL's SFTTrainer, writing its state to the job folder.

Started by the app (through `python -m trainer train --config ... --job ...`) or by a user in the foreground.
Exceptions are caught only at the top (`run_job`), recorded as `failed` with advice, and the process exits non-zero.
"""

import _thread
import errno
import functools
import inspect
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch
from transformers import AttentionInterface, TrainerCallback

from trainer.config import JobConfig
from trainer.models import OUT_OF_MEMORY_RE
from trainer.store import (
    State, adapter_dir, config_file, partial_adapter, append_progress, cancel_flag, checkpoints_dir,
    heldout_report_file, now, read_config, read_json, read_metrics, read_progress, read_status, update_status,
    write_metrics, write_progress,
)

log = logging.getLogger("trainer")
DISK_FULL_RE = re.compile(r"no space left on device|os error 28|StorageFull", re.I)  # as OSError, Rust and safetensors
LOW_DISK_BYTES = 1 << 20  # less free than this when a write failed: the disk is full (torch.save does not say so)
ROOT = Path(__file__).resolve().parents[1]  # where `python -m tutor` runs
HELDOUT_DATA = "builtin:basic-math"  # its test split draws other problems than the training split (trainer/data.py)
HELDOUT_MAX_NEW_TOKENS = 256  # basic-math's worked replies take up to about 120 tokens
RESOLVED = ("quantization", "gradient_checkpointing", "learning_rate")  # "auto" settings the worker decides for the base


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({psutil.cpu_count()} cores)"


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch` (the process that writes the job folder), or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return psutil.Process().memory_info().rss / 2**20


def complete(checkpoint: Path) -> bool:
    """The Trainer finished writing this checkpoint: its state file, written last, is there and whole."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):  # absent, or cut short by a kill or a full disk
        return False


def last_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint."""
    done = [c for c in checkpoints_dir(path).glob("checkpoint-*") if complete(c)]
    return max(done, key=lambda c: int(c.name.split("-")[1]), default=None)


def remove_incomplete(path: Path) -> None:
    """Delete checkpoints (and an adapter) whose writing a kill or a full disk cut short: they are never used, and
    they hold the disk space that recording the failure needs."""
    for checkpoint in checkpoints_dir(path).glob("checkpoint-*"):
        if not complete(checkpoint):
            shutil.rmtree(checkpoint, ignore_errors=True)
    shutil.rmtree(partial_adapter(path), ignore_errors=True)


class Diverged(ValueError):
    """The loss or the gradient norm is no longer a finite number: the weights of that step are broken."""


# Steps in a row whose gradient was not finite before the job fails: one such step is a batch that overflowed (a GRPO
# step on an H200 had a NaN gradient norm at its last step, between finite ones), several in a row are a divergence.
MAX_SKIPPED_IN_A_ROW = 3


class JobCallback(TrainerCallback):
    """Writes progress.jsonl and status.json as training goes, stops cleanly when CANCEL appears, skips an optimizer
    step whose gradient is not finite (its row says `skipped`), and fails the job when MAX_SKIPPED_IN_A_ROW steps in
    a row are skipped or the loss stops being finite (before that step's weights are saved anywhere)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.time()
        self.start_step = 0
        self.tokens_at_start = 0
        self.skipped_in_a_row = 0
        self.skipped_step = None  # the optimizer step skipped last

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        self.tokens_at_start = state.num_input_tokens_seen
        if state.is_world_process_zero:
            update_status(self.path, total_steps=state.max_steps, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if cancel_requested(self.path, args.device):
            control.should_save = True  # a checkpoint at this very step, so resume continues from here
            control.should_training_stop = True
        if state.is_world_process_zero:
            update_status(self.path, step=state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        """After clipping, before the update: a gradient that is not finite anywhere (clipping by a NaN norm spreads
        it to every weight) is dropped, so the optimizer leaves the weights as they were for this step."""
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).float()).all()):
            self.skipped_in_a_row = 0
            return
        for parameter in model.parameters():
            parameter.grad = None  # torch's and bitsandbytes' optimizers skip a parameter without a gradient
        self.skipped_in_a_row += 1
        self.skipped_step = state.global_step + 1  # the step being taken: global_step counts it after the update
        log.warning("step %d: the gradient is not finite; this step is skipped, the weights stay as they were",
                    self.skipped_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or (logs.get("loss") is None and logs.get("eval_loss") is None):
            return  # another data-parallel process, or the end-of-training summary rather than a step
        elapsed = time.time() - self.started
        done = max(state.global_step - self.start_step, 1)
        row = {
            "step": state.global_step, "total_steps": state.max_steps, "epoch": round(state.epoch or 0, 4),
            "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"), "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_second": round((state.num_input_tokens_seen - self.tokens_at_start) / max(elapsed, 1e-9), 1),
            "memory_mb": round(memory_mb(), 1), "elapsed_s": round(elapsed, 1),
            "eta_s": round(elapsed / done * (state.max_steps - state.global_step), 1), "time": now(),
            **reward_columns(logs),
        }
        skipped = self.skipped_step == state.global_step
        if skipped:
            row["skipped"] = True
        append_progress(self.path, row)
        broken = [key for key in ("loss", "grad_norm") if row[key] is not None and not math.isfinite(row[key])
                  and not (key == "grad_norm" and skipped and self.skipped_in_a_row < MAX_SKIPPED_IN_A_ROW)]
        if broken:  # logged before the step's checkpoint is written: the last checkpoint saved is still sound
            raise Diverged(
                f"Training diverged at step {state.global_step}: {' and '.join(broken)} became {row[broken[0]]}"
                f"{f' ({self.skipped_in_a_row} steps in a row)' if skipped else ''}, so the weights are broken and "
                "are not saved. Lower the learning rate (grpo_learning_rate for grpo) or turn off bf16; Resume "
                "continues from the last checkpoint, before the fault.")


# GRPO's metrics (TRL's log keys) under the names progress rows give them; SFT logs none of them.
REWARD_METRICS = {"reward": "reward", "reward_std": "reward_std", "zero_std_share": "frac_reward_zero_std",
                  "completion_length": "completions/mean_length", "clipped_share": "completions/clipped_ratio",
                  "kl": "kl"}


def reward_columns(logs: dict) -> dict:
    """The reward, its parts (`reward_answer` from TRL's rewards/answer_reward/mean, ...), the share of groups whose
    replies all scored alike (no learning signal), reply length and KL, where logged."""
    row = {name: logs[key] for name, key in REWARD_METRICS.items() if key in logs}
    row.update({f"reward_{key.split('/')[1].removesuffix('_reward')}": value for key, value in logs.items()
                if key.startswith("rewards/") and key.endswith("/mean")})
    return row


def cancel_requested(path: Path, device) -> bool:
    """CANCEL exists; data-parallel processes agree on it, so that they all stop at the same step."""
    cancel = cancel_flag(path).exists()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(cancel)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        cancel = bool(flag.item())
    return cancel


def use_bf16(config: JobConfig) -> bool:
    """bf16 where the GPU has it; CPUs and older GPUs train in fp32."""
    return config.bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def attention_for(config: JobConfig) -> str:
    """The attention implementation for this job on this machine.

    "auto" is PyTorch's varlen flash kernel for SFT's padding-free batches on a GPU with bf16 (Ampere or newer), and
    sdpa elsewhere, which keeps padding-free examples apart with a mask built from their position ids. GRPO generates
    and scores padded batches, which the varlen kernel cannot take.
    """
    if config.attention != "auto":
        return config.attention
    flat = config.method == "sft" and (config.padding_free or config.packing)
    if flat and use_bf16(config) and torch.cuda.get_device_capability() >= (8, 0):
        return "varlen"
    return "sdpa"


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     softcap=None, cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """Causal attention within each example of a padding-free row, through torch.nn.attention.varlen.

    The example boundaries are the `cu_seq_lens_q` that TRL's padding-free collator passes with every batch, so no
    mask is built and no token attends across examples. query, key, value: (1, heads, tokens, head_dim).
    """
    from torch.nn.attention.varlen import varlen_attn

    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError("attention = varlen needs padding-free batches: set padding_free: true, or attention: sdpa.")
    if softcap or (dropout and module.training):
        raise ValueError("attention = varlen has no attention softcapping or dropout; set attention: sdpa.")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, head_dim)
    grouped = {}
    if k.shape[1] != q.shape[1]:  # grouped-query attention: torch 2.13 shares kv heads in the kernel, 2.11 does not
        if "enable_gqa" in varlen_parameters():
            grouped = {"enable_gqa": True}
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    cu, longest = cu_seq_lens_q.to(q.device, torch.int32), int(max_length_q)
    window = (sliding_window - 1 if sliding_window else -1, 0)  # (-1, 0): causal; (w - 1, 0): the last w tokens
    out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=window, **grouped)
    return out[None], None


@functools.cache
def varlen_parameters() -> set[str]:
    from torch.nn.attention.varlen import varlen_attn

    return set(inspect.signature(varlen_attn).parameters)


AttentionInterface.register("varlen", varlen_attention)


def load_base(config: JobConfig, model_path: str):
    """The base model for LoRA: quantized as configured (once sized_for_model has decided "auto"), in bf16 or fp32,
    with this machine's attention kernel.

    Under `accelerate launch` every process holds a whole copy on its own GPU (data parallel); a single process
    spreads a model across the GPUs it sees.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if config.quantization == "auto":
        raise ValueError("quantization is still auto: decide it for the base first (trainer.models.sized_for_model).")
    dtype = torch.bfloat16 if use_bf16(config) else torch.float32
    quant = None
    if config.quantization == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=dtype)
    elif config.quantization == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    device_map = None
    if torch.cuda.is_available():
        device_map = {"": int(os.environ["LOCAL_RANK"])} if "LOCAL_RANK" in os.environ else "auto"
    # No fp32 upcast of norms and embeddings (peft's prepare_model_for_kbit_training): it doubles activation memory and
    # slows every step; PEFT freezes the base, TRL keeps the adapters in bf16 and enables input grads for checkpointing.
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, quantization_config=quant,
                                                 device_map=device_map, attn_implementation=attention_for(config))
    # bitsandbytes' 4-bit layers on a CPU with AVX512-BF16 repack themselves in eval mode for a bf16 inference kernel
    # that has no backward, and stay so: after an evaluation, training's gradients would skip them. Keep them off it.
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
    return model


def load_tokenizer(config: JobConfig, path: Path) -> tuple[JobConfig, str, object]:
    """(config, model path, tokenizer) of the job's base, refusing a base the job cannot train (trainer/models.py).
    The config comes back with its "auto" settings decided for the base (sized_for_model), which the log and the
    job's status ("resolved") record for the monitor, the estimate and the model card."""
    from transformers import AutoTokenizer

    from trainer.models import check_model_fit, resolve_model, sized_for_model

    model_path = resolve_model(config.base_model)
    check_model_fit(config, model_path)
    sized = sized_for_model(config, model_path)
    resolved = {name: getattr(sized, name) for name in RESOLVED}
    log.info("for this base: %s", ", ".join(f"{name} {getattr(config, name)} -> {value}"
                                             for name, value in resolved.items()))
    if is_main_process():
        update_status(path, resolved=resolved)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return sized, model_path, tokenizer


def lora_config(config: JobConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")


def trainer_args(config: JobConfig, path: Path, batch_size: int) -> dict:
    """The Trainer arguments every method shares (SFTConfig and GRPOConfig take them alike)."""
    return dict(
        output_dir=str(checkpoints_dir(path)), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.scaled_learning_rate(int(os.environ.get("WORLD_SIZE", "1"))),
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps, optim=config.optimizer, seed=config.seed,
        bf16=use_bf16(config), activation_checkpointing={"on": True, "off": False}[config.gradient_checkpointing],
        logging_steps=1,
        save_steps=config.save_steps, save_total_limit=2, report_to=config.report_to, run_name=path.name,
        dataloader_num_workers=0, disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(), ddp_find_unused_parameters=False,
    )


def build_trainer(config: JobConfig, path: Path):
    """The job's trainer and tokenizer: SFT here, GRPO in trainer/grpo.py."""
    if config.method == "grpo":
        from trainer.grpo import build_grpo_trainer

        return build_grpo_trainer(config, path)
    from trl import SFTConfig, SFTTrainer

    from trainer.data import build_datasets

    config, model_path, tokenizer = load_tokenizer(config, path)
    train_ds, eval_ds = build_datasets(config, tokenizer)
    args = SFTConfig(
        **trainer_args(config, path, config.per_device_batch_size),
        per_device_eval_batch_size=config.per_device_batch_size,
        # build_datasets truncates already; TRL refuses max_length for padding-free batches without packing
        max_length=config.max_seq_length if config.packing or not config.padding_free else None,
        packing=config.packing, padding_free=config.padding_free,
        eval_strategy="steps" if eval_ds is not None else "no", eval_steps=max(config.save_steps, 1),
        include_num_input_tokens_seen="non_padding",
    )
    model = load_base(config, model_path)
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                      peft_config=lora_config(config), callbacks=[JobCallback(path)]), tokenizer


def train_job(path: Path) -> str:
    """Train the job in `path` to the end or to a cancel. Returns the final state."""
    config = read_config(path).validate()
    main = is_main_process()
    status = read_status(path)
    checkpoint = last_checkpoint(path) if status.get("resume") else None
    if main:
        update_status(path, state=State.RUNNING, device=device_name(), started=now(), reason="",
                      pid=psutil.Process().pid, pid_started=psutil.Process().create_time())
        write_progress(path, [r for r in read_progress(path)
                              if checkpoint and r["step"] <= int(checkpoint.name.split("-")[1])])
        if checkpoint is None:
            shutil.rmtree(checkpoints_dir(path), ignore_errors=True)
        else:
            remove_incomplete(path)  # a save cut short by a kill: resume goes on from the last complete one
    log.info("training %s on %s with %s attention in %s%s", path.name, device_name(), attention_for(config),
             "bf16" if use_bf16(config) else "fp32", f", resuming from {checkpoint.name}" if checkpoint else "")
    started = time.time()
    with cancellable(path):  # loading the model and preparing the data can take long: a cancel stops them too
        trainer, tokenizer = build_trainer(config, path)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    cancelled = cancel_flag(path).exists()
    if not main:
        return State.CANCELLED if cancelled else State.COMPLETED  # rank 0 writes the adapter, metrics and status
    save_adapter(trainer, tokenizer, config, path)
    losses = [r["loss"] for r in read_progress(path) if r.get("loss") is not None]
    previous = read_metrics(path)
    metrics = {
        "train_runtime_s": round(previous.get("train_runtime_s", 0) + time.time() - started, 1),
        "final_loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
        "train_tokens": trainer.state.num_input_tokens_seen, "steps": trainer.state.global_step,
        "hardware": device_name(), "base_model": config.base_model, "dataset": config.dataset,
        "train_examples": len(trainer.train_dataset), "train_loss_mean": result.training_loss,
    }
    write_metrics(path, metrics)
    if config.heldout_problems and not cancelled:
        update_status(path, reason=f"Scoring {config.heldout_problems} held-out problems before and after training…")
        heldout = score_heldout(path, config.heldout_problems)
        cancelled = heldout is None
        if heldout:
            write_metrics(path, {**metrics, "heldout": heldout})
    state = State.CANCELLED if cancelled else State.COMPLETED
    cancel_flag(path).unlink(missing_ok=True)
    update_status(path, state=state, finished=now(), step=trainer.state.global_step, resume=False,
                  reason="Cancelled; the adapter so far is saved. Resume continues from here." if cancelled else "")
    return state


def score_heldout(path: Path, problems: int) -> dict | None:
    """Held-out builtin:basic-math problems scored with the base model (before) and the job's adapter (after), for
    metrics.json; None when the job is cancelled meanwhile.

    The scoring is the tutor's evaluation (tutor/evaluate.py: its prompt, greedy batches, answer checks, the count of
    problems also in the training data), run as the command a user would type, in a process of its own: the trainer
    never imports the tutor. The base does not change in training, so scoring it now is scoring it before."""
    report_path = heldout_report_file(path)
    command = [sys.executable, "-m", "tutor", "eval", "--adapter", path.name, "--data-file", HELDOUT_DATA, "--limit",
               str(problems), "--max-new-tokens", str(HELDOUT_MAX_NEW_TOKENS), "--out", str(report_path)]
    log.info("scoring held-out problems: %s", " ".join(command[1:]))
    process = subprocess.Popen(command, cwd=ROOT)  # its output joins the worker's, in the job's log
    while process.poll() is None:
        if cancel_flag(path).exists():
            process.kill()
            process.wait()
            return None
        time.sleep(1)
    if process.returncode:
        raise RuntimeError(f"Scoring the held-out problems failed (`python {' '.join(command[1:])}` exited "
                           f"{process.returncode}; the log says why). The adapter is saved; set heldout_problems to 0 "
                           "to train without this check.")
    report = read_json(report_path)
    runs = {when: report["summary"][role] for when, role in (("before", "base"), ("after", "adapter"))}
    log.info("held-out problems right: before %d/%d, after %d/%d", runs["before"]["correct"], runs["before"]["total"],
             runs["after"]["correct"], runs["after"]["total"])
    return {
        "data": f"{HELDOUT_DATA} (test split)", "max_new_tokens": HELDOUT_MAX_NEW_TOKENS,
        **{when: {key: run[key] for key in ("accuracy", "correct", "total")} for when, run in runs.items()},
        "in_training_data": report.get("contamination", {}).get("overlap"),
    }


def save_adapter(trainer, tokenizer, config: JobConfig, path: Path) -> None:
    """Write the adapter atomically: a folder that exists is a complete, loadable adapter."""
    tmp = partial_adapter(path)
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp, selected_adapters=["default"])  # not GRPO's frozen reference copy, "ref"
    tokenizer.save_pretrained(tmp)
    config.save(config_file(tmp))
    shutil.rmtree(adapter_dir(path), ignore_errors=True)
    tmp.rename(adapter_dir(path))


def explain_failure(exc: BaseException, free_bytes: int | None = None) -> str:
    """The reason in words a user can act on; `free_bytes`: the disk space left under the job when it failed."""
    text = f"{type(exc).__name__}: {exc}"
    low_disk = free_bytes is not None and free_bytes < LOW_DISK_BYTES and isinstance(exc, (OSError, RuntimeError))
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or DISK_FULL_RE.search(str(exc)) or low_disk:
        return (f"The disk is full ({text}). Free space under the data root or delete old jobs, then resume: "
                "training continues from the last complete checkpoint.")
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or OUT_OF_MEMORY_RE.search(str(exc)):
        return (f"Out of memory ({exc}). Lower per_device_batch_size or max_seq_length, raise "
                "gradient_accumulation_steps to keep the effective batch, or enable 4-bit quantization and "
                "gradient_checkpointing.")
    if isinstance(exc, ValueError):
        return str(exc)  # our own config, data and model errors are already written for a user
    return text


REINTERRUPT_S = 5.0  # seconds between interrupts of a main thread that has not stopped preparing


class CancelledWhilePreparing(Exception):
    """The cancel flag appeared before the first step, while the model or the data was being prepared."""


@contextmanager
def cancellable(path: Path):
    """While the body runs, a thread looks for the cancel flag every second and, once it is there, interrupts the main
    thread (a KeyboardInterrupt at its next line of Python), raised here as CancelledWhilePreparing. It interrupts
    again every REINTERRUPT_S until the body has left: library code that catches everything (a bare `except:`) can
    swallow one interrupt, which left a cancelled job preparing its data to the end."""
    done = threading.Event()

    def watch() -> None:
        wait = 1.0
        while not done.wait(wait):
            if cancel_flag(path).exists():
                _thread.interrupt_main()
                wait = REINTERRUPT_S

    threading.Thread(target=watch, daemon=True, name="cancel-watch").start()
    try:
        yield
    except KeyboardInterrupt:
        if not cancel_flag(path).exists():
            raise
        raise CancelledWhilePreparing() from None
    finally:
        done.set()


def run_job(path: Path) -> int:
    """The worker's top level: the one place exceptions are caught. Returns the process exit code."""
    try:
        state = train_job(path)
        log.info("job %s %s", path.name, state)
        return 0
    except CancelledWhilePreparing:
        log.info("job %s cancelled before its first step", path.name)
        if is_main_process():
            cancel_flag(path).unlink(missing_ok=True)
            update_status(path, state=State.CANCELLED, finished=now(), reason="Cancelled while the model and data "
                          "were being prepared, before the first step. Resume starts it again.")
        return 0
    except BaseException as exc:  # noqa: BLE001 - recorded as failed with the reason, then re-raised as exit code
        log.exception("job %s failed", path.name)
        reason = explain_failure(exc, shutil.disk_usage(path).free)
        if is_main_process():
            remove_incomplete(path)
        update_status(path, state=State.FAILED, finished=now(), reason=reason)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
