"""Many students chatting at once with the real app, through its API (gradio_client), as a class would.

    python benchmarks/load_students.py --students 20 --seconds 120 --train --out load.json   # the documented form
    python benchmarks/load_students.py --students 6 --seconds 20                               # what CI runs
    python benchmarks/load_students.py --url http://127.0.0.1:7860 --students 20              # a running app

Without --url it starts `python app.py` itself on a fresh data root (the embedded model linked in from the default
data root, converted there once if needed). With --train a training job on the embedded model (see
launch_training) is launched through the API first and runs while the students chat; it is cancelled at the end.

Each student asks a question (/chat, the embedded model, `--max-new-tokens`), reads the streamed reply to the end,
thinks for 1 to 3 s, and asks again until --seconds have passed; the requests then in flight are finished and
counted. Reported: requests served, errors (by message; "busy" refusals of a full queue apart), p50/p95 of the
queue wait (until the server starts the request), time to first token and whole reply, and the memory of the app
and its training worker over time.
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.models import EMBEDDED  # noqa: E402

QUESTIONS = [
    "If 3x + 7 = 22, what is x?",
    "What is 15% of 80?",
    "A train travels 120 km in 2 hours. What is its average speed?",
    "Simplify 3/4 + 1/6.",
    "What is the area of a circle of radius 3?",
    "Tom has 5 apples and buys 3 bags of 4 apples. How many apples does he have?",
    "Solve x^2 - 5x + 6 = 0.",
    "What is the next prime number after 23?",
]
# The adversarial student (--adversary): the longest history the limits allow (400 messages, 200,000 characters, far
# more tokens than any context), and symbolic answers to "Check my answer": the tower that took 5.3 s of the one shared
# checker (now refused before sympy), and a product whose expansion runs into the checker's deadline.
WORST_HISTORY = [{"role": role, "content": "1 + " * 125} for _ in range(200) for role in ("user", "assistant")]
WORST_ANSWERS = ["9^{9^{9^{9}}}", "(a+b+c+d+e+f)^{999}(x+y+z+w)^{999}"]
BUSY = "Queue is full"  # what gradio_client raises when the app's queue is full (the page says "currently busy")


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def ask(client, question: str, model: str, max_new_tokens: int) -> dict:
    """One request: the times from submitting to processing, to the first token, and to the end."""
    from gradio_client.utils import Status

    started = time.monotonic()
    job = client.submit(question, [], model, 0.7, 0.9, max_new_tokens, "", False, api_name="/chat")
    processing = first = None
    while not job.done():
        now = time.monotonic()
        if processing is None and job.status().code in (Status.PROCESSING, Status.ITERATING):
            processing = now
        if first is None and job.outputs():
            first = now
            processing = processing or now
        time.sleep(0.05)
    ended = time.monotonic()
    try:
        reply = job.result()
    except Exception as exc:  # noqa: BLE001 - counted and reported by message: what the student would see
        return {"error": f"{type(exc).__name__}: {exc}", "total_s": ended - started}
    first = first or ended
    return {"queue_s": (processing or first) - started, "first_token_s": first - started, "total_s": ended - started,
            "chars": len(reply or "")}


def student(url: str, until: float, model: str, max_new_tokens: int, seed: int, results: list, lock) -> None:
    from gradio_client import Client

    rng = random.Random(seed)
    client = Client(url, verbose=False)
    while time.monotonic() < until:
        result = ask(client, rng.choice(QUESTIONS), model, max_new_tokens)
        result["at_s"] = round(until - time.monotonic(), 1)
        with lock:
            results.append(result)
        time.sleep(rng.uniform(1, 3))


def call_hidden(url: str, api_name: str, data: list, session: str) -> dict:
    """Call a handler kept off the API as the page does (by index, through the queue, in `session`)."""
    import httpx

    config = httpx.get(f"{url}/config", timeout=60).json()
    ((index, inputs),) = [(d["id"], len(d["inputs"])) for d in config["dependencies"] if d.get("api_name") == api_name]
    data = [*data, *[None] * (inputs - len(data))]  # the session's states are the server's: sent as None
    httpx.post(f"{url}/gradio_api/queue/join", timeout=60, json={
        "data": data, "fn_index": index, "session_hash": session, "event_data": None, "trigger_id": None})
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=600) as events:
        for line in events.iter_lines():
            message = json.loads(line[len("data:"):]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    return {}


def adversary(url: str, until: float, model: str, max_new_tokens: int, results: list, lock) -> None:
    """One student sending the worst history and the worst answers within the limits, over and over."""
    import uuid

    from gradio_client import Client

    client = Client(url, verbose=False)
    session = uuid.uuid4().hex
    call_hidden(url, "new_practice", [], session)  # a practice problem, so that the checks reach the checker
    while time.monotonic() < until:
        started = time.monotonic()
        checks = threading.Thread(target=lambda: [call_hidden(url, "check_answer", [answer], session)
                                                  for answer in WORST_ANSWERS])  # one stream per session at a time
        checks.start()
        try:
            client.predict("What is 2 + 2?", WORST_HISTORY, model, 0.7, 0.9, max_new_tokens, "", False,
                           api_name="/chat")
            outcome = "answered"
        except Exception as exc:  # noqa: BLE001 - recorded: a refusal of the history would be a limit too tight
            outcome = f"{type(exc).__name__}: {exc}"
        checks.join()
        with lock:
            results.append({"outcome": outcome, "round_s": round(time.monotonic() - started, 1)})


def memory_sampler(pid: int | None, stop: threading.Event, samples: list, every_s: float = 5.0) -> None:
    """RSS of the app and of its children (a training worker), and the machine's available memory, in MiB."""
    started = time.monotonic()
    while not stop.is_set():
        sample = {"t_s": round(time.monotonic() - started, 1),
                  "available_mib": psutil.virtual_memory().available >> 20}
        if pid is not None:
            try:
                app = psutil.Process(pid)
                sample["app_mib"] = app.memory_info().rss >> 20
                sample["children_mib"] = sum(c.memory_info().rss for c in app.children(recursive=True)) >> 20
            except psutil.NoSuchProcess:
                sample["app_mib"] = None
        samples.append(sample)
        stop.wait(every_s)


