"""How far the Tutor's verified badge can be trusted: its precision and coverage on a held-out slice of GSM8K test.

Each problem gets the badge the app gives it, through the app's own functions (tutor/verify.py):
- a problem that states an equation or arithmetic has a known answer (`known_answer`): the reply the student sees
  (here the first sample) is verified when its answer checks against it (`reply_check`, as the chat's badge);
- any other problem goes to Verify by sampling: k replies sampled with the Tutor's settings (`ChatSettings`:
  temperature, top-p, max new tokens, system prompt; the app's sampling arguments, `sampling_kwargs`), each answer
  read as the app reads it (`sampled_answer`), clustered with the project's equivalence and verified when
  `AGREEMENT` of them agree (`sampled_known`).
The badged answer (verified: the known or agreed answer; otherwise the most common sampled one) is then compared
with the gold answer (`is_equivalent`). Reported per model: the badges, precision (right among verified), coverage
(verified among right), accuracy, and the single sampled reply's accuracy, with 95% Wilson intervals and counts.

Sampling is batched: every problem's k samples in one `generate()` batch (`num_return_sequences=k`), as many
problems at once as the GPU's free memory holds (tutor/evaluate.py's `auto_batch_size`), on weights loaded as
`python -m tutor eval` loads them (4-bit dequantized, an adapter merged: `load_for_evaluation`).

    python benchmarks/calibration.py --out calibration.json                       # the embedded model
    python benchmarks/calibration.py --adapter JOB --out calibration.json         # the adapter and its base
    python benchmarks/calibration.py --limit 2 --samples 2 --max-new-tokens 64 --out /tmp/c.json   # a CPU try

The slice is the last --limit problems of the file (default ../shared/data/gsm8k/test.jsonl), apart from any
"first N" evaluation. --samples defaults to the app's count here (5 on a GPU, 3 on a CPU).
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the app and `python -m tutor` do on a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.answers import is_equivalent  # noqa: E402
from tutor.chat import ChatSettings, build_messages, fit_prompt, sampling_kwargs  # noqa: E402
from tutor.evaluate import (  # noqa: E402
    EvalConfig, accuracy_interval, adapter_choice, auto_batch_size, base_choice, load_problems, model_device,
)
from tutor.models import load_for_evaluation  # noqa: E402
from tutor.render import split_reasoning  # noqa: E402
from tutor.verify import AGREEMENT, agreement, reply_check, sample_count, sampled_answer, sampled_known  # noqa: E402


def sample_replies(loaded, questions: list[str], settings: ChatSettings, k: int, batch_size: int = 0,
                   seed: int = 0) -> tuple[list[list[str]], dict]:
    """k replies to each question (alone after the system prompt, as the Tutor asks it), sampled in batches of
    problems, longest prompts first; also the batch size and the generation time."""
    prompts = [fit_prompt(loaded, build_messages([{"role": "user", "content": q}], settings.system_prompt),
                          settings.max_new_tokens) for q in questions]
    rows = batch_size * k or auto_batch_size(loaded, len(prompts) * k, max(map(len, prompts)) + settings.max_new_tokens)
    per_batch = max(1, rows // k)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    replies: list[list[str]] = [[] for _ in prompts]
    pad = loaded.tokenizer.pad_token_id
    torch.manual_seed(seed)
    started = time.perf_counter()
    for start in range(0, len(order), per_batch):
        batch = order[start:start + per_batch]
        width = max(len(prompts[i]) for i in batch)
        with loaded.activated() as model:
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch], device=model.device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch],
                                device=model.device)
            out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=k,
                                 **sampling_kwargs(loaded, settings))
        texts = loaded.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for j, i in enumerate(batch):
            replies[i] = texts[j * k:(j + 1) * k]
        print(f"  {min(start + per_batch, len(order))}/{len(order)} problems sampled", flush=True)
    return replies, {"problems_per_batch": per_batch, "generate_s": round(time.perf_counter() - started, 2)}


def badge_of(question: str, replies: list[str], on_gpu: bool) -> dict:
    """The app's badge for a problem given its sampled replies, and the answer it stands behind."""
    answers = [sampled_answer(reply) for reply in replies]
    verdict, known, stated = reply_check(question, split_reasoning(replies[0])[1])
    if known is not None:  # checked exactly: the chat's badge on the reply, no sampling needed
        status = {"verified": "verified", "does not check": "does not check"}.get(verdict, "uncertain")
        return {"status": status, "how": "symbolic", "answer": known.shown if status == "verified" else stated,
                "answers": answers}
    agreed, words = sampled_known(answers, on_gpu)
    _, counted = agreement(answers)
    return {"status": "verified" if agreed else "uncertain", "how": "sampling",
            "answer": agreed.shown if agreed else (counted[0][0] if counted else None),
            "answers": answers, "badge": words}


def rate(hits: int, total: int) -> dict:
    low, high = accuracy_interval(hits, total)
    return {"value": round(hits / total, 4) if total else None, "hits": hits, "of": total,
            "ci95": [round(low, 4), round(high, 4)]}


