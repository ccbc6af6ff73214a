"""First-token latency for one student on the embedded model, cold and warm, through the real app's `/chat`.

    python benchmarks/first_token.py --questions 10 --out benchmarks/results/first_token-cpu.json

Starts `python app.py` on a fresh data root (the app warms its default model in the background at start), asks
one question the moment the page answers (cold: what the first student of a fresh server sees), then
`--questions` more one after the other (warm). Time to first token is from submitting to the first streamed text,
through the Gradio queue, with gradio_client. The JSON holds the command line, the machine and every timing.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_students import QUESTIONS, app_process, fresh_home, percentile  # noqa: E402
from benchmarks.tutor_latency import ask  # noqa: E402
from trainer.models import EMBEDDED  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=10, help="warm questions after the cold one")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from gradio_client import Client

    home = fresh_home()
    with app_process(home, home.parent / "app.log") as (url, _):
        up = time.monotonic()
        client = Client(url, verbose=False)
        timings = [ask(client, QUESTIONS[i % len(QUESTIONS)], EMBEDDED, args.max_new_tokens, 0.0)
                   for i in range(args.questions + 1)]
    errors = [t["error"] for t in timings if "error" in t]
    if errors:
        raise SystemExit(f"failed replies: {errors}")
    firsts = [round(t["first"] - t["started"], 3) for t in timings]
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform(),
              "cpus": os.cpu_count(), "cold_s": firsts[0], "cold_from_page_up_s": round(timings[0]["first"] - up, 3),
              "warm_p50_s": percentile(firsts[1:], 0.5), "warm_p95_s": percentile(firsts[1:], 0.95),
              "warm_mean_s": round(statistics.mean(firsts[1:]), 3), "first_token_s": firsts,
              "replies": [t["reply"] for t in timings]}
    print(json.dumps({k: v for k, v in result.items() if k != "replies"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
