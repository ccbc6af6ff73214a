"""Does the default job teach? The one-click preset trained and evaluated through the app's own command lines.

Trains `python -m trainer train --preset gsm8k-embedded` (the embedded model on all of GSM8K's train set with
JobConfig's defaults), then evaluates base and adapter with the default evaluation settings (`python -m tutor eval
--adapter JOB`) on GSM8K's full test set (the timing benchmarks/README.md reports), on MATH-500 and on a held-out
split of builtin:basic-math (test sets it was not trained on).

    python3 benchmarks/learning.py --out learning.json [--set key=value ...] [--job JOB]

Writes its JSON after every stage. Needs ../shared/data beside the repository, and the embedded model.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gsm8k_sweep import evaluate, show, train  # noqa: E402

# test sets the job was not trained on: (the benchmark's protocol, more options); builtin:basic-math's "test" split
# draws other problems than its train split
SECOND_SETS = {"math500": ("math500", []),
               "basic_math": ("gsm8k", ["--data-file", "builtin:basic-math", "--limit", "500"])}


def device_env() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], help="key=value on top of the preset (none: defaults)")
    parser.add_argument("--job", help="evaluate this finished job instead of training one")
    args = parser.parse_args()
    out = Path(args.out)
    work = out.parent / "learning-work"
    work.mkdir(parents=True, exist_ok=True)
    results = {"device_env": device_env(), "commands": [" ".join(sys.argv)]}

    def save():
        out.write_text(json.dumps(results, indent=1))

    if args.job:
        results["train"] = {"job": args.job, **show(args.job)}
    else:
        results["train"] = train("default", args.set, work)
        if results["train"]["exit"]:
            save()
            return 1
    job = results["train"]["job"]
    results["job_config"] = results["train"].get("job_config")
    save()
    results["eval"] = evaluate("default", ["--adapter", job], "gsm8k", work)
    save()
    for name, (benchmark, extra) in SECOND_SETS.items():
        results[f"eval_{name}"] = evaluate(name, ["--adapter", job, *extra], benchmark, work)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
