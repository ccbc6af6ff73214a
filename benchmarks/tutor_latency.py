"""Tutor latency and throughput with N students asking at once, with continuous batching on and off.

    python benchmarks/tutor_latency.py --students 1 8 32 --max-new-tokens 256 --out results/tutor_latency.json
    python benchmarks/tutor_latency.py --students 1 4 --max-new-tokens 32 --batching on off     # a quick CPU run
    python benchmarks/tutor_latency.py --model /models/gemma-3-4b-random --students 1 8 32     # any model choice

For each batching mode it starts the real app (`python app.py`, MATH_STUDIO_BATCHING set to the mode) on a fresh
data root, as benchmarks/load_students.py does, asks one unmeasured question (the model loads), then for each
student count lets that many students ask at the same moment through the Gradio queue (gradio_client's
`submit(..., api_name="/chat")`, streamed), `--rounds` questions each, one after the other.

Reported per mode and student count: time to first token p50/p95 (from submitting, so queue waits count), each
student's decode rate (tokens after the first, over the time after the first), and the aggregate rate (every
reply's tokens over the wall time of the round). Tokens are the final replies re-tokenized with the model's
tokenizer. Each request's raw timings are kept too, with `first_tokens`, the tokens of the first text the student saw:
about 1 when text streams as it comes, the whole reply when it was held back (a reply without a space, see
benchmarks/train_throughput.py write_random_model). The JSON (`--out`) also holds the command line and the machine.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_students import QUESTIONS, app_process, fresh_home, percentile  # noqa: E402
from trainer.models import EMBEDDED  # noqa: E402

POLL_S = 0.01  # how often a student looks for the first streamed output


def ask(client, question: str, model: str, max_new_tokens: int, temperature: float) -> dict:
    """One question: when it was submitted, when its first text arrived and what it was, when it ended, the reply."""
    started = time.monotonic()
    job = client.submit(question, [], model, temperature, 0.9, max_new_tokens, "", False, api_name="/chat")
    first, first_text = None, ""
    while not job.done():
        if first is None and job.outputs():
            first, first_text = time.monotonic(), str(job.outputs()[0])
        time.sleep(POLL_S)
    ended = time.monotonic()
    try:
        reply = job.result()
    except Exception as exc:  # noqa: BLE001 - counted and reported by message: what the student would see
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"started": started, "first": first or ended, "first_text": first_text or reply or "", "ended": ended,
            "reply": reply or ""}


def ask_directly(question: str, model: str, max_new_tokens: int, temperature: float) -> dict:
    """One question through tutor.chat.stream_reply in this process: the serving path without the web server."""
    from tutor.chat import ChatSettings, stream_reply

    started, first, first_text, reply = time.monotonic(), None, "", ""
    for reply in stream_reply(model, [{"role": "user", "content": question}],
                              ChatSettings(temperature=temperature, top_p=0.9, max_new_tokens=max_new_tokens)):
        if first is None:
            first, first_text = time.monotonic(), reply
    ended = time.monotonic()
    return {"started": started, "first": first or ended, "first_text": first_text or reply, "ended": ended,
            "reply": reply}


def round_of(url: str | None, students: int, rounds: int, model: str, max_new_tokens: int, temperature: float,
             tokenizer) -> dict:
    """`students` students asking at once, `rounds` questions each; the figures of the module docstring. Without
    `url`, each asks through ask_directly."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(students)] if url else []
    results, lock, start = [], threading.Lock(), threading.Barrier(students)

    def student(i: int) -> None:
        start.wait()
        for r in range(rounds):
            question = QUESTIONS[(i + r) % len(QUESTIONS)]
            result = (ask(clients[i], question, model, max_new_tokens, temperature) if url
                      else ask_directly(question, model, max_new_tokens, temperature))
            with lock:
                results.append(result)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(students)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    served = [r for r in results if "error" not in r]
    for r in served:
        r["tokens"], r["first_tokens"] = (len(tokenizer(r[key], add_special_tokens=False)["input_ids"])
                                          for key in ("reply", "first_text"))
    decode = [(r["tokens"] - 1) / (r["ended"] - r["first"])
              for r in served if r["tokens"] > 1 and r["ended"] > r["first"]]
    tokens = sum(r["tokens"] for r in served)
    return {
        "students": students, "rounds": rounds, "requests": len(results), "served": len(served),
        "errors": sorted(r["error"] for r in results if "error" in r), "wall_s": round(wall, 2),
        "first_token_s": {"p50": percentile([r["first"] - r["started"] for r in served], 0.5),
                          "p95": percentile([r["first"] - r["started"] for r in served], 0.95)},
        "decode_tokens_per_s_per_student": {"p50": percentile(decode, 0.5), "p5": percentile(decode, 0.05),
                                            "mean": round(statistics.mean(decode), 2) if decode else None},
        "aggregate_tokens_per_s": round(tokens / wall, 2), "tokens": tokens,
        "reply_tokens_mean": round(tokens / len(served), 1) if served else None,
        "requests_s": [{"first": round(r["first"] - r["started"], 3), "ended": round(r["ended"] - r["started"], 3),
                        "offset": round(r["started"] - began, 3), "tokens": r["tokens"],
                        "first_tokens": r["first_tokens"]} for r in served],
    }


