"""Benchmark accuracy of a model, or of a base and its adapter on the same problems, with a pinned protocol.

Protocol: zero-shot, the tutor system prompt and the bare question through the model's own chat template, greedy
decoding, a fixed max_new_tokens, batched with left padding, answers extracted by `trainer.answers.extract_answer`
and checked by `trainer.answers.is_equivalent`. A reply ends at its end token, at max_new_tokens, once its final
answer is complete (`answer_end`) or once it loops (`loop_end`). All of it is recorded in the report beside every
problem.
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
from transformers.cache_utils import DynamicCache, DynamicLayer

from trainer.config import SHARED_DATA, TUTOR_PROMPT
from trainer.answers import _BOXED_RE, _HASHES_RE, brace_pairs, extract_answer, is_equivalent, reply_is_correct
from trainer.data import DataError, Part, describe, load_examples, normalize_rows, parse_spec, read_rows
from trainer.estimate import duration_words
from trainer.models import EMBEDDED, Kind, ModelChoice
from trainer.store import data_root, job_folders, job_of_adapter, read_config, read_reports, report_file, write_json
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
SPLIT_NAMES = {"test", "train", "validation", "valid", "dev", "eval", "data"}  # file names that say no more than this
_NOT_FILE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")

Progress = Callable[[int, int, str], None]  # (problems done, problems in all, which model)
Estimated = Callable[["Estimate", str], None]  # (what a model's run will take, which model), before it generates


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

    @property
    def test_set(self) -> str:
        """The test set's name in reports and their file names: the benchmark's, or the data file's when one is given
        (a file by its name, `<folder>-<name>` for a split's file such as gsm8k/test.jsonl; a Hub dataset by its
        name; a builtin set by its own), so that a report on other data is never counted as the benchmark's."""
        if not self.data_file.strip():
            return self.benchmark
        spec = self.data_file.strip()
        if spec.startswith(SPEC_KINDS):
            try:
                part = parse_spec(spec)[0]
            except DataError:
                part = Part("file", spec.partition(":")[2])
            kind, name = part.kind, part.name
        else:
            kind, name = "file", spec
        if kind == "file":
            path = Path(name.partition("?")[0])
            name = f"{path.parent.name}-{path.stem}" if path.stem in SPLIT_NAMES and path.parent.name else path.stem
        elif kind == "hub":
            name = name.rstrip("/").rpartition("/")[2]
        return _NOT_FILE_NAME_RE.sub("-", name).strip("-.") or "data"

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


