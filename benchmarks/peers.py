"""The app's trainer beside Unsloth, LLaMA-Factory and plain TRL: the same GSM8K chats on the same GPU, in one call.

    python benchmarks/peers.py --data gsm8k-train.jsonl --tokenizer TOK --wheels .carry/peers --carried .carry/whl \
        --tools app unsloth llamafactory trl --shapes embedded llama3.2-3b gemma3-4b --out peers-h200.json

Each (tool, shape) trains in a subprocess of its own (`--worker`), stopped after --timeout seconds:
  app           trainer.train.build_trainer on JobConfig(): the worker's own trainer with the app's defaults
  unsloth       FastLanguageModel.from_pretrained(load_in_4bit=True) + get_peft_model + TRL's SFTTrainer, as Unsloth's
                Llama-3.2 conversational notebook does (batch 2 x 4, adamw_8bit, train_on_responses_only)
  llamafactory  `llamafactory-cli train config.yaml` (its run_exp, in the worker) with the QLoRA example's recipe
                (examples/train_qlora/llama3_lora_sft_otfq.yaml: 4-bit bitsandbytes, batch 1 x 8, lr 1e-4, cosine),
                the chats as a sharegpt dataset in a dataset_info.json
  trl           SFTTrainer with SFTConfig's defaults, 4-bit and LoRA from TRL's ModelConfig as trl/scripts/sft.py does,
                the chats as conversational prompt-completion pairs
All take LoRA rank, alpha, target modules and sequence length from JobConfig() (64, 128, the 7 projections, 512) and
train on the assistant turns only, at their recipe's peak rate from the first step (warmup off, max_steps 10^5, as
train_throughput.py does: a run of seconds would otherwise stay near a rate of 0). --batch N gives every peer micro-
batches of N chats without accumulation instead of its recipe's.

Shapes, named as train_throughput.py names them: `embedded` is the real embedded SmolLM2-135M-Instruct (--embedded: a
folder, or the app's embedded model, converted once); the others are its random-weight shapes, written by its writer
with SmolLM2's tokenizer. So every tool reads SmolLM2's ChatML.

Unsloth and LLaMA-Factory pin versions of transformers, TRL, PEFT and datasets other than the app's: each runs from a
folder of its own (--work/site-TOOL, its wheels from --wheels/TOOL installed once, plus REUSED wheels from --carried)
over the machine's own packages; app and trl run with this process's PYTHONPATH. Each row records its versions.

Per run: non-padding tokens/s over --seconds after --warmup optimizer steps (tokens counted at the model's input, so
every tool is counted alike), MFU (6 x parameters x tokens/s over the measured bf16 matmul rate), peak GPU memory from
the first step on, the loss after --loss-tokens trained tokens, and train_throughput.training_check's first and last
loss, largest grad norm and problems; a tool that cannot run records its error. The JSON is written after every run,
and --resume keeps the rows of an earlier --out, running only the (tool, shape) pairs it lacks. Exits 1 when a run
that trained did not train (a loss or grad norm not finite, or a loss that did not fall).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # train_throughput, also when this module is imported as benchmarks.peers
TOOLS = ["app", "unsloth", "llamafactory", "trl"]
# Wheels a tool's folder takes from --carried (the app's own set) instead of carrying a second copy.
REUSED = {"unsloth": ["bitsandbytes", "dill", "multiprocess"], "llamafactory": ["bitsandbytes"]}
USER_TURN, ASSISTANT_TURN = "<|im_start|>user\n", "<|im_start|>assistant\n"  # SmolLM2's ChatML, for Unsloth's masking
LLAMAFACTORY_TEMPLATE = "smollm2"  # LLaMA-Factory's name for that template
CHATS, DATASET_INFO, DATASET_NAME = "chats.jsonl", "dataset_info.json", "gsm8k_chats"
MAX_STEPS = 10**5


# ------------------------------------------------------------------------------------------------ the chats


def write_chats(data: str, samples: int, folder: Path) -> Path:
    """The GSM8K chats every tool trains on, as train_throughput.py's runs see them (the tutor's system prompt, the
    question, the <think> reasoning and boxed answer), as JSON Lines of {"messages": [...]}, with the dataset_info.json
    that names them to LLaMA-Factory as a sharegpt dataset."""
    from trainer.config import JobConfig
    from trainer.data import load_examples, to_messages

    system = JobConfig().system_prompt
    chats = [to_messages(example, system) for example in load_examples(f"file:{data}", "train", samples)]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CHATS, "w") as file:
        for messages in chats:
            file.write(json.dumps({"messages": messages}) + "\n")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    info = {DATASET_NAME: {"file_name": CHATS, "formatting": "sharegpt", "columns": {"messages": "messages"},
                           "tags": tags}}
    (folder / DATASET_INFO).write_text(json.dumps(info, indent=1))
    return folder / CHATS


def read_chats(path: str) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in Path(path).read_text().splitlines() if line.strip()]


def shared_settings() -> dict:
    """What every tool takes from the app's defaults: LoRA rank, alpha and modules, and the sequence length."""
    from trainer.config import JobConfig

    config = JobConfig()
    return {"lora_r": config.lora_r, "lora_alpha": config.lora_alpha, "target_modules": config.target_modules,
            "max_seq_length": config.max_seq_length}