def run_load(url: str, students: int, seconds: float, model: str = EMBEDDED, max_new_tokens: int = 48,
             app_pid: int | None = None, with_adversary: bool = False) -> dict:
    """`students` threads chatting for `seconds` (and the adversary beside them); returns the report (see the module
    docstring)."""
    results, lock, stop, memory, attacks = [], threading.Lock(), threading.Event(), [], []
    sampler = threading.Thread(target=memory_sampler, args=(app_pid, stop, memory), daemon=True)
    sampler.start()
    started = time.monotonic()
    until = started + seconds
    threads = [threading.Thread(target=student, args=(url, until, model, max_new_tokens, i, results, lock))
               for i in range(students)]
    if with_adversary:
        threads.append(threading.Thread(target=adversary, args=(url, until, model, max_new_tokens, attacks, lock)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    sampler.join()
    served = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    return {
        "students": students, "seconds": seconds, "wall_s": round(time.monotonic() - started, 1), "model": model,
        "max_new_tokens": max_new_tokens, "requests": len(results), "served": len(served),
        "busy": sum(BUSY in e for e in errors), "errors": sorted(e for e in errors if BUSY not in e),
        "queue_s": {"p50": percentile([r["queue_s"] for r in served], 0.5),
                    "p95": percentile([r["queue_s"] for r in served], 0.95)},
        "first_token_s": {"p50": percentile([r["first_token_s"] for r in served], 0.5),
                          "p95": percentile([r["first_token_s"] for r in served], 0.95)},
        "total_s": {"p50": percentile([r["total_s"] for r in served], 0.5),
                    "p95": percentile([r["total_s"] for r in served], 0.95)},
        "reply_chars_mean": round(statistics.mean([r["chars"] for r in served]), 1) if served else None,
        "memory": memory,
        **({"adversary": attacks} if with_adversary else {}),
    }


# ---------------------------------------------------------------- starting the app and a training job

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_process(home: Path, log: Path, env: dict | None = None):
    """`python app.py` on a free port with MATH_STUDIO_HOME=home; yields (url, pid) once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MATH_STUDIO_HOME": str(home), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    env.pop("INSTRUCTOR_PASSWORD", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the app did not start:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def fresh_home(embedded: bool = True) -> Path:
    """A temporary data root, with the embedded model (converted once under the default data root) linked in unless
    `embedded` is false (on a machine without it, for another model)."""
    from trainer.models import embedded_checkpoint

    os.environ.pop("MATH_STUDIO_HOME", None)
    home = Path(tempfile.mkdtemp(prefix="load-students-")) / "studio"
    (home / "models" / "embedded").mkdir(parents=True)
    if embedded:
        checkpoint = embedded_checkpoint()
        (home / "models" / "embedded" / checkpoint.name).symlink_to(checkpoint)
    return home


def launch_training(url: str) -> str:
    """Queue a LoRA job on the embedded model through the API, long enough to outlast the load. On a CPU it is the
    offline default in full precision with small batches: in 4-bit a CPU step of the default batch takes minutes."""
    import torch
    from gradio_client import Client

    import app
    from trainer.config import PRESETS

    values = {**PRESETS["offline-default"].to_dict(), "max_steps": 10_000, "max_samples": 256, "eval_fraction": 0}
    if not torch.cuda.is_available():
        values.update(quantization="none", per_device_batch_size=4, max_seq_length=256, gradient_checkpointing="off")
    form = [", ".join(v) if isinstance(v, list) else v for v in (values[f.name] for f in app.CONFIG_FIELDS)]
    return Client(url, verbose=False).predict("", "load-test training", *form, api_name="/launch_job")["value"]


def job_action(url: str, api_name: str, job_id: str) -> None:
    from gradio_client import Client

    Client(url, verbose=False).predict("", job_id, api_name=api_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--train", action="store_true", help="keep a training job running meanwhile")
    parser.add_argument("--adversary", action="store_true",
                        help="run twice, without and with one student sending the worst history and answers")
    parser.add_argument("--url", help="a running app instead of starting one (no memory figures for the app)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()

    def measure(url: str, pid: int | None) -> dict:
        job = launch_training(url) if args.train else None
        if job:
            from trainer import jobs

            path = Path(os.environ["MATH_STUDIO_HOME"]) / "jobs" / job
            while jobs.refresh(path).get("step", 0) < 1:  # the worker is training before the students come
                time.sleep(1)
        report = run_load(url, args.students, args.seconds, args.model, args.max_new_tokens, pid)
        if args.adversary:
            attacked = run_load(url, args.students, args.seconds, args.model, args.max_new_tokens, pid, True)
            report = {"without": report, "with_adversary": attacked,
                      "first_token_p95_ratio": round(attacked["first_token_s"]["p95"] / report["first_token_s"]["p95"], 2)}
        if job:
            report["training"] = {"job": job, "steps_during_load": jobs.refresh(path)["step"]}
            job_action(url, "/job_action", job)  # cancel
        return report

    if args.url:
        report = measure(args.url, None)
    else:
        home = fresh_home()
        os.environ["MATH_STUDIO_HOME"] = str(home)
        with app_process(home, home.parent / "app.log") as (url, pid):
            report = measure(url, pid)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    runs = [report["without"], report["with_adversary"]] if args.adversary else [report]
    for run in runs:
        summary = {k: v for k, v in run.items() if k != "memory"}
        peak = max(((m.get("app_mib") or 0) + (m.get("children_mib") or 0) for m in run["memory"]), default=None)
        print(json.dumps({**summary, "peak_app_and_worker_mib": peak}, indent=1))
    if args.adversary:
        print(f"first token p95 with the adversary / without: {report['first_token_p95_ratio']}")
    return 0 if not any(run["errors"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
