"""Training data: dataset specs, loading and normalizing examples, chat formatting, tokenizing with loss masks.

A dataset spec is one string:

    builtin:basic-math               problems the project generates itself, answers checked (trainer/basic_math.py)
    hub:<owner/name>[:<config>]      a Hugging Face Hub dataset, streamed: only the rows used are read
    file:<path>                      a local .jsonl, .json (array or JSON Lines), .csv or .parquet file
    <part>*3000+<part>*5000          a mixture: every part with its count of examples, shuffled together

A part may end in `*<count>` (required in a mixture; otherwise max_samples decides, 0 meaning all rows, or
1000 for the builtin set). Before the count, `?target=column&...` maps a file's own column names:

    file:/data/quiz.csv?problem=Question&answer=Answer
    file:/data/quiz.jsonl?problem=q&reasoning=working&answer=a*500+builtin:basic-math*500

Targets: problem, answer, reasoning (the steps), solution (steps whose last \\boxed{} is the answer) and
messages (a chat list). A target may join several columns with `+`, their texts then joined by a space, as SVAMP
writes a problem as Body and Question:

    file:/data/svamp.jsonl?problem=Body+Question&answer=Answer

Paths and column names cannot contain `+ * ? & =`.

Known schemas, recognised from the columns:
    MathX-5M    problem (or question), generated_solution (<think> steps </think> ...), expected_answer
    GSM8K       question, answer ("steps ... #### 72"; the <<48/2=24>> calculator notes are removed)
    NuminaMath  problem, solution (the answer is the solution's last \\boxed{})
    MATH        problem, solution, answer
    gsm-hard    input, code, target (the program is the reasoning)
    plain       problem (or question), answer, optional reasoning
    chat        messages: [{"role": ..., "content": ...}, ...], passed through as they are
Every example becomes {"problem", "reasoning", "answer"} or {"messages"}. The assistant learns to reply
    <think>\\n{reasoning}\\n</think>\\n\\nThe answer is \\boxed{answer}.

`build_datasets` returns pre-tokenized `datasets.Dataset`s with `input_ids` and `labels` (-100 outside the
assistant turns), which `trl.SFTTrainer` uses as they are: the loss covers the assistant's reply only.
"""

import csv
import io
import itertools
import json
import logging
import os
import random
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import TemplateError

from trainer import basic_math
from trainer.answers import last_boxed
from trainer.config import MAX_SAMPLES, JobConfig

log = logging.getLogger(__name__)

BUILTINS = ["basic-math"]
BUILTIN_SIZE = 1000  # examples of builtin:basic-math when neither a count nor max_samples says how many
MAPPING_TARGETS = ["problem", "answer", "reasoning", "solution", "messages"]
PREVIEW_LIMIT = 2000  # examples whose token length the preview measures
MAX_WHOLE_FILE = 1 << 30  # bytes of a .json or .csv file, which are read whole; .jsonl and .parquet are streamed
MAX_LINE = 16 << 20  # bytes of one JSON Lines line
ROLES = {"system", "user", "assistant"}

HUB_ID_RE = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?$")
CALCULATOR_RE = re.compile(r"<<[^<>\n]*>>")  # GSM8K's <<48/2=24>> notes
SYSTEM_PROBE = "SYSTEM-PROMPT-PROBE"
PART_START_RE = re.compile(r"\s*[A-Za-z]+\s*:")  # hub:, file:, builtin: ... at the start of a part

SCHEMA_HELP = (
    "Known schemas: MathX-5M (problem or question, generated_solution, expected_answer); GSM8K (question, answer "
    "ending in '#### <number>'); NuminaMath (problem, solution with a \\boxed{} answer); MATH (problem, solution, "
    "answer); gsm-hard (input, code, target); plain (problem, answer, optional reasoning); chat (messages). "
    "Map your own columns in the spec, e.g. file:/path/data.csv?problem=<column>&answer=<column> "
    "(optionally &reasoning=<column>)."
)


class DataError(ValueError):
    """A dataset that cannot be used, with the file, line or setting named and what would work."""


