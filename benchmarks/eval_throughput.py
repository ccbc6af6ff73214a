"""Evaluation throughput: the app's batched GSM8K evaluation against the seed notebooks' one-problem-at-a-time loop.

    python benchmarks/eval_throughput.py --shape gemma3-4b --tokenizer DIR --data ../shared/data/gsm8k/test.jsonl \
        --batch-size 256 --loop-problems 50 --out eval.json

Both go through `tutor.evaluate.evaluate` (the app's own path: `python -m tutor eval`), on a model with random weights
in the shape's published configuration (benchmarks/train_throughput.py writes it), loaded as the tutor loads it. The
batched run covers every problem of --data (--limit to cut it); the loop runs --loop-problems and is scaled to the same
count. Random weights rarely end a reply early, so both generate close to --max-new-tokens per problem: the same work.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_throughput import SHAPES, write_random_model  # noqa: E402
from tutor.evaluate import EvalConfig, evaluate  # noqa: E402


def timed_run(model: str, data: str, limit: int, batch_size: int, max_new_tokens: int, one_at_a_time: bool,
              save) -> dict:
    """One evaluation. While it runs, `save` gets the problems done and the seconds of generation so far after every
    batch, so a run cut short still tells its pace."""
    config = EvalConfig(model=model, benchmark="gsm8k", data_file=data, limit=limit, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, one_at_a_time=one_at_a_time)
    done: list[dict] = []
    clock: dict[str, float] = {}

    def progress(problems: int, total: int, _model: str) -> None:
        began = clock.setdefault("generating", time.perf_counter())  # the first call: generation begins
        if problems:
            done.append({"problems": problems, "of": total, "generate_s": round(time.perf_counter() - began, 1)})
            save({"so_far": done})

    started = time.perf_counter()
    report = evaluate(config, progress)
    summary = report["summary"]["base"]
    return {"problems": report["data"]["problems"], "wall_s": round(time.perf_counter() - started, 1),
            "batch_size": summary["batch_size"], "generate_s": summary.get("generate_s"),
            "tokens_per_s": summary.get("tokens_per_s"), "accuracy": summary.get("accuracy"),
            "device": summary.get("device")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="gemma3-4b", choices=list(SHAPES))
    parser.add_argument("--tokenizer", required=True, help="a folder with a tokenizer and chat template (SmolLM2's)")
    parser.add_argument("--data", required=True, help="GSM8K test problems as JSONL")
    parser.add_argument("--limit", type=int, default=0, help="problems of the batched run (0: all)")
    parser.add_argument("--loop-problems", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--work", default=tempfile.gettempdir())
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("MATH_STUDIO_HOME", str(Path(args.work) / "eval-throughput-home"))
    model = str(write_random_model(args.shape, args.tokenizer, Path(args.work) / args.shape))  # as train_throughput.py
    result = {"command": " ".join(["python", *sys.argv]),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "shape": args.shape, "max_new_tokens": args.max_new_tokens}
    # The loop first: it is the shorter run, and each result is written as soon as it is in, so a run cut short
    # keeps what it measured.
    for name, limit, batch_size, one_at_a_time in [("loop", args.loop_problems, 1, True),
                                                   ("batched", args.limit, args.batch_size, False)]:
        def save(partial: dict, name=name) -> None:
            result[name] = partial
            Path(args.out).write_text(json.dumps(result, indent=1))

        result[name] = timed_run(model, args.data, limit, batch_size, args.max_new_tokens, one_at_a_time, save)
        print(json.dumps({name: result[name]}), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    batched, loop = result["batched"], result["loop"]
    loop_scaled_s = loop["generate_s"] / loop["problems"] * batched["problems"]  # generation only: not the loading
    result.update(loop_generate_scaled_to_batched_problems_s=round(loop_scaled_s, 1),
                  speedup=round(loop_scaled_s / batched["generate_s"], 1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
