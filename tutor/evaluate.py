"""Benchmark accuracy of a model, or of a base and its adapter on the same problems, with a pinned protocol.

Protocol: zero-shot, the tutor system prompt and the bare question through the model's own chat template, greedy
decoding, a fixed max_new_tokens, batched with left padding, answers extracted by `trainer.answers.extract_answer`
and checked by `trainer.answers.is_equivalent`. All of it is recorded in the report beside every problem.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from trainer.config import TUTOR_PROMPT
from trainer.models import EMBEDDED
from trainer.paths import data_root
from trainer.answers import extract_answer, is_equivalent
from tutor.chat import encode
from tutor.models import Loaded, adapter_base, adapter_base_name, base_path, cache_key, find_adapter, load_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repository
BENCHMARKS = {  # name: (Hub dataset, config, split, file under ../shared/data)
    "gsm8k": ("openai/gsm8k", "main", "test", "gsm8k/test.jsonl"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "math500/test.jsonl"),
}
USER_TEMPLATE = "{question}"

Progress = Callable[[int, int, str], None]  # (problems done, problems in all, which model)


class EvalError(ValueError):
    """An evaluation that cannot run, with what to do about it."""


@dataclass
class EvalConfig:
    model: str = ""  # a model choice (see tutor.models); empty: the adapter's base, or the embedded default
    adapter: str = ""  # a job id, `adapter:<job_id>` or an adapter folder; when given, base and adapter are compared
    benchmark: str = field(default="gsm8k", metadata={"choices": list(BENCHMARKS)})
    data_file: str = ""  # a JSONL file instead of ../shared/data or the Hub
    limit: int = 0  # the first N problems; 0 for all
    batch_size: int = 16
    max_new_tokens: int = 512
    one_at_a_time: bool = False  # the seed notebooks' loop: one prompt per generate() call
    out: str = ""  # report path; default under the job's eval/ (or the data root's eval/)


@dataclass
class Problem:
    id: str
    question: str
    gold: str


def evaluate(config: EvalConfig, progress: Progress | None = None) -> dict:
    """Run the benchmark and return the report (see `write_report`)."""
    if config.benchmark not in BENCHMARKS:
        raise EvalError(f"Unknown benchmark {config.benchmark!r}; use one of {list(BENCHMARKS)}.")
    if config.batch_size < 1 or config.max_new_tokens < 1 or config.limit < 0:
        raise EvalError("batch_size and max_new_tokens must be 1 or more, and limit 0 (all) or more.")
    problems, source = load_problems(config.benchmark, config.data_file, config.limit)
    choices = {"base": base_choice(config)}
    if config.adapter:
        choices["adapter"] = adapter_choice(config.adapter)
    runs = {}
    for role, choice in choices.items():
        started = time.perf_counter()
        loaded = load_model(choice)
        load_s = time.perf_counter() - started
        runs[role] = run_benchmark(loaded, problems, config, progress)
        runs[role].update(choice=choice, load_s=round(load_s, 2))
    report = {
        "benchmark": config.benchmark,
        "data": {"source": source, "problems": len(problems)},
        "protocol": protocol(config, runs["base"]["device"]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": {role: {k: v for k, v in run.items() if k != "problems"} for role, run in runs.items()},
        "runs": runs,
    }
    if "adapter" in runs:
        report["disagreements"] = disagreements(runs["base"]["problems"], runs["adapter"]["problems"])
    return report


def run_benchmark(loaded: Loaded, problems: list[Problem], config: EvalConfig, progress: Progress | None) -> dict:
    """Generate for every problem in batches (longest prompts first), extract and check each answer."""
    batch_size = 1 if config.one_at_a_time else config.batch_size
    prompts = [encode(loaded.tokenizer, prompt_messages(p)) for p in problems]
    order = sorted(range(len(problems)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(problems)
    tokens = 0
    if progress:
        progress(0, len(order), loaded.name)
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        texts, counts = generate_batch(loaded, [prompts[i] for i in batch], config.max_new_tokens)
        for i, text in zip(batch, texts):
            outputs[i] = text
        tokens += counts
        if progress:
            progress(min(start + batch_size, len(order)), len(order), loaded.name)
    generate_s = time.perf_counter() - started
    results = []
    for problem, output in zip(problems, outputs):
        extracted = extract_answer(output)
        correct = bool(extracted) and is_equivalent(extracted, problem.gold)
        results.append({**asdict(problem), "output": output, "extracted": extracted, "correct": correct})
    correct = sum(r["correct"] for r in results)
    return {
        "model": loaded.name,
        "device": device_name(loaded),
        "accuracy": correct / len(results) if results else 0.0,
        "correct": correct,
        "total": len(results),
        "batch_size": batch_size,
        "generate_s": round(generate_s, 2),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / generate_s, 1) if generate_s else 0.0,
        "problems": results,
    }


def generate_batch(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[str], int]:
    """Greedy continuations of token-id prompts, left-padded into one batch; also the count of generated tokens."""
    pad = loaded.tokenizer.pad_token_id
    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
    with loaded.activated() as model:
        output = model.generate(
            input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0, pad_token_id=pad,
        )
    new = output[:, width:].cpu()
    texts = loaded.tokenizer.batch_decode(new, skip_special_tokens=True)
    return texts, int((new != pad).sum())


def prompt_messages(problem: Problem) -> list[dict]:
    return [
        {"role": "system", "content": TUTOR_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(question=problem.question)},
    ]


def disagreements(base: list[dict], adapter: list[dict]) -> list[dict]:
    """The problems that one of base and adapter gets right and the other wrong."""
    return [
        {
            "id": b["id"], "question": b["question"], "gold": b["gold"],
            "base": {k: b[k] for k in ("extracted", "correct", "output")},
            "adapter": {k: a[k] for k in ("extracted", "correct", "output")},
        }
        for b, a in zip(base, adapter)
        if b["correct"] != a["correct"]
    ]


def protocol(config: EvalConfig, device: str) -> dict:
    return {
        "shots": 0,
        "system_prompt": TUTOR_PROMPT,
        "user_template": USER_TEMPLATE,
        "chat_template": "the model's own (tokenizer.apply_chat_template, add_generation_prompt=True)",
        "decoding": "greedy (do_sample=False, num_beams=1, repetition_penalty=1.0)",
        "max_new_tokens": config.max_new_tokens,
        "batch_size": 1 if config.one_at_a_time else config.batch_size,
        "padding": "left, with attention mask",
        "extractor": "trainer.answers.extract_answer",
        "equivalence": "trainer.answers.is_equivalent",
        "device": device,
        "versions": {name: package_version(name) for name in ("torch", "transformers", "peft", "math-verify")},
    }


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def device_name(loaded: Loaded) -> str:
    model = loaded.model
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(
        getattr(model, "base_model", None), "is_loaded_in_4bit", False
    )
    return f"{model.device} ({'4-bit NF4' if quantized else model.dtype})"


# ---- choosing models ----


def adapter_choice(adapter: str) -> str:
    return adapter if adapter.startswith("adapter:") else f"adapter:{adapter}"


def base_choice(config: EvalConfig) -> str:
    """The model to evaluate (and compare the adapter against): as given, else the adapter's own base."""
    if not config.adapter:
        return config.model or EMBEDDED
    adapter = find_adapter(adapter_choice(config.adapter))
    if not config.model:
        return adapter_base_name(adapter)
    if cache_key(base_path(config.model)) != cache_key(adapter_base(adapter)):
        raise EvalError(
            f"The adapter {config.adapter} was trained on {adapter_base_name(adapter)}, not {config.model}: "
            "leave --model out to compare it with its own base."
        )
    return config.model