@dataclass
class Part:
    kind: str  # "hub", "file" or "builtin"
    name: str  # Hub repo id, file path or builtin name
    config: str | None = None  # Hub config (subset), e.g. "main" for openai/gsm8k
    count: int | None = None  # examples to take; None: max_samples decides
    columns: dict[str, str] = field(default_factory=dict)  # target -> the source's column name


# ---------------------------------------------------------------------------------------------- spec parsing


def parse_spec(spec: str) -> list[Part]:
    """Parse a dataset spec into its parts. Raises DataError saying what is wrong and what would work."""
    if not (spec or "").strip():
        raise DataError("The dataset spec is empty: use builtin:basic-math, file:/path/data.jsonl or hub:owner/name.")
    texts = split_parts(spec)
    parts = [parse_part(text, spec) for text in texts]
    uncounted = [text for text, part in zip(texts, parts) if part.count is None]
    if len(parts) > 1 and uncounted:
        raise DataError(
            f"Every part of a mixture needs its count, e.g. hub:openai/gsm8k:main*3000+builtin:basic-math*500; "
            f"{uncounted[0]!r} has none: add *<count>."
        )
    return parts


def split_parts(spec: str) -> list[str]:
    """The texts of the spec's parts. A '+' inside a column mapping (`?problem=Body+Question`) joins columns; one
    followed by a source (`hub:`, `file:`, `builtin:`, or an unknown kind, refused later) starts the next part."""
    texts: list[str] = []
    for piece in spec.split("+"):
        if texts and "?" in texts[-1] and "*" not in texts[-1].partition("?")[2] and not PART_START_RE.match(piece):
            texts[-1] += "+" + piece
        else:
            texts.append(piece)
    return [text.strip() for text in texts]


def parse_part(text: str, spec: str) -> Part:
    if not text:
        raise DataError(f"The dataset spec {spec!r} has an empty part: remove the extra '+'.")
    count = None
    body, star, count_text = text.rpartition("*")
    if star:
        count_text = count_text.strip()
        if not (count_text.isascii() and count_text.isdigit()) or not 0 < int(count_text) <= MAX_SAMPLES:
            raise DataError(f"In {text!r} the count after '*' must be a positive whole number up to {MAX_SAMPLES:,}, "
                            f"not {count_text!r}.")
        count, text = int(count_text), body.strip()
    source, question_mark, query = text.partition("?")
    columns = parse_columns(query, text) if question_mark else {}
    kind, colon, name = source.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not colon:
        raise DataError(
            f"{source!r} does not say where the data comes from: "
            f"write hub:{source}, file:{source} or builtin:basic-math."
        )
    if kind == "builtin":
        if name not in BUILTINS:
            raise DataError(f"Unknown builtin dataset {name!r}; the builtin ones are {BUILTINS}.")
        return Part("builtin", name, None, count, columns)
    if kind == "file":
        if not name:
            raise DataError("file: needs a path, e.g. file:/data/problems.jsonl.")
        return Part("file", name, None, count, columns)
    if kind == "hub":
        match = HUB_ID_RE.match(name)
        if not match or any(piece[:1] in ".-" or piece[-1:] in ".-" or ".." in piece or "--" in piece
                            for piece in match["repo"].split("/")):
            raise DataError(f"{name!r} is not a Hub dataset id: write hub:owner/name or hub:owner/name:config.")
        return Part("hub", match["repo"], match["config"], count, columns)
    raise DataError(f"Unknown dataset source {kind + ':'!r} in {text!r}: use hub:, file: or builtin:.")


def parse_columns(query: str, text: str) -> dict[str, str]:
    columns = {}
    for pair in query.split("&"):
        target, equals, column = (s.strip() for s in pair.partition("="))
        if not equals or not target or not column:
            raise DataError(f"In {text!r} a column mapping looks like ?problem=Question&answer=Answer, not {pair!r}.")
        if target not in MAPPING_TARGETS:
            raise DataError(f"In {text!r} {target!r} is not something to map a column to; use {MAPPING_TARGETS}.")
        names = [name.strip() for name in column.split("+")]
        if len(names) > 1 and (target == "messages" or "" in names):
            raise DataError(f"In {text!r} ?{target}={column} cannot be read: join named columns of text with +, as in "
                            "?problem=Body+Question (messages takes one column).")
        columns[target] = "+".join(names)
    return columns