def llamafactory_config(spec: dict) -> dict:
    """LLaMA-Factory's QLoRA example (examples/train_qlora/llama3_lora_sft_otfq.yaml) on the chats, with the shared
    LoRA and length settings; warmup off, a step logged each step, no evaluation split."""
    gpu = spec["gpu"]
    batch = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8}
    if spec.get("batch"):
        batch = {"per_device_train_batch_size": spec["batch"], "gradient_accumulation_steps": 1}
    return {
        "model_name_or_path": spec["model"],
        **({"quantization_bit": 4, "quantization_method": "bitsandbytes"} if gpu else {}),
        "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_target": "all",
        "lora_rank": spec["lora_r"], "lora_alpha": spec["lora_alpha"],
        "dataset": DATASET_NAME, "dataset_dir": str(Path(spec["chats"]).parent), "template": LLAMAFACTORY_TEMPLATE,
        "cutoff_len": spec["max_seq_length"], "max_samples": spec["samples"], "overwrite_cache": True,
        "preprocessing_num_workers": min(16, os.cpu_count() or 1),
        "output_dir": str(Path(spec["folder"]) / "out"), "logging_steps": 1, "save_steps": 500, "plot_loss": True,
        "overwrite_output_dir": True, "report_to": "none",
        **batch, "learning_rate": 1.0e-4, "num_train_epochs": 3.0, "max_steps": MAX_STEPS,
        "lr_scheduler_type": "cosine", "warmup_steps": 0, "bf16": gpu, "ddp_timeout": 180000000,
    }


# ------------------------------------------------------------------------------------------------ the workers


def make_clock(spec: dict, result: dict, save):
    """A TrainerCallback (made after the tool's own imports: Unsloth must come before transformers) that counts the
    non-padding tokens at the model's input, writes one row per optimizer step to rows.jsonl (time, tokens, peak
    memory) and one per logged step (loss, grad norm), and stops training --seconds after --warmup steps. At the first
    step it records the recipe as the Trainer and the model have it."""
    import torch
    from transformers import TrainerCallback

    rows = open(Path(spec["folder"]) / "rows.jsonl", "a")
    gpu = torch.cuda.is_available()

    def write(row):
        rows.write(json.dumps(row) + "\n")
        rows.flush()

    class Clock(TrainerCallback):
        def __init__(self):
            self.pending, self.tokens, self.begun, self.window = [], 0, None, None

        def count(self, module, args, kwargs):
            if not (module.training and torch.is_grad_enabled()):
                return
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask")
            if ids is None:
                return
            padded = mask is not None and mask.shape == ids.shape
            self.pending.append(mask.sum() if padded else ids.numel())  # on the device: no sync per micro-batch

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(self.count, with_kwargs=True)
            if gpu:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.begun = time.perf_counter()
            result.update(load_s=round(self.begun - result["started"], 1), versions=versions(spec["tool"]),
                          recipe={**recipe(args, model), **result.get("recipe", {})})
            save()

        def on_step_end(self, args, state, control, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            self.tokens += sum(int(n) for n in self.pending)
            self.pending = []
            now = time.perf_counter() - self.begun
            row = {"step": state.global_step, "t": round(now, 4), "tokens": self.tokens}
            if gpu:
                row.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                           peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))
            write(row)
            if state.global_step == spec["warmup"]:
                self.window = now
            elif self.window is not None and now - self.window >= spec["seconds"] and \
                    state.global_step - spec["warmup"] >= 3:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and logs.get("loss") is not None:
                write({"step": state.global_step, "loss": logs["loss"], "grad_norm": logs.get("grad_norm"),
                       "learning_rate": logs.get("learning_rate"),
                       "num_tokens": logs.get("num_tokens")})  # TRL's own count, where it logs one: a cross-check

    return Clock()


