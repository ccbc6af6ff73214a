"""Data-parallel scaling: the same job config trained through the worker's own command on 1 GPU and on N GPUs.

    python benchmarks/data_parallel.py --data ../shared/data/gsm8k/train.jsonl --tokenizer DIR --gpus 1 2 \
        --out results.json

With more than one GPU visible, `trainer.jobs.worker_command` starts `accelerate launch`, one process per GPU;
this runs that command for each GPU count (CUDA_VISIBLE_DEVICES set to the first N) on a job with the app's
defaults and a random-weight model of the shape, and reads the job's progress.jsonl: the tokens per second between
the --warmup-th logged step and the last one (all processes together). A figure counts only from a run that trains:
each row records its first and last loss and largest grad norm, and the script exits 1 when a run's loss or grad norm
is not finite or its loss did not fall (train_throughput.training_check).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import SHAPES, training_check, write_random_model  # noqa: E402

from trainer import jobs  # noqa: E402
from trainer.config import JobConfig  # noqa: E402


def steady_rate(rows: list[dict], warmup: int) -> float:
    """Tokens per second between the warmup-th step and the last, from the cumulative rates the worker logs."""
    rows = [r for r in rows if r.get("loss") is not None]
    first, last = rows[warmup], rows[-1]
    tokens = last["tokens_per_second"] * last["elapsed_s"] - first["tokens_per_second"] * first["elapsed_s"]
    return tokens / (last["elapsed_s"] - first["elapsed_s"])


def run(gpus: int, config: JobConfig, warmup: int) -> dict:
    path = jobs.create_job(config, name=f"dp{gpus}")
    command = jobs.worker_command(path, gpus=gpus)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(gpus)))}
    with open(path / "train.log", "w") as log:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    status = jobs.read_status(path)
    row = {"gpus": gpus, "command": " ".join(command[1:]), "exit_code": code, "state": status["state"],
           "reason": status.get("reason", "")}
    rows = jobs.read_progress(path)
    if code == 0 and len(rows) > warmup + 1:
        metrics = json.loads((path / "metrics.json").read_text())
        row.update(steps=metrics["steps"], train_tokens=metrics["train_tokens"],
                   tokens_per_s=round(steady_rate(rows, warmup), 1), memory_mb_rank0=rows[-1]["memory_mb"],
                   **training_check(rows))
    else:
        row["log_tail"] = jobs.tail(path, 30)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shape", default="llama3.2-3b", choices=list(SHAPES))
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="logged steps left out of the rate")
    parser.add_argument("--work", default=tempfile.gettempdir() + "/data-parallel")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    work = Path(args.work)
    os.environ["MATH_STUDIO_HOME"] = str(work / "studio")
    model_dir = write_random_model(args.shape, args.tokenizer, work / args.shape)
    config = JobConfig(base_model=str(model_dir), dataset=f"file:{args.data}", max_samples=0, eval_fraction=0,
                       save_steps=10**6, max_steps=args.steps)
    result = {"shape": args.shape, "config": config.to_dict(), "command": " ".join(sys.argv), "runs": []}
    for gpus in args.gpus:
        result["runs"].append(run(gpus, config, args.warmup))
        print(json.dumps(result["runs"][-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
    rates = {r["gpus"]: r.get("tokens_per_s") for r in result["runs"]}
    if rates.get(1) and len(rates) > 1:
        result["scaling"] = {g: round(r / rates[1], 2) for g, r in rates.items() if r}
        print("scaling vs 1 GPU:", result["scaling"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    refused = [r for r in result["runs"] if r.get("problems") or r["exit_code"]]
    for r in refused:
        print(f"REFUSED {r['gpus']} GPU(s): {'; '.join(r.get('problems', [])) or r['reason']}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