def describe(part: Part) -> str:
    if part.kind == "hub":
        return f"Hub dataset {part.name}" + (f" (config {part.config})" if part.config else "")
    return f"{part.kind}:{part.name}"


# ---------------------------------------------------------------------------------------------- loading


def load_examples(spec: str, split: str = "train", max_samples: int = 0, seed: int = 42,
                  cap: int | None = None) -> list[dict]:
    """Normalized examples, {"problem", "reasoning", "answer"} or {"messages"}, from a dataset spec.

    Each part gives its `*count` rows, or `max_samples` (0: all), or at most `cap` when given. A mixture is
    shuffled with `seed`; `max_samples`, when positive, caps the total.
    """
    parts = parse_spec(spec)
    examples = []
    for part in parts:
        limit = min((n for n in (part.count or max_samples, cap) if n), default=None)
        rows = read_rows(part, split, limit, seed)
        if limit and len(rows) < limit:
            log.warning("%s has %d rows, fewer than the %d asked for.", describe(part), len(rows), limit)
        examples.extend(normalize_rows(rows, part))
    if len(parts) > 1:
        random.Random(seed).shuffle(examples)
    return examples[:max_samples] if max_samples else examples


def check_files(spec: str) -> None:
    """At launch: every file: part of the spec can be read and has usable examples (two rows are read), so a missing,
    unreadable or unknown file fails now rather than in the worker."""
    for part in parse_spec(spec):
        if part.kind == "file":
            try:
                normalize_rows(read_file(Path(part.name).expanduser(), 2), part)
            except OSError as exc:  # no permission, a device, a broken link
                raise DataError(f"Cannot read {part.name}: {exc.strerror or exc}.") from None


def read_rows(part: Part, split: str, limit: int | None, seed: int) -> list[dict]:
    if part.kind == "builtin":
        # Another split draws other problems, so a "test" split does not repeat the training ones.
        split_seed = seed if split == "train" else seed + zlib.crc32(split.encode())
        return basic_math.generate(limit or BUILTIN_SIZE, split_seed)
    if part.kind == "file":
        return read_file(Path(part.name).expanduser(), limit)
    return read_hub(part, split, limit)


def read_file(path: Path, limit: int | None) -> list[dict]:
    if not path.exists():
        raise DataError(f"{path} does not exist: check the file: path in the dataset spec.")
    if path.is_dir():
        raise DataError(f"{path} is a folder: point file: at one .jsonl, .json, .csv or .parquet file.")
    suffix = path.suffix.lower()
    if suffix in (".json", ".csv") and path.stat().st_size > MAX_WHOLE_FILE:
        raise DataError(f"{path} is {path.stat().st_size / 2**30:.1f} GiB: {suffix} files are read whole, up to "
                        f"{MAX_WHOLE_FILE >> 30} GiB. Save it as .jsonl or .parquet, which are read as far as needed.")
    if suffix == ".jsonl":
        rows = read_jsonl(path, limit)
    elif suffix == ".json":
        rows = read_json(path, limit)
    elif suffix == ".csv":
        rows = read_csv(path, limit)
    elif suffix == ".parquet":
        rows = read_parquet(path, limit)
    else:
        raise DataError(f"{path} has an extension the trainer cannot read: use .jsonl, .json, .csv or .parquet.")
    if not rows:
        raise DataError(f"{path} holds no examples.")
    return rows


def read_jsonl(path: Path, limit: int | None) -> list[dict]:
    rows = []
    with open(path, "rb") as f:  # bytes, so that a bad encoding is reported on its own line
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
            if len(raw) > MAX_LINE:
                raise DataError(f"{path} line {number} is longer than {MAX_LINE >> 20} MiB: is it really JSON Lines, "
                                "one example per line?")
            try:
                line = raw.decode("utf-8").lstrip("\ufeff")
            except UnicodeDecodeError:
                raise DataError(f"{path} line {number} is not UTF-8 text: save the file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {number} is not valid JSON ({exc.msg}, column {exc.colno}); "
                    "a cut-off last line is the usual cause: complete or delete it."
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number} holds a JSON {type(row).__name__}, not an object with fields.")
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows


def read_json(path: Path, limit: int | None) -> list[dict]:
    text = read_text(path)
    if not text.lstrip().startswith("["):
        return read_jsonl(path, limit)  # JSON Lines saved as .json, as `datasets` writes them
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "a cut-off file is the usual cause."
        ) from None
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path} item {index} is a JSON {type(row).__name__}, not an object with fields.")
    return rows[:limit] if limit else rows


def read_csv(path: Path, limit: int | None) -> list[dict]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = []
    try:
        for row in reader:
            rows.append({key: value for key, value in row.items() if key is not None})
            if limit and len(rows) >= limit:
                break
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num} is not valid CSV ({exc}).") from None
    return rows


def read_parquet(path: Path, limit: int | None) -> list[dict]:
    import pyarrow
    import pyarrow.parquet

    rows = []
    try:
        for batch in pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=1024):
            rows.extend(batch.to_pylist())
            if limit and len(rows) >= limit:
                break
    except pyarrow.ArrowException as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}).") from None
    return rows[:limit] if limit else rows


def read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line} is not UTF-8 text: save the file as UTF-8.") from None


def read_hub(part: Part, split: str, limit: int | None) -> list[dict]:
    """Stream the first `limit` rows (all when None) of a Hub dataset, without downloading the rest."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetsError
    from httpx2 import HTTPError  # what the Hub client raises for no connection, timeouts and HTTP errors

    check_hub_dataset(part.name)  # fails in a moment when offline; load_dataset alone retries for half a minute
    try:
        stream = load_dataset(part.name, part.config, split=split, streaming=True)
        return list(itertools.islice(stream, limit))
    except (DatasetsError, ValueError, OSError, HTTPError) as exc:
        raise DataError(f"Cannot stream split {split!r} of {describe(part)}: {exc}") from None


def check_hub_dataset(repo_id: str) -> None:
    """Ask the Hub about the dataset first, and say plainly why it cannot be used."""
    from trainer.models import ModelError, check_hub_repo

    try:
        check_hub_repo(repo_id, "dataset", "use builtin:basic-math or a file: spec")
    except ModelError as exc:
        raise DataError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- schemas


def normalize_rows(rows: list[dict], part: Part) -> list[dict]:
    """Rows of one source in its own schema -> normalized examples. Rows without problem or answer are skipped."""
    source = describe(part)
    if not rows:
        raise DataError(f"{source} holds no examples.")
    if part.columns:
        rows = map_columns(rows, part.columns, source)
    schema = detect_schema(rows, source)
    examples = [normalize(row, schema, f"{source} row {index}") for index, row in enumerate(rows)]
    kept = [example for example in examples if example]
    if not kept:
        raise DataError(f"None of the {len(rows)} rows of {source} has both a problem and an answer ({schema} schema).")
    if len(kept) < len(rows):
        log.warning("%d of %d rows of %s have no problem or no answer and are skipped.",
                    len(rows) - len(kept), len(rows), source)
    return kept


def map_columns(rows: list[dict], columns: dict[str, str], source: str) -> list[dict]:
    """The mapped targets added to each row; a target of several columns (Body+Question) gets their texts joined by a
    space."""
    present = set().union(*rows)
    for target, column in columns.items():
        for name in column.split("+"):
            if name not in present:
                raise DataError(f"{source} has no column {name!r} (named in ?{target}={column}); its columns are "
                                f"{sorted(present)}.")
    return [{**row, **{target: mapped(row, column) for target, column in columns.items()}} for row in rows]


def mapped(row: dict, column: str):
    """A row's value of one column as it is, or the texts of several (`Body+Question`) joined by a space."""
    if "+" not in column:
        return row.get(column)
    return " ".join(text for text in (as_text(row.get(name)) for name in column.split("+")) if text)


def detect_schema(rows: list[dict], source: str) -> str:
    columns = set().union(*rows)
    has_problem = "problem" in columns or "question" in columns
    if has_problem and "generated_solution" in columns:
        return "mathx"
    first_answer = next((str(row["answer"]) for row in rows if row.get("answer")), "")
    if {"question", "answer"} <= columns and "####" in first_answer:
        return "gsm8k"
    if {"input", "target"} <= columns:
        return "gsm-hard"
    if has_problem and "solution" in columns:
        return "math"  # NuminaMath when there is no answer column
    if has_problem and "answer" in columns:
        return "plain"
    if "messages" in columns:
        return "chat"
    raise DataError(f"{source} has columns {sorted(columns)}, which match no known math schema. {SCHEMA_HELP}")