# ---- problems ----


def load_problems(benchmark: str, data_file: str = "", limit: int = 0) -> tuple[list[Problem], str]:
    """The benchmark's test problems (the first `limit` when given) and where they came from."""
    hub_id, hub_config, split, shared_file = BENCHMARKS[benchmark]
    path = Path(data_file).expanduser() if data_file else SHARED_DATA / shared_file
    if data_file or path.exists():
        rows, source = read_jsonl(path), str(path)
    else:
        rows, source = read_hub(hub_id, hub_config, split), f"hub:{hub_id}:{hub_config or 'default'}:{split}"
    problems = [to_problem(benchmark, index, row) for index, row in enumerate(rows)]
    if not problems:
        raise EvalError(f"No problems in {source}.")
    return (problems[:limit] if limit else problems), source


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalError(f"No data file {path}: give a JSONL file of the benchmark's test problems.")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path} line {number} is not JSON ({exc}).") from None
    return rows


def read_hub(hub_id: str, config: str | None, split: str) -> list[dict]:
    import datasets

    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except OSError as exc:  # ConnectionError when offline
        raise EvalError(
            f"Cannot load {hub_id} from the Hugging Face Hub ({exc}): go online, or give --data-file "
            f"(or put the file under {SHARED_DATA})."
        ) from None


def to_problem(benchmark: str, index: int, row: dict) -> Problem:
    """GSM8K rows are question/answer ending in `#### n`; MATH-500 rows are problem/answer/unique_id."""
    try:
        if benchmark == "gsm8k":
            if "####" not in row["answer"]:
                raise KeyError("#### in answer")
            return Problem(str(index), row["question"], row["answer"].rsplit("####", 1)[1].strip())
        return Problem(str(row.get("unique_id", index)), row["problem"], str(row["answer"]))
    except (KeyError, TypeError) as exc:
        raise EvalError(f"Problem {index} of the {benchmark} data lacks {exc}; is it the right benchmark?") from None


# ---- the report ----


def default_report_path(config: EvalConfig) -> Path:
    """The job's eval/ folder when the adapter is a job's, else the data root's eval/."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if config.adapter:
        adapter = find_adapter(adapter_choice(config.adapter))
        if adapter.name == "adapter" and (adapter.parent / "status.json").exists():
            return adapter.parent / "eval" / f"{config.benchmark}-{stamp}.json"
    return data_root() / "eval" / f"{config.benchmark}-{stamp}.json"


def write_report(report: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return path


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['benchmark']}: {report['data']['problems']} problems from {report['data']['source']}"]
    for role, run in report["summary"].items():
        lines.append(
            f"{role:8s} {run['model']}: {run['accuracy']:.1%} ({run['correct']}/{run['total']}) "
            f"in {run['generate_s']:.1f} s, batch {run['batch_size']}, {run['tokens_per_s']} tokens/s"
        )
    if "disagreements" in report:
        lines.append(f"base and adapter disagree on {len(report['disagreements'])} problems")
    return lines
