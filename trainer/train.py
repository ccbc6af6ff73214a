"""The training worker: runs one job in this process with TRL's SFTTrainer, writing its state to the job folder.

Started by the app (through `python -m trainer train --config ... --job ...`) or by a user in the foreground.
Exceptions are caught only at the top (`run_job`), recorded as `failed` with advice, and the process exits non-zero.
"""

import json
import logging
import shutil
import time
from pathlib import Path

import psutil
import torch
from transformers import TrainerCallback

from trainer.config import JobConfig
from trainer.jobs import read_progress, update_status, write_json, now

log = logging.getLogger("trainer")


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({psutil.cpu_count()} cores)"


def memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return psutil.Process().memory_info().rss / 2**20


def last_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint: one the Trainer finished writing (its state file is written last)."""
    done = [c for c in (path / "checkpoints").glob("checkpoint-*") if (c / "trainer_state.json").exists()]
    return max(done, key=lambda c: int(c.name.split("-")[1]), default=None)


class JobCallback(TrainerCallback):
    """Writes progress.jsonl and status.json as training goes, and stops cleanly when CANCEL appears."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.time()
        self.start_step = 0
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        self.tokens_at_start = state.num_input_tokens_seen
        update_status(self.path, total_steps=state.max_steps, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if (self.path / "CANCEL").exists():
            control.should_save = True  # a checkpoint at this very step, so resume continues from here
            control.should_training_stop = True
        update_status(self.path, step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs.get("loss") is None and logs.get("eval_loss") is None:
            return  # the end-of-training summary, not a step
        elapsed = time.time() - self.started
        done = max(state.global_step - self.start_step, 1)
        row = {
            "step": state.global_step, "total_steps": state.max_steps, "epoch": round(state.epoch or 0, 4),
            "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"), "learning_rate": logs.get("learning_rate"),
            "tokens_per_second": round((state.num_input_tokens_seen - self.tokens_at_start) / max(elapsed, 1e-9), 1),
            "memory_mb": round(memory_mb(), 1), "elapsed_s": round(elapsed, 1),
            "eta_s": round(elapsed / done * (state.max_steps - state.global_step), 1), "time": now(),
        }
        with open(self.path / "progress.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")


def load_base(config: JobConfig, model_path: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    quant = None
    if config.quantization == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=dtype)
    elif config.quantization == "8bit":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, quantization_config=quant,
                                                 device_map="auto" if torch.cuda.is_available() else None)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model


def build_trainer(config: JobConfig, path: Path):
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from trainer.data import build_datasets
    from trainer.models import check_model_fit, resolve_model

    model_path = resolve_model(config.base_model)
    check_model_fit(config, model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ds, eval_ds = build_datasets(config, tokenizer)
    args = SFTConfig(
        output_dir=str(path / "checkpoints"), per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        num_train_epochs=config.num_epochs, max_steps=config.max_steps, optim=config.optimizer, seed=config.seed,
        max_length=config.max_seq_length, packing=config.packing, bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing, logging_steps=1, save_steps=config.save_steps,
        save_total_limit=2, eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=max(config.save_steps, 1), include_num_input_tokens_seen="non_padding", report_to=[],
        dataloader_num_workers=0, disable_tqdm=False, use_cpu=not torch.cuda.is_available(),
    )
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    model = load_base(config, model_path)
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, peft_config=lora, callbacks=[JobCallback(path)]), tokenizer


def train_job(path: Path) -> str:
    """Train the job in `path` to the end or to a cancel. Returns the final state."""
    config = JobConfig.load(path / "config.yaml").validate()
    status = update_status(path, state="running", device=device_name(), started=now(), reason="",
                           pid=psutil.Process().pid, pid_started=psutil.Process().create_time())
    checkpoint = last_checkpoint(path) if status.get("resume") else None
    keep_rows = [r for r in read_progress(path) if checkpoint and r["step"] <= int(checkpoint.name.split("-")[1])]
    (path / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep_rows))
    if checkpoint is None:
        shutil.rmtree(path / "checkpoints", ignore_errors=True)
    log.info("training %s on %s%s", path.name, device_name(), f", resuming from {checkpoint.name}" if checkpoint else "")
    started = time.time()
    trainer, tokenizer = build_trainer(config, path)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    cancelled = (path / "CANCEL").exists()
    save_adapter(trainer, tokenizer, config, path)
    losses = [r["loss"] for r in read_progress(path) if r.get("loss") is not None]
    previous = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    write_json(path / "metrics.json", {
        "train_runtime_s": round(previous.get("train_runtime_s", 0) + time.time() - started, 1),
        "final_loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
        "train_tokens": trainer.state.num_input_tokens_seen, "steps": trainer.state.global_step,
        "hardware": device_name(), "base_model": config.base_model, "dataset": config.dataset,
        "train_examples": len(trainer.train_dataset), "train_loss_mean": result.training_loss,
    })
    state = "cancelled" if cancelled else "completed"
    (path / "CANCEL").unlink(missing_ok=True)
    update_status(path, state=state, finished=now(), step=trainer.state.global_step, resume=False,
                  reason="Cancelled; the adapter so far is saved. Resume continues from here." if cancelled else "")
    return state


def save_adapter(trainer, tokenizer, config: JobConfig, path: Path) -> None:
    """Write the adapter atomically: a folder that exists is a complete, loadable adapter."""
    tmp = path / "adapter.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config.save(tmp / "config.yaml")
    shutil.rmtree(path / "adapter", ignore_errors=True)
    tmp.rename(path / "adapter")


def explain_failure(exc: BaseException) -> str:
    """The reason in words a user can act on."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return (f"Out of memory ({exc}). Lower per_device_batch_size or max_seq_length, raise "
                "gradient_accumulation_steps to keep the effective batch, or enable 4-bit quantization and "
                "gradient_checkpointing.")
    if isinstance(exc, OSError) and exc.errno == 28:
        return f"The disk is full ({exc}). Free space under the data root or delete old jobs, then resume."
    if isinstance(exc, ValueError):
        return str(exc)  # our own config, data and model errors are already written for a user
    return text


def run_job(path: Path) -> int:
    """The worker's top level: the one place exceptions are caught. Returns the process exit code."""
    try:
        state = train_job(path)
        log.info("job %s %s", path.name, state)
        return 0
    except BaseException as exc:  # noqa: BLE001 - recorded as failed with the reason, then re-raised as exit code
        log.exception("job %s failed", path.name)
        update_status(path, state="failed", finished=now(), reason=explain_failure(exc))
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