def normalize(row: dict, schema: str, where: str) -> dict | None:
    """One row -> {"problem", "reasoning", "answer"} or {"messages"}; None when it lacks a problem or answer."""
    if schema == "chat":
        return {"messages": check_messages(row.get("messages"), where)}
    problem = as_text(row.get("problem")) or as_text(row.get("question")) or as_text(row.get("input"))
    if schema == "mathx":
        solution = as_text(row.get("generated_solution"))
        reasoning = solution.split("</think>")[0].replace("<think>", "").strip()
        answer = as_text(row.get("expected_answer")) or last_boxed(solution) or ""
    elif schema == "gsm8k":
        steps, _, final = as_text(row.get("answer")).rpartition("####")
        reasoning, answer = CALCULATOR_RE.sub("", steps).strip(), final.strip().replace(",", "")
    elif schema == "gsm-hard":
        reasoning, answer = as_text(row.get("code")), as_text(row.get("target"))
    elif schema == "math":
        reasoning = as_text(row.get("solution"))
        answer = as_text(row.get("answer")) or last_boxed(reasoning) or ""
    else:  # plain
        reasoning, answer = as_text(row.get("reasoning")), as_text(row.get("answer"))
    if not problem or not answer:
        return None
    return {"problem": problem, "reasoning": reasoning, "answer": answer}


def as_text(value) -> str:
    """A cell as text: None -> "", 12.0 -> "12", 2.5 -> "2.5"."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.10g}"
    return str(value).strip()


def check_messages(messages, where: str) -> list[dict]:
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise DataError(f"{where}: the messages column holds text that is not a JSON list of messages.") from None
    ok = isinstance(messages, list) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    )
    if not ok or not any(m["role"] == "assistant" for m in messages):
        raise DataError(
            f"{where}: messages must be a list of {{'role': system|user|assistant, 'content': text}} "
            "with at least one assistant turn."
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ---------------------------------------------------------------------------------------------- chat format


def assistant_reply(reasoning: str, answer: str) -> str:
    """The one reply format the model learns: its reasoning in <think>, then the boxed answer."""
    return f"<think>\n{reasoning}\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def to_messages(example: dict, system_prompt: str) -> list[dict]:
    """A normalized example as a chat: system prompt (when given), the problem, the assistant's reply."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if "messages" in example:
        messages = [dict(m) for m in example["messages"]]
        return messages if messages[0]["role"] == "system" else system + messages
    return system + [
        {"role": "user", "content": example["problem"]},
        {"role": "assistant", "content": assistant_reply(example["reasoning"], example["answer"])},
    ]


def supports_system_role(tokenizer) -> bool:
    """Whether the chat template renders a system turn (Gemma's raises or drops it)."""
    probe = [{"role": "system", "content": SYSTEM_PROBE}, {"role": "user", "content": "Hi"}]
    try:
        return SYSTEM_PROBE in tokenizer.apply_chat_template(probe, tokenize=False)
    except TemplateError:
        return False


def fold_system_prompt(messages: list[dict]) -> list[dict]:
    """Move a leading system turn into the first user turn, for templates without a system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}] + rest[1:]
    return [{"role": "user", "content": system}] + rest


def fit_messages(messages: list[dict], tokenizer) -> list[dict]:
    """The messages as this tokenizer's chat template accepts them."""
    if not tokenizer.chat_template:
        raise DataError(
            f"The tokenizer of {tokenizer.name_or_path} has no chat template: pick a chat (instruct) model."
        )
    if messages and messages[0]["role"] == "system" and not supports_system_role(tokenizer):
        return fold_system_prompt(messages)
    return messages