def summarize(records: list[dict]) -> dict:
    """Badge counts, precision of verified, coverage of right answers, accuracy (badged answer and single reply)."""
    verified = [r for r in records if r["status"] == "verified"]
    right = [r for r in records if r["right"]]
    replies = [ok for r in records for ok in r["replies_right"]]
    statuses = sorted({r["status"] for r in records})
    return {
        "problems": len(records),
        "badges": {s: sum(r["status"] == s for r in records) for s in statuses},
        "verified_by": {how: sum(r["how"] == how for r in verified) for how in ("sampling", "symbolic")},
        "precision_of_verified": rate(sum(r["right"] for r in verified), len(verified)),
        "coverage_of_right": rate(sum(r["status"] == "verified" for r in right), len(right)),
        "accuracy": rate(len(right), len(records)),
        "single_reply_accuracy": rate(sum(replies), len(replies)),
    }


def calibrate(choice, problems, settings: ChatSettings, k: int, on_gpu: bool, batch_size: int, seed: int) -> dict:
    started = time.perf_counter()
    loaded = load_for_evaluation(choice)
    load_s = time.perf_counter() - started
    replies, timing = sample_replies(loaded, [p.question for p in problems], settings, k, batch_size, seed)
    device = model_device(loaded)
    del loaded
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    checking = time.perf_counter()

    def record(pair) -> dict:
        problem, texts = pair
        found = badge_of(problem.question, texts, on_gpu)
        return {"id": problem.id, "question": problem.question, "gold": problem.gold, **found,
                "right": bool(found["answer"]) and is_equivalent(found["answer"], problem.gold),
                "replies_right": [bool(a) and is_equivalent(a, problem.gold) for a in found["answers"]],
                "replies": texts}

    with ThreadPoolExecutor(8) as pool:  # symbolic comparisons wait on math-verify's worker processes
        records = list(pool.map(record, zip(problems, replies)))
    return {"model": str(choice), "device": device, "summary": summarize(records),
            "seconds": {"load": round(load_s, 2), "generate": timing["generate_s"],
                        "badges": round(time.perf_counter() - checking, 2),
                        "total": round(time.perf_counter() - started, 2)},
            "problems_per_batch": timing["problems_per_batch"], "problems": records}


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['data']['problems']} problems ({report['data']['slice']}), {report['settings']['samples']} "
             f"samples each, agreement {report['settings']['agreement']:.0%}"]
    for role, run in report["runs"].items():
        s = run["summary"]

        def show(name):
            r = s[name]
            return (f"{r['value']:.1%} ({r['hits']}/{r['of']}, {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%})"
                    if r["of"] else "- (0/0)")

        lines.append(f"{role} {run['model']}: badges {s['badges']}; precision of verified {show('precision_of_verified')}"
                     f"; coverage {show('coverage_of_right')}; accuracy {show('accuracy')}; one reply "
                     f"{show('single_reply_accuracy')}; {run['seconds']['total']:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    defaults = ChatSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON report")
    parser.add_argument("--model", default="", help="the base (default: the adapter's own base, else the embedded)")
    parser.add_argument("--adapter", default="", help="a job id or an adapter folder, calibrated beside its base")
    parser.add_argument("--data-file", default="", help="test problems (default ../shared/data/gsm8k/test.jsonl)")
    parser.add_argument("--limit", type=int, default=300, help="the last N problems of the file")
    parser.add_argument("--samples", type=int, default=0, help="sampled replies per problem (0: the app's count here)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--batch-size", type=int, default=0, help="problems per batch (0: as many as fit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    count, on_gpu = sample_count()
    k = args.samples or count
    settings = ChatSettings(max_new_tokens=args.max_new_tokens)  # the Tutor's sampling, as Verify by sampling uses it
    config = EvalConfig(model=args.model, adapter=args.adapter, data_file=args.data_file)
    problems, source = load_problems("gsm8k", args.data_file)
    held_out = problems[-args.limit:] if args.limit else problems
    choices = {"base": base_choice(config), **({"adapter": adapter_choice(args.adapter)} if args.adapter else {})}
    started = time.perf_counter()
    report = {
        "command": " ".join(["python", "benchmarks/calibration.py", *(sys.argv[1:] if argv is None else argv)]),
        "data": {"source": source, "problems": len(held_out),
                 "slice": f"the last {len(held_out)} of {len(problems)}", "first_id": held_out[0].id},
        "settings": {"samples": k, "agreement": AGREEMENT, "on_gpu": on_gpu, "seed": args.seed, **asdict(settings),
                     "sampling": "generate(), num_return_sequences=samples, with the app's sampling_kwargs",
                     "weights": "tutor.models.load_for_evaluation (4-bit dequantized, adapter merged)"},
        "runs": {},
    }
    for role, choice in choices.items():
        print(f"{role}: {choice}", flush=True)
        report["runs"][role] = calibrate(choice, held_out, settings, k, on_gpu, args.batch_size, args.seed)
        report["wall_s"] = round(time.perf_counter() - started, 2)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print("\n".join(summary_lines(report)))
    print(f"report: {args.out} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