def recipe(args, model) -> dict:
    """What shapes a step's work and learning, read from the Trainer's arguments and the model as they train."""
    def plain(value):
        return getattr(value, "value", value)  # enums (optim, scheduler) as their names

    lora = getattr(model, "peft_config", {}).get("default")
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    return {"per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "learning_rate": args.learning_rate,
            "lr_scheduler_type": plain(args.lr_scheduler_type), "optim": plain(args.optim),
            "bf16": args.bf16, "padding_free": getattr(args, "padding_free", None),
            "activation_checkpointing": checkpointing if checkpointing is not None else
            getattr(model, "is_gradient_checkpointing", None),
            "attention": getattr(model.config, "_attn_implementation", None),
            "quantized_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
            **({"lora_r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                "target_modules": lora.target_modules if isinstance(lora.target_modules, str)
                else sorted(lora.target_modules)} if lora else {})}


def versions(tool: str) -> dict:
    """Versions of what this worker imported (from the tool's own folder where it has one)."""
    names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes",
             *{"unsloth": ["unsloth", "unsloth_zoo"], "llamafactory": ["llamafactory"]}.get(tool, [])]
    return {name: getattr(sys.modules.get(name), "__version__", None) for name in names}


def train_app(spec: dict, clock_for) -> None:
    from train_throughput import app_trainer

    from trainer.config import JobConfig

    config = JobConfig(base_model=spec["model"], dataset=f"file:{spec['chats']}", max_samples=spec["samples"],
                       eval_fraction=0, save_steps=MAX_STEPS, max_steps=MAX_STEPS, warmup_ratio=0,
                       quantization="4bit" if spec["gpu"] else "none")
    trainer = app_trainer(config, Path(spec["folder"]))
    trainer.add_callback(clock_for({}))
    trainer.train()


def train_trl(spec: dict, clock_for) -> None:
    from datasets import Dataset
    from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

    gpu = spec["gpu"]
    model_args = ModelConfig(model_name_or_path=spec["model"], dtype="bfloat16" if gpu else "float32", use_peft=True,
                             lora_r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
                             lora_target_modules=spec["target_modules"], load_in_4bit=gpu)
    chats = read_chats(spec["chats"])
    dataset = Dataset.from_list([{"prompt": chat[:-1], "completion": chat[-1:]} for chat in chats])
    batch = {"per_device_train_batch_size": spec["batch"]} if spec.get("batch") else {}
    args = SFTConfig(output_dir=str(Path(spec["folder"]) / "out"), max_length=spec["max_seq_length"],
                     logging_steps=1, report_to="none", save_strategy="no", max_steps=MAX_STEPS, bf16=gpu,
                     use_cpu=not gpu, model_init_kwargs={"dtype": model_args.dtype}, **batch)
    trainer = SFTTrainer(model=spec["model"], args=args, train_dataset=dataset,
                         quantization_config=get_quantization_config(model_args),
                         peft_config=get_peft_config(model_args))
    trainer.add_callback(clock_for({"completion_only_loss": args.completion_only_loss}))
    trainer.train()