@contextlib.contextmanager
def serving(home: Path, mode: str, direct: bool):
    """The app with MATH_STUDIO_BATCHING=mode, yielding its URL; with `direct`, this process in that mode (None)."""
    if not direct:
        with app_process(home, home.parent / f"app-batching-{mode}.log", {"MATH_STUDIO_BATCHING": mode}) as (url, _):
            yield url
        return
    os.environ["MATH_STUDIO_BATCHING"] = mode
    try:
        yield None
    finally:
        from tutor.models import clear_cache

        clear_cache()


def model_tokenizer(choice: str):
    """The tokenizer the app uses for a choice: the adapter's own when it has one, else its base model's."""
    from transformers import AutoTokenizer

    from tutor.models import adapter_base, base_path, find_adapter

    adapter = find_adapter(choice)
    if adapter is None:
        return AutoTokenizer.from_pretrained(base_path(choice))
    own = (adapter / "tokenizer_config.json").exists()
    return AutoTokenizer.from_pretrained(adapter if own else adapter_base(adapter))


def machine() -> dict:
    import torch
    import transformers

    info = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        info["gpus"] = [f"{torch.cuda.get_device_name(i)}, {torch.cuda.get_device_properties(i).total_memory >> 20} MiB"
                        for i in range(torch.cuda.device_count())]
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="questions each student asks, one after the other")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="the app's default; 0 is greedy")
    parser.add_argument("--model", default=EMBEDDED, help="any model choice: embedded:..., a folder, adapter:...")
    parser.add_argument("--batching", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--students-off", type=int, nargs="+", help="student counts with batching off (--students)")
    parser.add_argument("--rounds-off", type=int, help="questions each student asks with batching off (--rounds)")
    parser.add_argument("--direct", action="store_true",
                        help="ask through tutor.chat.stream_reply in this process, without starting the app")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()

    home = fresh_home(embedded=args.model == EMBEDDED)
    os.environ["MATH_STUDIO_HOME"] = str(home)  # where the choice resolves, here as in the app
    tokenizer = model_tokenizer(args.model)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(), "model": args.model,
              "tutor_4bit": os.environ.get("MATH_STUDIO_TUTOR_4BIT", "1") != "0",
              "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "results": []}
    for mode in args.batching:
        with serving(home, mode, args.direct) as url:
            warm = round_of(url, 1, 1, args.model, args.max_new_tokens, args.temperature, tokenizer)
            if warm["errors"]:
                raise SystemExit(f"The app could not answer with batching {mode}: {warm['errors'][0]}")
            off = mode == "off"
            for students in (args.students_off or args.students) if off else args.students:
                rounds = (args.rounds_off or args.rounds) if off else args.rounds
                result = {"batching": mode, **round_of(url, students, rounds, args.model, args.max_new_tokens,
                                                       args.temperature, tokenizer)}
                report["results"].append(result)
                print(json.dumps(result), flush=True)
                if args.out:  # after every round: a run cut short keeps what it measured
                    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if not any(r["errors"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
