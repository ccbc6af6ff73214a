"""Benchmark accuracy of a model, or of a base and its adapter on the same problems, with a pinned protocol.

Protocol: zero-shot, the tutor system prompt and the bare question through the model's own chat template, greedy
decoding, a fixed max_new_tokens, batched with left padding, answers extracted by `trainer.answers.extract_answer`
and checked by `trainer.answers.is_equivalent`. All of it is recorded in the report beside every problem.
"""

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import yaml

from trainer.config import SHARED_DATA, TUTOR_PROMPT
from trainer.answers import extract_answer, is_equivalent, reply_is_correct
from trainer.data import DataError, Part, describe, load_examples, normalize_rows, parse_spec, read_rows
from trainer.models import EMBEDDED, Kind, ModelChoice
from trainer.store import job_of_adapter, read_config, report_file, write_json
from tutor.chat import encode
from tutor.models import (
    Loaded, adapter_base, adapter_base_name, base_path, cache_key, find_adapter, load_for_evaluation,
)

BENCHMARKS = {  # name: (Hub dataset, config, split, file under ../shared/data)
    "gsm8k": ("openai/gsm8k", "main", "test", "gsm8k/test.jsonl"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "math500/test.jsonl"),
}
USER_TEMPLATE = "{question}"
SPEC_KINDS = ("file:", "hub:", "builtin:")

Progress = Callable[[int, int, str], None]  # (problems done, problems in all, which model)


class EvalError(ValueError):
    """An evaluation that cannot run, with what to do about it."""


