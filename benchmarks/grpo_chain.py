"""Does reinforcement from verified answers (GRPO) add to supervised fine-tuning? SFT, then GRPO from its adapter, on
GSM8K and on builtin:basic-math, all through the app's own command lines.

For each dataset, in one data root (MATH_STUDIO_HOME, --root):
1. SFT: `python -m trainer train --config sft.yaml`, JobConfig's defaults (GSM8K: the gsm8k-embedded preset, its whole
   train set ../shared/data/gsm8k/train.jsonl; builtin:basic-math: BASIC_MATH_EXAMPLES of its train split), or a
   finished job named by --sft-job;
2. GRPO from it: `python -m trainer train --config grpo.yaml` (method grpo, init_adapter the SFT job, GRPO_GPU);
3. the held-out test with the default evaluation settings (greedy): `python -m tutor eval --adapter SFT` (base and
   SFT, while GRPO trains) and `python -m tutor eval --model adapter:GRPO`. GSM8K: ../shared/data/gsm8k/test.jsonl;
   builtin:basic-math: its test split (other problems, drawn with another seed; the report counts any overlap with
   the SFT job's training set under `contamination`).
The datasets run at once: a 135M model leaves an H200 mostly idle. The JSON is written after every stage, so a run cut
short keeps what it has.

    python3 benchmarks/grpo_chain.py [--out benchmarks/results/grpo-h200.json] [--datasets gsm8k basic-math]
        [--root DATA_ROOT] [--sft-job gsm8k=JOB] [--grpo-steps 20] [--test-limit N] [--max-samples N]
        [--grpo-set key=value ...]

Needs ../shared/data/gsm8k beside the repository (for gsm8k) and the embedded model.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gsm8k_sweep import evaluate, run, show  # noqa: E402

from trainer.config import PRESETS, SHARED_DATA, JobConfig  # noqa: E402

GSM8K_TRAIN, GSM8K_TEST = SHARED_DATA / "gsm8k" / "train.jsonl", SHARED_DATA / "gsm8k" / "test.jsonl"
BASIC_MATH_EXAMPLES = 2000  # SFT and GRPO examples of builtin:basic-math (JobConfig's 96 make 6 SFT steps)
BASIC_MATH_TEST = 500  # problems of its test split, as benchmarks/learning.py evaluates it
# GRPO on the GPU. 8 replies per problem (TRL's default): with 4, a model right 10% of the time leaves two groups in
# three all wrong, with no signal. 64 problems, 512 replies a step: decoding a 135M model is latency-bound on an H200,
# so 512 replies take little longer than 64; the loss goes in micro-batches of 64 (accumulation 8), whose logits (64 x
# ~400 tokens x 49k vocabulary) stay a few GB beside the evaluation running at the same time. The base in bf16
# (quantization none): an adapter on bitsandbytes' 4-bit layers generated 13x slower on an H200 (tutor/evaluate.py),
# and the evaluation merges into unquantized weights too. Learning rate 1e-4, the top of the field's LoRA range
# (1e-5 to 1e-4): a few dozen steps of large batches. KL beta and temperature: JobConfig's (0.04, 1.0).
GRPO_GPU = {"num_generations": 8, "per_device_batch_size": 64, "gradient_accumulation_steps": 8,
            "quantization": "none", "grpo_learning_rate": 1e-4, "save_steps": 10}
DATASETS = {  # name: (SFT config, GRPO settings beside GRPO_GPU, evaluation options, default test limit)
    "gsm8k": (PRESETS["gsm8k-embedded"], {"dataset": f"file:{GSM8K_TRAIN}", "max_samples": 0,
                                          "max_completion_length": 256},
              ["--data-file", str(GSM8K_TEST)], 0),
    "basic-math": (JobConfig(max_samples=BASIC_MATH_EXAMPLES, eval_fraction=0),  # the preset's no held-out share
                   {"dataset": "builtin:basic-math", "max_samples": BASIC_MATH_EXAMPLES,
                    "max_completion_length": 128},  # its replies take up to 120 tokens
                   ["--data-file", "builtin:basic-math"], BASIC_MATH_TEST),
}


def train(name: str, config: JobConfig, work: Path) -> dict:
    """`python -m trainer train --config` for this config: wall time, exit code, the job's status and config."""
    path = work / f"{name}.yaml"
    config.validate().save(path)
    command = [sys.executable, "-m", "trainer", "train", "--config", str(path), "--name", name]
    log = work / f"train-{name}.log"
    code, wall = run(command, log)
    text = log.read_text()
    job = next((line.split()[1] for line in text.splitlines() if line.startswith("job ")), None)
    result = {"command": " ".join(command[1:]), "exit": code, "wall_s": wall, "job": job, **(show(job) if job else {})}
    if code:
        result["log_tail"] = text[-3000:]
    print(f"trained {name}: exit {code} in {wall} s, job {job}", flush=True)
    return result