def render_chat(messages: list[dict], tokenizer, add_generation_prompt: bool = False) -> str:
    """The text the model sees for these messages, through its own chat template."""
    return tokenizer.apply_chat_template(
        fit_messages(messages, tokenizer), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def tokenize_chat(messages: list[dict], tokenizer, max_seq_length: int | None = None) -> dict:
    """Token ids of the rendered chat with labels -100 everywhere but the assistant turns.

    Each assistant turn starts where the conversation before it, rendered with the generation prompt, ends,
    and stops where the conversation up to it ends (its end-of-turn token included, so the model learns to
    stop). The pieces are tokenized one by one, so the prompt's tokens are those the model gets at inference.
    Truncated to `max_seq_length` (keeping the start) when given.
    """
    messages = fit_messages(messages, tokenizer)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    pieces, position = [], 0  # (text, learn) in order
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through) and position <= len(before) < len(through)):
            raise DataError(
                f"The chat template of {tokenizer.name_or_path} does not render a conversation as its turns one "
                "after another, so the assistant's tokens cannot be told apart: use another chat model."
            )
        pieces += [(full[position : len(before)], False), (full[len(before) : len(through)], True)]
        position = len(through)
    if not pieces:
        raise DataError("A conversation has no assistant turn to learn from.")
    pieces.append((full[position:], False))
    input_ids, labels = [], []
    for text, learn in pieces:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        input_ids += ids
        labels += ids if learn else [-100] * len(ids)
    if max_seq_length:
        input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}


def prompt_length(labels: list[int]) -> int:
    """Tokens before the first one the model learns."""
    return next((index for index, label in enumerate(labels) if label != -100), len(labels))


# ---------------------------------------------------------------------------------------------- datasets


def build_datasets(config: JobConfig, tokenizer):
    """(train, eval) `datasets.Dataset`s with `input_ids` and `labels`, for `trl.SFTTrainer`.

    eval is None when `config.eval_fraction` leaves no example for it. Raises DataError when the data cannot be
    loaded or a prompt leaves no room for the answer within `config.max_seq_length`.
    """
    from datasets import Dataset

    examples = load_examples(config.dataset, config.dataset_split, config.max_samples, config.seed)
    encoded = [tokenize_chat(to_messages(example, config.system_prompt), tokenizer) for example in examples]
    check_prompt_lengths(encoded, config.max_seq_length)
    train_index, eval_index = split_indices(len(encoded), config.eval_fraction, config.seed)

    def dataset(indices):
        rows = [encoded[i] for i in indices]
        return Dataset.from_dict({
            "input_ids": [row["input_ids"][: config.max_seq_length] for row in rows],
            "labels": [row["labels"][: config.max_seq_length] for row in rows],
        })

    return dataset(train_index), (dataset(eval_index) if eval_index else None)


def check_prompt_lengths(encoded: list[dict], max_seq_length: int) -> None:
    prompts = [prompt_length(row["labels"]) for row in encoded]
    longest = max(prompts)
    if longest >= max_seq_length:
        whole = max(len(row["input_ids"]) for row in encoded)
        raise DataError(
            f"max_seq_length {max_seq_length} is too short for the longest prompt ({longest} tokens of system prompt "
            f"and question, example {prompts.index(longest)}): raise it to at least {longest + 1}, "
            f"or to {whole} to keep every example whole."
        )


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffled (train, eval) indices; eval gets at least one example when eval_fraction > 0 and n > 1."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = round(n * eval_fraction)
    if eval_fraction > 0 and n > 1:
        n_eval = min(max(n_eval, 1), n - 1)
    return order[n_eval:], order[:n_eval]


def preview(config: JobConfig, tokenizer, n: int = 3) -> dict:
    """What the Train tab shows before a run: the first n examples as the model sees them, and token lengths.

    Returns {"examples": [text], "lengths": [int] (of up to PREVIEW_LIMIT examples, untruncated),
    "truncated_share": share of those longer than max_seq_length, "count": examples in the dataset}.
    """
    examples = load_examples(config.dataset, config.dataset_split, config.max_samples, config.seed, cap=PREVIEW_LIMIT)
    chats = [to_messages(example, config.system_prompt) for example in examples[:PREVIEW_LIMIT]]
    lengths = [len(tokenize_chat(messages, tokenizer)["input_ids"]) for messages in chats]
    return {
        "examples": [render_chat(messages, tokenizer) for messages in chats[:n]],
        "lengths": lengths,
        "truncated_share": sum(length > config.max_seq_length for length in lengths) / len(lengths),
        "count": len(examples),
    }