@dataclass
class EvalConfig:
    model: str = ""  # a model choice (see tutor.models); empty: the adapter's base, or the embedded default
    adapter: str = ""  # a job id, `adapter:<job_id>` or an adapter folder; when given, base and adapter are compared
    benchmark: str = field(default="gsm8k", metadata={"choices": list(BENCHMARKS)})
    data_file: str = ""  # a test file (JSONL/JSON/CSV/Parquet) or a dataset spec (hub:..., file:...?problem=Q&answer=A)
    limit: int = 0  # the first N problems; 0 for all
    batch_size: int = 0  # 0: as many problems at once as the GPU's free memory holds; CPU_BATCH on a CPU
    max_new_tokens: int = 512
    one_at_a_time: bool = False  # the seed notebooks' loop: one prompt per generate() call
    out: str = ""  # report path; default under the job's eval/ (or the data root's eval/)

    def validate(self) -> "EvalConfig":
        if self.benchmark not in BENCHMARKS:
            raise EvalError(f"Unknown benchmark {self.benchmark!r}; use one of {list(BENCHMARKS)}.")
        if self.batch_size < 0 or self.max_new_tokens < 1 or self.limit < 0:
            raise EvalError("max_new_tokens must be 1 or more, and batch_size (0: as many as fit) and limit (0: all) "
                            "0 or more.")
        return self

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> "EvalConfig":
        values = yaml.safe_load(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or not set(values) <= known:
            raise EvalError(f"{path} is not an evaluation config (keys: {sorted(known)}).")
        return cls(**values)


def accuracy_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion: right near 0 and 1 too, where the normal one is not."""
    if total <= 0:
        return 0.0, 1.0
    share = correct / total
    center = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class Problem:
    id: str
    question: str
    gold: str


def evaluate(config: EvalConfig, progress: Progress | None = None) -> dict:
    """Run the benchmark and return the report (see `write_report`)."""
    config.validate()
    problems, source = load_problems(config.benchmark, config.data_file, config.limit)
    choices = {"base": base_choice(config)}
    if config.adapter:
        choices["adapter"] = adapter_choice(config.adapter)
    runs = {}
    for role, choice in choices.items():
        started = time.perf_counter()
        loaded = load_for_evaluation(choice)
        load_s = time.perf_counter() - started
        runs[role] = run_benchmark(loaded, problems, config, progress)
        del loaded  # its memory goes to the next model's batch
        runs[role].update(choice=str(choice), load_s=round(load_s, 2),
                          ci95=[round(x, 4) for x in accuracy_interval(runs[role]["correct"], runs[role]["total"])])
    report = {
        "benchmark": config.benchmark,
        "data": {"source": source, "problems": len(problems)},
        "protocol": protocol(config, runs["base"]["device"], runs["base"]["batch_size"]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": {role: {k: v for k, v in run.items() if k != "problems"} for role, run in runs.items()},
        "runs": runs,
    }
    if "adapter" in runs:
        report["disagreements"] = disagreements(runs["base"]["problems"], runs["adapter"]["problems"])
        job = job_of_adapter(find_adapter(choices["adapter"]))
        if job is not None:
            report["contamination"] = contamination(problems, job)
    return report


def run_benchmark(loaded: Loaded, problems: list[Problem], config: EvalConfig, progress: Progress | None) -> dict:
    """Generate for every problem in batches (longest prompts first), extract and check each answer."""
    prompts = [encode(loaded.tokenizer, prompt_messages(p)) for p in problems]
    batch_size = 1 if config.one_at_a_time else config.batch_size or auto_batch_size(
        loaded, len(prompts), max(map(len, prompts)) + config.max_new_tokens)
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
        results.append({**asdict(problem), "output": output, "extracted": extracted, "correct": correct,
                        "math_verify": reply_is_correct(output, problem.gold)})
    correct = sum(r["correct"] for r in results)
    return {
        "model": loaded.name,
        "device": model_device(loaded),
        "accuracy": correct / len(results) if results else 0.0,
        "correct": correct,
        "total": len(results),
        "math_verify_accuracy": sum(r["math_verify"] for r in results) / len(results) if results else 0.0,
        "batch_size": batch_size,
        "generate_s": round(generate_s, 2),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / generate_s, 1) if generate_s else 0.0,
        "problems": results,
    }


CPU_BATCH = 16  # on a CPU a larger batch adds little speed and the progress would move more rarely
GPU_MEMORY_SHARE = 0.6  # of the free GPU memory, for the batch's KV cache and its copies while attention runs


def auto_batch_size(loaded: Loaded, problems: int, tokens_per_reply: int) -> int:
    """As many problems at once as fit in the GPU's free memory (all of GSM8K's test for a small model on an H200);
    CPU_BATCH on a CPU. A reply's memory: its tokens x the KV cache per token, three times over (the cache, its copy
    as it grows, and the heads shared by grouped-query attention widened for SDPA)."""
    model = loaded.model
    if model.device.type != "cuda":
        return min(problems, CPU_BATCH)
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2  # keys and values, 16-bit
    free, _ = torch.cuda.mem_get_info(model.device)
    free += torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)  # cached by torch
    return max(1, min(problems, int(free * GPU_MEMORY_SHARE // (3 * kv_bytes * tokens_per_reply))))


def generate_batch(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[str], int]:
    """Greedy continuations of token-id prompts, left-padded into one batch; also the count of generated tokens.

    A greedy loop over the model's forward pass, as generate() runs it, except that replies which have ended leave
    the batch (their rows of the KV cache are dropped once an eighth of the rows have ended): the steps after the
    short replies end cost only what the long ones need."""
    pad = loaded.tokenizer.pad_token_id
    width = max(len(ids) for ids in prompts)
    replies: list[list[int]] = [[] for _ in prompts]
    with loaded.activated() as model:
        ends = set(end_token_ids(model, loaded.tokenizer))
        device = model.device
        tokens = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = list(range(len(prompts)))  # which prompt each row of the batch is
        ended = [False] * len(rows)
        cache = None
        for _ in range(max_new_tokens):
            out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            cache, tokens = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for i, token in enumerate(tokens[:, 0].tolist()):
                if not ended[i]:
                    ended[i] = token in ends
                    if not ended[i]:
                        replies[rows[i]].append(token)
            if all(ended):
                break
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions[:, -1:] + 1
            if 8 * sum(ended) >= len(rows):  # drop the ended rows
                keep = [i for i, done in enumerate(ended) if not done]
                index = torch.tensor(keep, device=device)
                for layer in cache.layers:
                    layer.batch_select_indices(index)
                tokens, mask, positions = tokens[index], mask[index], positions[index]
                rows, ended = [rows[i] for i in keep], [False] * len(keep)
    texts = loaded.tokenizer.batch_decode(replies, skip_special_tokens=True)
    return texts, sum(map(len, replies))


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply, as generate() takes them: the generation config's, else the tokenizer's."""
    ends = model.generation_config.eos_token_id
    if ends is None:
        ends = tokenizer.eos_token_id
    return list(ends) if isinstance(ends, (list, tuple)) else [ends]


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