def reward_trace(rows: list[dict], window: int = 5) -> dict:
    """GRPO's progress rows summed up: reward and its parts over the first and the last `window` steps (fewer when
    there are few), the share of groups whose replies all scored alike (no signal), reply length, KL, seconds a step."""
    rows = [row for row in rows if row.get("reward") is not None]
    if not rows:
        return {"steps": 0}
    n = max(1, min(window, len(rows) // 2))

    def mean(part: list[dict], key: str) -> float | None:
        values = [row[key] for row in part if row.get(key) is not None]
        return round(statistics.fmean(values), 4) if values else None

    trace = {"steps": len(rows), "window": n, "zero_std_share_all": mean(rows, "zero_std_share")}
    for key in ("reward", "reward_answer", "reward_format", "zero_std_share", "completion_length", "kl"):
        trace[f"{key}_first"], trace[f"{key}_last"] = mean(rows[:n], key), mean(rows[-n:], key)
    elapsed = [row["elapsed_s"] for row in rows]
    trace["first_step_s"] = elapsed[0]  # with the trainer's set-up
    trace["step_s"] = round((elapsed[-1] - elapsed[0]) / (len(rows) - 1), 2) if len(rows) > 1 else None
    return trace


def accuracy(run: dict) -> dict:
    """One evaluated model: correct of total, the accuracy and its 95% Wilson interval."""
    from tutor.evaluate import accuracy_interval

    low, high = accuracy_interval(run["correct"], run["total"])
    return {"model": run["model"], "correct": run["correct"], "total": run["total"],
            "accuracy": round(run["correct"] / run["total"], 4), "ci95": [round(low, 4), round(high, 4)]}


def chain(name: str, args, results: dict, save, work: Path) -> None:
    """SFT (or the finished one given), then GRPO from it while base and SFT are evaluated, then GRPO evaluated."""
    from trainer.store import job_dir, read_progress

    sft_config, grpo_settings, test, test_limit = DATASETS[name]
    limit = args.test_limit if args.test_limit is not None else test_limit
    test = [*test, *(["--limit", str(limit)] if limit else [])]
    samples = {"max_samples": args.max_samples} if args.max_samples else {}
    entry = results["datasets"][name] = {"test": test}
    started = time.perf_counter()
    if name in args.sft_job:
        entry["sft"] = {"job": args.sft_job[name], "reused": True, **show(args.sft_job[name])}
    else:
        entry["sft"] = train(f"sft-{name}", dataclasses.replace(sft_config, **samples), work)
    save()
    sft = entry["sft"]["job"]
    if entry["sft"].get("status", {}).get("state") != "completed":
        print(f"{name}: the SFT job {sft} has not completed; no GRPO", flush=True)
        return
    with ThreadPoolExecutor(1) as evals:
        base_and_sft = evals.submit(evaluate, f"{name}-base-sft", ["--adapter", sft, *test], "gsm8k", work)
        grpo_config = JobConfig(**{**GRPO_GPU, **grpo_settings, **samples, "method": "grpo", "init_adapter": sft,
                                   "max_steps": args.grpo_steps}).with_overrides(args.grpo_set)
        entry["grpo"] = train(f"grpo-{name}", grpo_config, work)
        if entry["grpo"]["job"]:
            entry["grpo"]["reward_trace"] = reward_trace(read_progress(job_dir(entry["grpo"]["job"])))
        save()
        entry["eval_base_sft"] = base_and_sft.result()
    report = work / f"eval-{name}-base-sft-gsm8k.json"  # gsm8k_sweep.evaluate's report, here for the overlap count
    if report.exists():
        entry["eval_base_sft"]["contamination"] = json.loads(report.read_text()).get("contamination")
    save()
    if entry["grpo"]["exit"] == 0:
        entry["eval_grpo"] = evaluate(f"{name}-grpo", ["--model", f"adapter:{entry['grpo']['job']}", *test], "gsm8k",
                                      work)
    entry["wall_s"] = round(time.perf_counter() - started, 1)
    runs = {"base": entry["eval_base_sft"].get("summary", {}).get("base"),
            "sft": entry["eval_base_sft"].get("summary", {}).get("adapter"),
            "sft_grpo": entry.get("eval_grpo", {}).get("summary", {}).get("base")}  # evaluated alone: role "base"
    entry["accuracy"] = {role: accuracy(run) for role, run in runs.items() if run}
    save()
    print(f"{name}: " + "; ".join(f"{role} {a['correct']}/{a['total']} ({a['accuracy']:.1%}, 95% {a['ci95'][0]:.1%}-"
                                  f"{a['ci95'][1]:.1%})" for role, a in entry["accuracy"].items()), flush=True)


def device_env() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "grpo-h200.json"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--root", help="data root (MATH_STUDIO_HOME) of the jobs; default: WORK/root, made here")
    parser.add_argument("--work", default="/tmp/grpo-chain", help="configs, logs and evaluation reports")
    parser.add_argument("--sft-job", action="append", default=[], metavar="DATASET=JOB",
                        help="a finished SFT job of the data root to start GRPO from, instead of training one")
    parser.add_argument("--grpo-steps", type=int, default=20, help="GRPO optimizer steps (max_steps)")
    parser.add_argument("--test-limit", type=int, help="the first N test problems (default: all of GSM8K's, "
                        f"{BASIC_MATH_TEST} of builtin:basic-math's)")
    parser.add_argument("--max-samples", type=int, default=0, help="training examples of SFT and GRPO (0: as set)")
    parser.add_argument("--grpo-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a GRPO job setting over GRPO_GPU (e.g. for a try on a CPU)")
    args = parser.parse_args(argv)
    args.sft_job = dict(pair.split("=", 1) for pair in args.sft_job)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MATH_STUDIO_HOME"] = str(Path(args.root).resolve() if args.root else work / "root")
    from trainer.models import embedded_checkpoint

    embedded_checkpoint()  # converted once here, before the datasets' jobs start at once
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(sys.argv), "device_env": device_env(), "data_root": os.environ["MATH_STUDIO_HOME"],
               "grpo_gpu": GRPO_GPU, "grpo_steps": args.grpo_steps, "grpo_set": args.grpo_set,
               "note": f"The datasets {args.datasets} ran at once, and each base+SFT evaluation while its GRPO job "
                       "trained: wall times are those of a shared GPU.", "datasets": {}}
    lock = threading.Lock()

    def save():
        with lock:
            out.write_text(json.dumps(results, indent=1))

    started = time.perf_counter()
    with ThreadPoolExecutor(len(args.datasets)) as chains:
        for done in [chains.submit(chain, name, args, results, save, work) for name in args.datasets]:
            done.result()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