def train_unsloth(spec: dict, clock_for) -> None:
    import unsloth  # noqa: F401 - first, so that it patches transformers, TRL and PEFT as they are imported
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    length = spec["max_seq_length"]
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=spec["model"], max_seq_length=length, dtype=None,
                                                         load_in_4bit=spec["gpu"])
    model = FastLanguageModel.get_peft_model(
        model, r=spec["lora_r"], target_modules=spec["target_modules"], lora_alpha=spec["lora_alpha"],
        lora_dropout=0, bias="none", use_gradient_checkpointing="unsloth", random_state=3407, use_rslora=False,
        loftq_config=None)
    texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
             for chat in read_chats(spec["chats"])]
    batch = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}
    if spec.get("batch"):
        batch = {"per_device_train_batch_size": spec["batch"], "gradient_accumulation_steps": 1}
    trainer = SFTTrainer(
        model=model, tokenizer=tokenizer, train_dataset=Dataset.from_dict({"text": texts}),
        dataset_text_field="text", max_seq_length=length, data_collator=DataCollatorForSeq2Seq(tokenizer=tokenizer),
        packing=False,
        args=SFTConfig(**batch, warmup_steps=0, max_steps=MAX_STEPS, learning_rate=2e-4, logging_steps=1,
                       optim="adamw_8bit", weight_decay=0.001, lr_scheduler_type="linear", seed=3407,
                       output_dir=str(Path(spec["folder"]) / "out"), report_to="none", save_strategy="no"))
    trainer = train_on_responses_only(trainer, instruction_part=USER_TURN, response_part=ASSISTANT_TURN)
    trainer.add_callback(clock_for({"use_gradient_checkpointing": "unsloth"}))
    trainer.train()


def train_llamafactory(spec: dict, clock_for) -> None:
    import yaml
    from llamafactory.train.tuner import run_exp

    path = Path(spec["folder"]) / "config.yaml"
    path.write_text(yaml.safe_dump(llamafactory_config(spec), sort_keys=False))
    clock = clock_for({"command": f"llamafactory-cli train {path}"})
    sys.argv = ["llamafactory-cli", str(path)]  # what `llamafactory-cli train config.yaml` hands run_exp on one GPU
    run_exp(callbacks=[clock])


TRAIN = {"app": train_app, "unsloth": train_unsloth, "llamafactory": train_llamafactory, "trl": train_trl}


def worker(spec_file: str) -> int:
    """Run one tool on one shape as the spec says; result.json holds the recipe, versions, load time and any error."""
    spec = json.loads(Path(spec_file).read_text())
    result = {"started": time.perf_counter()}
    out = Path(spec["folder"]) / "result.json"

    def save():
        out.write_text(json.dumps({k: v for k, v in result.items() if k != "started"}, indent=1))

    def clock_for(notes: dict):
        result["recipe"] = notes  # joined at the first step by what the Trainer and the model say
        return make_clock(spec, result, save)

    try:
        TRAIN[spec["tool"]](spec, clock_for)
        return 0
    except BaseException as exc:  # noqa: BLE001 - a tool that cannot run is a result: its error text is recorded
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        return 1
    finally:
        result.setdefault("versions", versions(spec["tool"]))
        save()


# ------------------------------------------------------------------------------------------------ the runs


class ToolUnavailable(Exception):
    """A tool whose wheels are not here or do not install: recorded as its error without starting it."""


def tool_site(tool: str, wheels: Path, carried: Path, work: Path) -> Path:
    """The tool's own folder of packages, installed once from its wheels and the REUSED ones."""
    site = work / f"site-{tool}"
    if (site / ".installed").exists():
        return site
    own = sorted((wheels / tool).glob("*.whl"))
    reused = {name: sorted(carried.glob(f"{name}-*.whl")) for name in REUSED[tool]}
    missing = [f"{carried}/{name}-*.whl" for name, found in reused.items() if not found]
    if not own:
        missing.insert(0, f"{wheels / tool}/*.whl")
    if missing:
        raise ToolUnavailable(f"{tool} is not installed here: no wheels at {', '.join(missing)}")
    shutil.rmtree(site, ignore_errors=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--target", str(site), *map(str, own), *(str(found[-1]) for found in reused.values())],
                         capture_output=True, text=True)
    if pip.returncode:
        raise ToolUnavailable(f"{tool}'s wheels did not install: {pip.stderr.strip()[-500:]}")
    (site / ".installed").touch()
    return site


