"""Command line of the tutor: `python -m tutor eval --model M [--adapter A] --benchmark gsm8k|math500 ...`, or
`python -m tutor eval --job ID` to run a queued evaluation job (tutor/eval_job.py)."""

import argparse
import os
import sys

# Before torch loads OpenMP: its threads sleep at a barrier instead of spinning. On a CPU that other processes share,
# spinning threads wait for each other: `--limit 4` generated in 72 s passive against 222 s spinning on this 2-core
# machine with 3 processes running (benchmarks/README.md). Set OMP_WAIT_POLICY=ACTIVE to spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tqdm import tqdm

from trainer.models import ModelError
from tutor.evaluate import (
    BENCHMARKS, EvalConfig, EvalError, Estimate, default_report_path, evaluate, summary_lines, write_report,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = EvalConfig()
    parser = argparse.ArgumentParser(prog="python -m tutor", description="Math tutor tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("eval", help="benchmark accuracy of a model, or of a base and its adapter")
    ev.add_argument("--model", default=defaults.model, help="embedded:..., merged:<name>, a Hub id or a folder")
    ev.add_argument("--adapter", default=defaults.adapter, help="a job id or an adapter folder; compared with its base")
    ev.add_argument("--benchmark", default=defaults.benchmark, choices=list(BENCHMARKS))
    ev.add_argument("--data-file", default=defaults.data_file, help="JSONL test problems instead of the default")
    ev.add_argument("--limit", type=int, default=defaults.limit, help="the first N problems (0: all)")
    ev.add_argument("--batch-size", type=int, default=defaults.batch_size,
                    help="problems generated at once (0: as many as the GPU's free memory holds; 16 on a CPU)")
    ev.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    ev.add_argument("--one-at-a-time", action="store_true", help="one prompt per generate() call (for comparison)")
    ev.add_argument("--out", default=defaults.out, help="report path (default: the job's eval/ folder)")
    ev.add_argument("--config", help="an evaluation config (YAML) instead of the options above")
    ev.add_argument("--job", help="run the queued evaluation job with this id (the app's queue starts it so)")
    return parser.parse_args(argv)


class Bars:
    """A tqdm bar per model, driven by evaluate()'s progress callback."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}

    def __call__(self, done: int, total: int, label: str) -> None:
        bar = self.bars.get(label)
        if bar is None:
            bar = self.bars[label] = tqdm(total=total, desc=label[:40], unit="problem")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def say_estimate(estimate: Estimate, label: str) -> None:
    print(f"{label}: {estimate}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = vars(parse_args(sys.argv[1:] if argv is None else argv))
    config_file, job = args.pop("config"), args.pop("job")
    del args["command"]
    if job:
        from trainer.store import job_dir
        from tutor.eval_job import run_eval_job

        return run_eval_job(job_dir(job))
    try:
        config = EvalConfig.load(config_file) if config_file else EvalConfig(**args)
        out = config.out or default_report_path(config)
        report = evaluate(config, progress=Bars(), estimated=say_estimate)
    except (ModelError, EvalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_report(report, out)
    print("\n".join(summary_lines(report)))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