def protocol(config: EvalConfig, device: str, batch_size: int) -> dict:
    return {
        "shots": 0,
        "system_prompt": TUTOR_PROMPT,
        "user_template": USER_TEMPLATE,
        "chat_template": "the model's own (tokenizer.apply_chat_template, add_generation_prompt=True)",
        "decoding": "greedy (do_sample=False, num_beams=1, repetition_penalty=1.0)",
        "max_new_tokens": config.max_new_tokens,
        "batch_size": batch_size,
        "padding": "left, with attention mask; a reply leaves the batch once it has ended",
        "weights": "a model of its own per run: 4-bit weights dequantized to 16 bits where they fit, an adapter merged "
                   "into them (tutor.models.load_for_evaluation)",
        "extractor": "trainer.answers.extract_answer",
        "equivalence": "trainer.answers.is_equivalent",
        "second_scorer": "trainer.answers.reply_is_correct: math-verify parses the whole reply and verifies it against "
                         "the gold answer, as lighteval scores GSM8K and MATH-500 (math_verify_accuracy)",
        "device": device,
        "versions": {name: package_version(name) for name in ("torch", "transformers", "peft", "math-verify")},
    }


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def model_device(loaded: Loaded) -> str:
    model = loaded.model
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(
        getattr(model, "base_model", None), "is_loaded_in_4bit", False
    )
    return f"{model.device} ({'4-bit NF4' if quantized else model.dtype})"


# ---- choosing models ----


def adapter_choice(adapter: str) -> ModelChoice:
    """A job id, an adapter folder or an adapter: choice, as an adapter choice."""
    choice = ModelChoice.parse(adapter)
    return choice if choice.kind is Kind.ADAPTER else ModelChoice(Kind.ADAPTER, adapter.strip())


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
    """The benchmark's test problems (the first `limit` when given) and where they came from, read and normalized
    by trainer/data.py as training data is (any schema it knows)."""
    hub_id, hub_config, split, shared_file = BENCHMARKS[benchmark]
    path = Path(data_file).expanduser() if data_file else SHARED_DATA / shared_file
    part = Part("file", str(path)) if data_file or path.exists() else Part("hub", hub_id, hub_config)
    try:
        if data_file.startswith(SPEC_KINDS):  # a dataset spec as training takes it: hub:, file:?problem=Q&answer=A
            part, *more = parse_spec(data_file)
            if more:
                raise EvalError(f"{data_file!r} names {len(more) + 1} data sets: evaluate on one at a time.")
        examples = normalize_rows(read_rows(part, split, limit or None, seed=0), part)
    except DataError as exc:
        raise EvalError(f"{exc} (Offline, give --data-file or put the file under {SHARED_DATA}.)") from None
    problems = [Problem(str(i), e["problem"], e["answer"]) for i, e in enumerate(examples) if "problem" in e]
    if not problems:
        raise EvalError(f"No problems with answers in {describe(part)}; is it the right benchmark?")
    return problems, describe(part)


_NOT_WORD_RE = re.compile(r"[^a-z0-9]+")


def normalized(text: str) -> str:
    """Text compared for contamination: lower case, letters and digits only, single spaces."""
    return _NOT_WORD_RE.sub(" ", text.lower()).strip()


def contamination(problems: list[Problem], job: Path) -> dict:
    """How many test problems are in the training data of the job that made the adapter (normalized text)."""
    try:
        config = read_config(job)
        train = load_examples(config.dataset, config.dataset_split, config.max_samples, config.seed)
    except (ValueError, OSError) as exc:  # a damaged config, a dataset that cannot be read now
        return {"checked": False, "reason": str(exc)[:300]}
    seen = {normalized(example.get("problem", "")) for example in train}
    overlap = [problem.id for problem in problems if normalized(problem.question) in seen]
    return {"checked": True, "training_examples": len(train), "overlap": len(overlap), "ids": overlap[:100]}


# ---- the report ----


def default_report_path(config: EvalConfig) -> Path:
    """Beside the job when the adapter is a job's, else under the data root (trainer/store.py)."""
    job = job_of_adapter(find_adapter(adapter_choice(config.adapter))) if config.adapter else None
    return report_file(job, config.benchmark)


def write_report(report: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return path


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['benchmark']}: {report['data']['problems']} problems from {report['data']['source']}"]
    for role, run in report["summary"].items():
        low, high = accuracy_interval(run["correct"], run["total"])
        lines.append(
            f"{role:8s} {run['model']}: {run['accuracy']:.1%} ({run['correct']}/{run['total']}, 95% interval "
            f"{low:.1%}-{high:.1%}; math-verify on the whole reply {run.get('math_verify_accuracy', 0):.1%}) "
            f"in {run['generate_s']:.1f} s, batch {run['batch_size']}, {run['tokens_per_s']} tokens/s"
        )
    overlap = report.get("contamination", {}).get("overlap")
    if overlap:
        lines.append(f"WARNING: {overlap} of these test problems are in the adapter's training data (same text once "
                     "normalized): its score on them measures memory, not skill")
    if "disagreements" in report:
        lines.append(f"base and adapter disagree on {len(report['disagreements'])} problems")
    return lines