def run_tool(tool: str, spec: dict, env: dict, timeout: float) -> tuple[str | None, float]:
    """Start the worker in its own process group; kill the group after `timeout`. Returns (error, wall seconds)."""
    folder = Path(spec["folder"])
    (folder / "spec.json").write_text(json.dumps(spec, indent=1))
    started = time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder / "spec.json")]
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"stopped after its {timeout:.0f} s limit", time.perf_counter() - started
    wall = time.perf_counter() - started
    if code == 0:
        return None, wall
    result = read_json(folder / "result.json")
    tail = (folder / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
    return result.get("error") or f"exit code {code}: " + " | ".join(tail), wall


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summarize(folder: Path, warmup: int, loss_tokens: int, params: int, tflops: float | None) -> dict:
    """Figures of one run from the rows its worker wrote (as many as it wrote, also when it was stopped)."""
    from train_throughput import training_check

    lines = (folder / "rows.jsonl").read_text().splitlines() if (folder / "rows.jsonl").exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    steps = [r for r in rows if "t" in r]
    logged = [r for r in rows if "loss" in r]
    row = {}
    start = next((r for r in steps if r["step"] == warmup), None)
    if start and steps[-1]["step"] > warmup:
        end = steps[-1]
        tokens, seconds = end["tokens"] - start["tokens"], end["t"] - start["t"]
        row.update(steps_measured=end["step"] - warmup, seconds_measured=round(seconds, 2), tokens_measured=tokens,
                   tokens_per_s=round(tokens / seconds, 1))
        if tflops:
            row["mfu"] = round(6 * params * tokens / seconds / (tflops * 1e12), 4)
    if steps and "peak_allocated_gib" in steps[-1]:
        row.update(peak_allocated_gib=steps[-1]["peak_allocated_gib"], peak_reserved_gib=steps[-1]["peak_reserved_gib"])
    reached = next((r for r in steps if r["tokens"] >= loss_tokens), None)
    loss = next((r["loss"] for r in logged if reached and r["step"] == reached["step"]), None)
    row["loss_at_tokens"] = {"tokens": loss_tokens, "step": reached and reached["step"], "loss": loss}
    row.update(training_check(logged))  # also for a run that logged nothing: that is a problem too
    return row


def model_for(shape: str, args, work: Path) -> tuple[Path, int]:
    """(checkpoint folder, parameter count) of a shape: the embedded model, or a random-weight checkpoint."""
    from transformers import AutoConfig
    from train_throughput import EMBEDDED_SHAPE, model_config, parameter_count, write_random_model

    if shape == EMBEDDED_SHAPE:
        from trainer.models import resolve_model

        folder = Path(resolve_model(args.embedded))
        return folder, parameter_count(AutoConfig.from_pretrained(folder))
    return write_random_model(shape, args.tokenizer, work / shape), parameter_count(model_config(shape))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # before anything imports transformers: Unsloth must patch it as it is imported
        return worker(argv[1])
    from train_throughput import EMBEDDED_SHAPE, SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="GSM8K train.jsonl")
    parser.add_argument("--tokenizer", help="a folder with SmolLM2's chat tokenizer, for the random-weight shapes")
    parser.add_argument("--embedded", default="embedded:smollm2-135m-instruct",
                        help=f"the {EMBEDDED_SHAPE} shape: a folder, or the app's embedded model (converted once)")
    parser.add_argument("--tools", nargs="*", default=TOOLS, choices=TOOLS)
    parser.add_argument("--shapes", nargs="*", default=[EMBEDDED_SHAPE, "llama3.2-3b", "gemma3-4b"],
                        choices=[EMBEDDED_SHAPE, *SHAPES])
    parser.add_argument("--samples", type=int, default=2000, help="GSM8K chats to train on")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before the clock starts (1 or more)")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a run may take, loading included")
    parser.add_argument("--loss-tokens", type=int, default=30000, help="report each run's loss after this many tokens")
    parser.add_argument("--batch", type=int, default=0, help="peers' micro-batch (no accumulation); 0: their recipe's")
    parser.add_argument("--wheels", default=".carry/peers", help="folders of wheels: unsloth/, llamafactory/")
    parser.add_argument("--carried", default=".carry/whl", help="the app's wheels, some reused (REUSED)")
    parser.add_argument("--work", default=tempfile.gettempdir() + "/peers", help="scratch folder")
    parser.add_argument("--out", default="", help="write the results JSON here (after every run)")
    parser.add_argument("--resume", action="store_true", help="keep --out's rows; run only the pairs it lacks")
    args = parser.parse_args(argv)
    if not args.data or (set(args.shapes) - {EMBEDDED_SHAPE} and not args.tokenizer):
        parser.error("--data is needed, and --tokenizer for the random-weight shapes")
    if args.warmup < 1:
        parser.error("--warmup must be 1 or more: the clock starts at the end of a step")

    import torch
    from train_throughput import matmul_tflops, release

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    tflops = matmul_tflops() if gpu else None
    release()
    chats = write_chats(args.data, args.samples, work / "data")
    shared = shared_settings()
    kept = read_json(Path(args.out)).get("runs", []) if args.resume and args.out else []
    kept = [row for row in kept if "error" not in row and not row.get("problems")]
    result = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "command": " ".join(sys.argv),
              "bf16_matmul_tflops": round(tflops, 1) if tflops else None, "shared": shared,
              "settings": {key: getattr(args, key)
                           for key in ("samples", "warmup", "seconds", "timeout", "loss_tokens", "batch")},
              "runs": kept}

    def save():
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    done = {(row["tool"], row["shape"]) for row in kept}
    for shape in args.shapes:
        todo = [tool for tool in args.tools if (tool, shape) not in done]
        if not todo:
            continue
        try:
            model_dir, params = model_for(shape, args, work)
        except ValueError as exc:  # no embedded model (ModelError), a random model refused: the next shape goes on
            result["runs"] += [{"tool": tool, "shape": shape, "error": f"{type(exc).__name__}: {exc}"} for tool in todo]
            print(f"{shape}: {exc}", flush=True)
            save()
            continue
        release()
        for tool in todo:
            folder = work / "runs" / f"{tool}-{shape}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            spec = {"tool": tool, "shape": shape, "model": str(model_dir), "chats": str(chats), "folder": str(folder),
                    "samples": args.samples, "warmup": args.warmup, "seconds": args.seconds, "batch": args.batch,
                    "gpu": gpu, **shared}
            row = {"tool": tool, "shape": shape, "parameters": params}
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            # the source Unsloth generates for a model type, kept between its runs as in a user's working folder
            env["UNSLOTH_COMPILE_LOCATION"] = str(work / "unsloth_compiled_cache")
            try:
                if tool in REUSED:
                    env["PYTHONPATH"] = str(tool_site(tool, Path(args.wheels), Path(args.carried), work))
                error, wall = run_tool(tool, spec, env, args.timeout)
                row["wall_s"] = round(wall, 1)
            except ToolUnavailable as exc:
                error = str(exc)
            worker_result = read_json(folder / "result.json")
            row.update({k: worker_result[k] for k in ("load_s", "recipe", "versions") if k in worker_result})
            row.update(summarize(folder, args.warmup, args.loss_tokens, params, tflops))
            if error:
                row["error"] = error
            result["runs"].append(row)
            print(json.dumps(row), flush=True)
            save()
    for row in result["runs"]:
        figure = f"{row['tokens_per_s']:>9} tok/s" if "tokens_per_s" in row else f"error: {row.get('error', '?')[:80]}"
        print(f"{row['shape']:14s} {row['tool']:13s} {figure}  peak {row.get('peak_reserved_gib', '-')} GiB  "
              f"loss {row.get('first_loss')} -> {row.get('last_loss')}  {'; '.join(row.get('problems', []))}")
    refused = [row for row in result["runs"] if row.get("problems") and "error" not in row]
    for row in refused:
        print(f"REFUSED {row['shape']} {row['tool']}: not a run that trains: {'; '.join(row['problems'])}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