def evaluate(config: EvalConfig, progress: Progress | None = None, estimated: Estimated | None = None) -> dict:
    """Run the benchmark and return the report (see `write_report`). `estimated` hears what each model's run will
    take before it generates (`estimate_run`)."""
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
        runs[role] = run_benchmark(loaded, problems, config, progress, estimated)
        del loaded  # its memory goes to the next model's batch
        runs[role].update(choice=str(choice), load_s=round(load_s, 2),
                          ci95=[round(x, 4) for x in accuracy_interval(runs[role]["correct"], runs[role]["total"])])
    report = {
        "benchmark": config.test_set,
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


def run_benchmark(loaded: Loaded, problems: list[Problem], config: EvalConfig, progress: Progress | None = None,
                  estimated: Estimated | None = None) -> dict:
    """Generate for every problem in batches (longest prompts first), extract and check each answer."""
    prompts = [encode(loaded.tokenizer, prompt_messages(p)) for p in problems]
    batch_size = 1 if config.one_at_a_time else config.batch_size or auto_batch_size(
        loaded, len(prompts), max(map(len, prompts)) + config.max_new_tokens)
    order = sorted(range(len(problems)), key=lambda i: -len(prompts[i]))
    estimate = estimate_run(loaded, [prompts[i] for i in order[:batch_size]], len(problems), config.max_new_tokens)
    if estimated:
        estimated(estimate, loaded.name)
    replies: list[Reply | None] = [None] * len(problems)
    if progress:
        progress(0, len(order), loaded.name)
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        for i, reply in zip(batch, generate_batch(loaded, [prompts[i] for i in batch], config.max_new_tokens)):
            replies[i] = reply
        if progress:
            progress(min(start + batch_size, len(order)), len(order), loaded.name)
    generate_s, generate_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    results = []
    for problem, reply in zip(problems, replies):
        extracted = extract_answer(reply.text)
        correct = bool(extracted) and is_equivalent(extracted, problem.gold)
        results.append({**asdict(problem), "output": reply.text, "extracted": extracted, "correct": correct,
                        "math_verify": reply_is_correct(reply.text, problem.gold), "tokens": reply.tokens,
                        "stop": reply.stop})
    correct = sum(r["correct"] for r in results)
    tokens = sum(reply.tokens for reply in replies)
    return {
        "model": loaded.name,
        "device": model_device(loaded),
        "accuracy": correct / len(results) if results else 0.0,
        "correct": correct,
        "total": len(results),
        "math_verify_accuracy": sum(r["math_verify"] for r in results) / len(results) if results else 0.0,
        "batch_size": batch_size,
        "generate_s": round(generate_s, 2),
        "generate_cpu_s": round(generate_cpu_s, 2),  # all its threads: steadier than wall time on a shared CPU
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / generate_s, 1) if generate_s else 0.0,
        "stops": {stop: sum(r.stop == stop for r in replies) for stop in STOPS},
        "estimate": asdict(estimate) | {"tokens_per_s": round(estimate.tokens_per_s, 1),
                                        "seconds": round(estimate.seconds, 1)},
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


# ---- generating ----

STOPS = ("end", "answer", "loop", "limit")  # why a reply ended: see Reply
LOOP_REPEATS = 4  # the same sentence or line this many times in a row (numbers aside) is a loop
LOOP_PERIOD = 3  # a loop of up to this many sentences or lines
_STOP_CHARS_RE = re.compile(r"[}\n.!?]")  # what completes an answer or, with the space after it, a sentence
_PIECE_END_RE = re.compile(r"[.!?]+(?=\s)|\n")  # the end of a sentence (not a decimal point) or of a line
_DIGITS_RE = re.compile(r"\d+(?:[.,]\d+)*")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")


@dataclass
class Reply:
    text: str
    tokens: int  # generated, the end token not counted
    stop: str  # "end": its end token; "answer": its final answer was complete (answer_end); "loop": loop_end;
    #            "limit": max_new_tokens


def answer_end(text: str) -> int | None:
    """Where a reply's final answer is complete, though the model may write on: just after its first closed
    `\\boxed{...}` or at the end of its first `#### n` line, past its <think> block (an answer written while thinking
    is not final). None while it has none. A reply that would have ended after its answer anyway is scored the same;
    one that would have gone on to write a second, different answer is scored on its first."""
    think = text.find("</think>")
    if think == -1 and "<think>" in text:
        return None
    start = 0 if think == -1 else think + len("</think>")
    ends = []
    boxes = list(_BOXED_RE.finditer(text, start))
    if boxes:
        pairs = brace_pairs(text)
        ends += [pairs[box.end() - 1] + 1 for box in boxes if box.end() - 1 in pairs][:1]
    hashes = _HASHES_RE.search(text, start)
    if hashes and (newline := text.find("\n", hashes.start("a"))) != -1:
        ends.append(newline)
    return min(ends, default=None)


def loop_end(text: str) -> int | None:
    """Where a reply has written the same sentence or line, or run of up to LOOP_PERIOD of them, LOOP_REPEATS times
    in a row, numbers aside ("She makes 8.8 ... = $1.44 ... She makes 1.44 ... = $2.44 ..."): a loop that will not
    answer. Pieces with fewer than 3 words (formulas, table rows, blank lines) never make one. None while none."""
    pieces, start = [], 0
    for end in (m.end() for m in _PIECE_END_RE.finditer(text)):  # the text after the last end is not complete yet
        shape, start = _DIGITS_RE.sub("N", text[start:end].strip()), end
        if shape:
            pieces.append((end, shape))
    shapes = [shape for _, shape in pieces]
    for last in range(1, len(shapes) + 1):
        for period in range(1, LOOP_PERIOD + 1):
            block = shapes[last - period : last]
            if last < period * LOOP_REPEATS or len(_WORD_RE.findall(" ".join(block))) < 3:
                continue
            if all(shapes[last - period * (k + 1) : last - period * k] == block for k in range(1, LOOP_REPEATS)):
                return pieces[last - 1][0]
    return None


def stop_reason(text: str, newest: str) -> str:
    """Why a reply ends now that `newest` (its newest token's text) ended `text`: "answer" or "loop", else "".
    Checked only where the newest token, or the character before it, can end an answer or a sentence."""
    if not _STOP_CHARS_RE.search(text, max(0, len(text) - len(newest) - 1)):
        return ""
    return "answer" if answer_end(text) is not None else "loop" if loop_end(text) is not None else ""


class GrowingLayer(DynamicLayer):
    """A layer of the KV cache that writes each token's keys and values into room kept ahead (GROW_TOKENS at a time)
    instead of copying the whole cache to append them, as DynamicLayer does at every token."""

    GROW_TOKENS = 256

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self.room = 0, (key_states[..., :0, :], value_states[..., :0, :])
        end = self.length + key_states.shape[-2]
        if end > self.room[0].shape[-2]:
            self.room = tuple(self.grown(kept, end) for kept in self.room)
        self.room[0][..., self.length : end, :] = key_states
        self.room[1][..., self.length : end, :] = value_states
        self.length = end
        self.keys, self.values = (kept[..., :end, :] for kept in self.room)
        return self.keys, self.values

    def grown(self, kept: torch.Tensor, end: int) -> torch.Tensor:
        """The kept keys or values with room for tokens up to `end` and GROW_TOKENS more."""
        room = kept.new_empty((*kept.shape[:2], end - self.length + self.GROW_TOKENS, kept.shape[-1]))
        return torch.cat([kept[..., : self.length, :], room], dim=-2)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.room = tuple(kept[indices] for kept in self.room)
            self.keys, self.values = (kept[..., : self.length, :] for kept in self.room)


def growing_cache(model) -> DynamicCache:
    """The cache generate() would make, with GrowingLayer for its full-attention layers (measured on a CPU only)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def generate_batch(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int,
                   step_times: list[float] | None = None) -> list[Reply]:
    """Greedy continuations of token-id prompts, left-padded into one batch.

    A greedy loop over the model's forward pass, as generate() runs it, except that replies which have ended leave
    the batch (their rows of the KV cache are dropped once an eighth of the rows have ended): the steps after the
    short replies end cost only what the long ones need. A reply ends at an end token, or with the token that
    completes its final answer or a loop (`stop_reason`); each reply's ending depends on its own tokens only.
    `step_times`, when given, gets time.perf_counter() after each step (the first: the prefill)."""
    pad = loaded.tokenizer.pad_token_id
    width = max(len(ids) for ids in prompts)
    replies = [Reply("", 0, "limit") for _ in prompts]
    tokens_of: list[list[int]] = [[] for _ in prompts]
    token_text: dict[int, str] = {}
    with loaded.activated() as model:
        ends = set(end_token_ids(model, loaded.tokenizer))
        device = model.device
        tokens = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = list(range(len(prompts)))  # which prompt each row of the batch is
        ended = [False] * len(rows)
        cache = growing_cache(model) if device.type == "cpu" else None
        for _ in range(max_new_tokens):
            out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            cache, tokens = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            if step_times is not None:
                step_times.append(time.perf_counter())  # after argmax, so the step has finished on a GPU too
            for i, token in enumerate(tokens[:, 0].tolist()):
                if ended[i]:
                    continue
                reply = replies[rows[i]]
                if token in ends:
                    ended[i], reply.stop = True, "end"
                    continue
                tokens_of[rows[i]].append(token)
                if token not in token_text:
                    token_text[token] = loaded.tokenizer.decode([token], skip_special_tokens=True)
                reply.text += token_text[token]
                reply.stop = stop_reason(reply.text, token_text[token]) or "limit"
                ended[i] = reply.stop != "limit"
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
    texts = loaded.tokenizer.batch_decode(tokens_of, skip_special_tokens=True)
    return [Reply(text, len(ids), reply.stop) for text, ids, reply in zip(texts, tokens_of, replies)]


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply, as generate() takes them: the generation config's, else the tokenizer's."""
    ends = model.generation_config.eos_token_id
    if ends is None:
        ends = tokenizer.eos_token_id
    return list(ends) if isinstance(ends, (list, tuple)) else [ends]


# ---- saying what a run will take ----

WARM_UP_STEPS = 8  # decoding steps of the first batch timed when no earlier report of this model and device exists
RECENT_RUNS = 5  # earlier runs that the estimate pools


@dataclass
class Estimate:
    """What generating for `problems` will take: their expected tokens at this device's rate."""

    problems: int
    reply_tokens: float  # expected per problem
    tokens_per_s: float
    source: str  # where the two figures come from, in words

    @property
    def seconds(self) -> float:
        return estimate_seconds(self.problems, self.reply_tokens, self.tokens_per_s)

    def __str__(self) -> str:
        return (f"{duration_words(self.seconds)} to generate: {self.problems} problems x {self.reply_tokens:.0f} "
                f"tokens / {self.tokens_per_s:.1f} tokens/s ({self.source})")


def estimate_seconds(problems: int, reply_tokens: float, tokens_per_s: float) -> float:
    return problems * reply_tokens / tokens_per_s


def estimate_run(loaded: Loaded, first_batch: list[list[int]], problems: int, max_new_tokens: int) -> Estimate:
    """The estimate for this model on this device: tokens per reply and tokens/s pooled over the latest earlier runs
    of the same model, device, batch size and max_new_tokens in the data root's reports; without them, tokens/s from a
    warm-up (WARM_UP_STEPS steps of the first batch) and, without any earlier run of the model, half max_new_tokens
    per reply."""
    runs = earlier_runs(loaded.name, model_device(loaded), max_new_tokens)
    same_batch = [run for run in runs if run["batch_size"] == len(first_batch)]
    if runs:
        reply_tokens = sum(run["generated_tokens"] for run in runs) / sum(run["total"] for run in runs)
    else:
        reply_tokens = max_new_tokens / 2
    if same_batch:
        rate = sum(run["generated_tokens"] for run in same_batch) / sum(run["generate_s"] for run in same_batch)
        return Estimate(problems, reply_tokens, rate, f"{len(same_batch)} earlier run(s) on this device")
    rate = warm_up_rate(loaded, first_batch)
    source = f"a {WARM_UP_STEPS}-step warm-up"
    if not runs:
        source += f", replies guessed at half of {max_new_tokens} tokens"
    return Estimate(problems, reply_tokens, rate, source)


def warm_up_rate(loaded: Loaded, prompts: list[list[int]]) -> float:
    """Tokens/s of decoding `prompts` for WARM_UP_STEPS steps, timed step by step after their prefill: a reply pays
    for its prompt once, but for each of its tokens. (Timing a run of one step and subtracting it from a longer run's
    time, as before, left decoding as the difference of two noisy prefills: 383 tokens/s estimated against 16.7 run,
    on a CPU.)"""
    times = [time.perf_counter()]
    generate_batch(loaded, prompts, 1 + WARM_UP_STEPS, step_times=times)
    if len(times) < 3:  # every reply ended with its first token: only the prefill to go by
        return len(prompts) / (times[-1] - times[0])
    return len(prompts) * (len(times) - 2) / (times[-1] - times[1])  # rows x decoding steps / their time


def earlier_runs(model: str, device: str, max_new_tokens: int) -> list[dict]:
    """The summaries of the latest RECENT_RUNS runs of `model` on `device` with `max_new_tokens` in the reports kept
    in the data root and its jobs (a report kept in two jobs counts once)."""
    runs = {}
    for report in (report for folder in (data_root(), *job_folders()) for report in read_reports(folder)):
        if (report.get("protocol") or {}).get("max_new_tokens") != max_new_tokens:
            continue
        for run in (report.get("summary") or {}).values():
            if run.get("model") == model and run.get("device") == device and run.get("generate_s") and \
                    run.get("generated_tokens"):
                runs[str(report.get("created", ""))] = run
    return [runs[created] for created in sorted(runs)[-RECENT_RUNS:]]


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
        "stopping": f"a reply ends at its end token, at max_new_tokens, once its final answer is complete (the first "
                    f"\\boxed{{}} closed or `#### n` line ended after any <think> block), or once it has written the "
                    f"same sentence or line (or run of up to {LOOP_PERIOD}) {LOOP_REPEATS} times in a row, numbers "
                    "aside (a loop); each problem's `stop` says which",
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
    return report_file(job, config.test_set)


def write_report(report: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return path


def stops_text(stops: dict) -> str:
    words = {"end": "at their end token", "answer": "after their answer", "loop": "in a loop", "limit": "at the limit"}
    ended = ", ".join(f"{count} {words[stop]}" for stop, count in stops.items() if count)
    return f"; replies ended: {ended}" if ended else ""


def summary_lines(report: dict) -> list[str]:
    lines = [f"{report['benchmark']}: {report['data']['problems']} problems from {report['data']['source']}"]
    for role, run in report["summary"].items():
        low, high = accuracy_interval(run["correct"], run["total"])
        lines.append(
            f"{role:8s} {run['model']}: {run['accuracy']:.1%} ({run['correct']}/{run['total']}, 95% interval "
            f"{low:.1%}-{high:.1%}; math-verify on the whole reply {run.get('math_verify_accuracy', 0):.1%}) "
            f"in {run['generate_s']:.1f} s ({run['generated_tokens']:,} tokens, {run['tokens_per_s']} tokens/s, batch "
            f"{run['batch_size']}{stops_text(run.get('stops') or {})})"
        )
    overlap = report.get("contamination", {}).get("overlap")
    if overlap:
        lines.append(f"WARNING: {overlap} of these test problems are in the adapter's training data (same text once "
                     "normalized): its score on them measures memory, not skill")
    if "disagreements" in report:
        lines.append(f"base and adapter disagree on {len(report['disagreements'])} problems")
    return lines
