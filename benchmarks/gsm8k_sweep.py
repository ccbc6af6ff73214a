"""Which job settings teach the embedded SmolLM2 GSM8K: a sweep through the app's own command lines.

Each config trains with `python -m trainer train --preset gsm8k-embedded --set ...` (all of GSM8K's train set), all
of them at once on one GPU (a 135M model leaves it mostly idle), and each adapter is evaluated alone with
`python -m tutor eval --model adapter:JOB` on GSM8K's full test set and on MATH-500, beside one run of the base.
Then the best config on GSM8K gets `python -m tutor eval --adapter JOB` with the default evaluation settings (base and
adapter, the timing that benchmarks/README.md reports), and MATH-500 the same way.

    python3 benchmarks/gsm8k_sweep.py --out sweep.json [--only NAME ...] [--eval-parallel 4]

Needs ../shared/data (GSM8K train and test, MATH-500) beside the repository, and the embedded model. Each job's entry
records its first and last loss and largest grad norm; the sweep exits 1 when a job's loss or grad norm was not finite
or its loss did not fall (train_throughput.training_check): its accuracy is then not that of a model that trained.
"""

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.train_throughput import training_check  # noqa: E402
from trainer.store import job_dir, read_progress  # noqa: E402

# name: --set overrides on the gsm8k-embedded preset (batch 64, LoRA r16 on all 7 projections, 4-bit, cosine)
CONFIGS = {
    "lr1e-3_ep3": ["learning_rate=1e-3", "num_epochs=3"],
    "lr2e-3_ep3": ["learning_rate=2e-3", "num_epochs=3"],
    "lr4e-3_ep3": ["learning_rate=4e-3", "num_epochs=3"],
    "lr2e-3_ep5": ["learning_rate=2e-3", "num_epochs=5"],
    "lr2e-3_ep3_batch16": ["learning_rate=2e-3", "num_epochs=3", "per_device_batch_size=16"],  # 1e-3 by the rule
    "lr2e-3_ep3_r64": ["learning_rate=2e-3", "num_epochs=3", "lora_r=64", "lora_alpha=128"],
}
BENCHMARKS = ["gsm8k", "math500"]
SWEEP_EVAL_BATCH = 660  # each of the parallel evaluations: two batches of GSM8K's 1,319, so four fit at once


def run(command: list[str], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    return code, round(time.perf_counter() - started, 1)


def train(name: str, sets: list[str], work: Path) -> dict:
    command = [sys.executable, "-m", "trainer", "train", "--preset", "gsm8k-embedded", "--name", name]
    for pair in sets:
        command += ["--set", pair]
    log = work / f"train-{name}.log"
    code, wall = run(command, log)
    text = log.read_text()
    job = next((line.split()[1] for line in text.splitlines() if line.startswith("job ")), None)
    result = {"name": name, "sets": sets, "command": " ".join(command[1:]), "exit": code, "wall_s": wall, "job": job}
    if job:
        result.update(show(job), **training_check(read_progress(job_dir(job))))
    if code:
        result["log_tail"] = text[-3000:]
    print(f"trained {name}: exit {code} in {wall} s, job {job}", flush=True)
    return result


def show(job: str) -> dict:
    """The job's status, last progress row and config, as `python -m trainer show` prints them."""
    text = subprocess.run([sys.executable, "-m", "trainer", "show", job], capture_output=True, text=True).stdout
    head, _, rest = text.partition("last log: ")
    last, _, config = rest.partition("\n")
    return {"status": json.loads(head), "last_progress": json.loads(last) if last else None,
            "job_config": yaml.safe_load(config)}


def evaluate(label: str, args: list[str], benchmark: str, work: Path) -> dict:
    out = work / f"eval-{label}-{benchmark}.json"
    command = [sys.executable, "-m", "tutor", "eval", *args, "--benchmark", benchmark, "--out", str(out)]
    code, wall = run(command, work / f"eval-{label}-{benchmark}.log")
    if code:
        print((work / f"eval-{label}-{benchmark}.log").read_text()[-2000:], flush=True)
        return {"command": " ".join(command[1:]), "exit": code, "wall_s": wall}
    report = json.loads(out.read_text())
    print(f"evaluated {label} on {benchmark}: " + "; ".join(
        f"{role} {run['correct']}/{run['total']} in {run['generate_s']} s" for role, run in report["summary"].items()),
        flush=True)
    return {"command": " ".join(command[1:]), "exit": 0, "wall_s": wall, "protocol": report["protocol"],
            "summary": report["summary"], "disagreements": len(report.get("disagreements", []))}


def accuracy(entry: dict, benchmark: str) -> float:
    summary = entry.get("eval", {}).get(benchmark, {}).get("summary")
    return summary["base"]["accuracy"] if summary else -1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the sweep's JSON (rewritten as results come)")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--eval-parallel", type=int, default=4, help="evaluations at once")
    args = parser.parse_args()
    out = Path(args.out)
    work = out.parent / "sweep-work"
    work.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(sys.argv), "configs": {}, "base": {}}
    lock = threading.Lock()

    def save():
        with lock:
            out.write_text(json.dumps(results, indent=1))

    evals = ThreadPoolExecutor(args.eval_parallel)
    pending = []
    for benchmark in BENCHMARKS:
        def base(benchmark=benchmark):
            results["base"][benchmark] = evaluate(
                "base", ["--model", "embedded:smollm2-135m-instruct", "--batch-size", str(SWEEP_EVAL_BATCH)],
                benchmark, work)
            save()
        pending.append(evals.submit(base))

    def train_then_eval(name):
        entry = results["configs"][name] = train(name, CONFIGS[name], work)
        save()
        if entry["exit"] == 0:
            entry["eval"] = {}
            for benchmark in BENCHMARKS:
                def one(benchmark=benchmark):
                    entry["eval"][benchmark] = evaluate(
                        name, ["--model", f"adapter:{entry['job']}", "--batch-size", str(SWEEP_EVAL_BATCH)],
                        benchmark, work)
                    save()
                pending.append(evals.submit(one))

    with ThreadPoolExecutor(len(args.only)) as trainers:
        list(trainers.map(train_then_eval, args.only))
    while pending:
        pending.pop(0).result()
    ranked = sorted(results["configs"], key=lambda n: accuracy(results["configs"][n], "gsm8k"), reverse=True)
    results["ranking_gsm8k"] = [(n, accuracy(results["configs"][n], "gsm8k"), accuracy(results["configs"][n], "math500"))
                                for n in ranked]
    save()
    best = results["configs"][ranked[0]]
    print(f"best on GSM8K: {ranked[0]} ({best['sets']})", flush=True)
    results["winner"] = {"name": ranked[0], **{k: best[k] for k in ("sets", "job", "job_config", "status")}}
    for benchmark in BENCHMARKS:  # the default evaluation settings, base and adapter, alone on the GPU
        results["winner"][benchmark] = evaluate("winner", ["--adapter", best["job"]], benchmark, work)
        save()
    refused = {name: entry["problems"] for name, entry in results["configs"].items() if entry.get("problems")}
    for name, problems in refused.items():
        print(f"REFUSED {name}: not a run that trains: {'; '.join(problems)}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
