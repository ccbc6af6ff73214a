"""Dataset specs, schemas, broken files, chat rendering and loss masks with the real SmolLM2 chat template."""

import copy
import json
import re
from types import SimpleNamespace

import pytest

from tests.conftest import SHARED_DATA, needs_shared_data
from trainer.config import TUTOR_PROMPT, JobConfig
from trainer.data import (
    DataError, Part, assistant_reply, build_datasets, fit_messages, last_boxed, load_examples, parse_spec, preview,
    render_chat, supports_system_role, to_messages, tokenize_chat,
)

GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"
MATH500 = SHARED_DATA / "math500" / "test.jsonl"
# Gemma 2's template: a system turn raises.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path, header, rows):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode([i for i, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100])


# ---------------------------------------------------------------------------------------------- spec parsing


def test_parse_spec_reads_every_kind_of_part():
    assert parse_spec("builtin:basic-math") == [Part("builtin", "basic-math")]
    assert parse_spec("file:/data/x.jsonl") == [Part("file", "/data/x.jsonl")]
    assert parse_spec("hub:openai/gsm8k:main") == [Part("hub", "openai/gsm8k", "main")]
    assert parse_spec("hub:XenArcAI/MathX-5M*200") == [Part("hub", "XenArcAI/MathX-5M", None, 200)]
    assert parse_spec(" hub:openai/gsm8k:main*3000 + hub:AI-MO/NuminaMath-CoT*5000 +builtin:basic-math*10") == [
        Part("hub", "openai/gsm8k", "main", 3000), Part("hub", "AI-MO/NuminaMath-CoT", None, 5000),
        Part("builtin", "basic-math", None, 10),
    ]
    assert parse_spec("file:/d/q.csv?problem=Question&answer=Final Answer*50") == [
        Part("file", "/d/q.csv", None, 50, {"problem": "Question", "answer": "Final Answer"})
    ]


def test_a_target_may_join_columns_with_plus_and_a_source_after_plus_starts_a_part():
    svamp = {"problem": "Body+Question", "answer": "Answer"}
    assert parse_spec("file:/d/svamp.jsonl?problem=Body+Question&answer=Answer") == [
        Part("file", "/d/svamp.jsonl", None, None, svamp)]
    assert parse_spec("file:/d/svamp.csv?problem=Body + Question&answer=Answer*5+builtin:basic-math*5") == [
        Part("file", "/d/svamp.csv", None, 5, svamp), Part("builtin", "basic-math", None, 5)]
    # a mapping ended by its count: the next '+' starts a part, whatever follows it
    assert len(parse_spec("file:/a.csv?problem=Q*5+file:/b.csv?problem=Body+Question*5")) == 2


def test_every_preset_spec_parses():
    from trainer.config import PRESETS

    for config in PRESETS.values():
        assert parse_spec(config.dataset)


@pytest.mark.parametrize("spec, message", [
    ("", "empty"),
    ("gsm8k", "write hub:gsm8k"),
    ("csv:/data/x.csv", "Unknown dataset source 'csv:'"),
    ("builtin:algebra", "Unknown builtin dataset 'algebra'"),
    ("hub:a/b/c", "is not a Hub dataset id"),
    ("hub:openai/gsm8k:main:extra", "is not a Hub dataset id"),
    ("file:", "file: needs a path"),
    ("builtin:basic-math*0", "positive whole number"),
    ("builtin:basic-math*ten", "positive whole number"),
    ("builtin:basic-math*5+hub:openai/gsm8k", "'hub:openai/gsm8k' has none"),
    ("builtin:basic-math*5+", "empty part"),
    ("file:/x.csv?problem", "?problem=Question&answer=Answer"),
    ("file:/x.csv?query=Q", "'query' is not something to map"),
    ("file:/x.csv?problem=Body+&answer=A", "join named columns of text with +"),
    ("file:/x.csv?messages=a+b", "messages takes one column"),
])
def test_parse_spec_explains_bad_specs(spec, message):
    with pytest.raises(DataError, match=re.escape(message)):
        parse_spec(spec)
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------- schemas


@needs_shared_data()
def test_gsm8k_steps_become_reasoning_and_the_number_the_answer():
    examples = load_examples(f"file:{GSM8K}")
    assert len(examples) == 7473
    assert examples[0] == {
        "problem": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                   "How many clips did Natalia sell altogether in April and May?",
        "reasoning": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.",
        "answer": "72",
    }
    for example in examples:
        assert re.fullmatch(r"-?\d+(\.\d+)?", example["answer"]), example["answer"]  # "1,080" became "1080"
        assert "<<" not in example["reasoning"] and "####" not in example["reasoning"]


@needs_shared_data()
def test_math_takes_its_answer_column_and_the_solution_as_reasoning():
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()[:5]]
    examples = load_examples(f"file:{MATH500}", max_samples=5)
    assert [e["answer"] for e in examples] == [r["answer"] for r in rows]
    assert [e["reasoning"] for e in examples] == [r["solution"].strip() for r in rows]


def test_mathx_keeps_the_think_part_and_the_expected_answer(tmp_path):
    path = write_jsonl(tmp_path / "mathx.jsonl", [
        {"problem": "What is 2+3?", "generated_solution": "<think>\n2 plus 3 is 5.\n</think>\nSo \\boxed{5}.",
         "expected_answer": "5"},
        {"question": "What is 4*4?", "generated_solution": "<think>4 times 4 is 16.</think> \\boxed{16}",
         "expected_answer": ""},  # no expected answer: the last \boxed{} gives it
    ])
    assert load_examples(f"file:{path}") == [
        {"problem": "What is 2+3?", "reasoning": "2 plus 3 is 5.", "answer": "5"},
        {"problem": "What is 4*4?", "reasoning": "4 times 4 is 16.", "answer": "16"},
    ]


def test_builtin_basic_math_is_normalized_from_its_mathx_rows():
    examples = load_examples("builtin:basic-math", max_samples=12, seed=1)
    assert len(examples) == 12
    for example in examples:
        assert set(example) == {"problem", "reasoning", "answer"}
        assert "<think>" not in example["reasoning"] and "\\boxed" not in example["reasoning"]
    assert load_examples("builtin:basic-math", max_samples=12, seed=1) == examples
    assert load_examples("builtin:basic-math", "test", max_samples=12, seed=1) != examples


def test_numinamath_answer_is_the_last_boxed_and_rows_without_one_are_skipped(tmp_path):
    rows = [
        {"source": "amc", "problem": "Half of one?", "messages": [],
         "solution": "First \\boxed{2} was wrong. Then we get \\boxed{\\frac{1}{2}}."},
        {"source": "amc", "problem": "No answer here", "messages": [], "solution": "We cannot tell."},
    ]
    (tmp_path / "numina.json").write_text(json.dumps(rows))
    examples = load_examples(f"file:{tmp_path / 'numina.json'}")
    assert examples == [{"problem": "Half of one?", "reasoning": rows[0]["solution"], "answer": "\\frac{1}{2}"}]


def test_math_schema_from_csv(tmp_path):
    path = write_csv(tmp_path / "math.csv", ["problem", "solution", "answer", "level"],
                     [["Find 1+1.", "1+1 is $\\boxed{2}$.", "2", "Level 1"], ["Find 3-1.", "3-1 = 2.", "2", "Level 1"]])
    assert load_examples(f"file:{path}") == [
        {"problem": "Find 1+1.", "reasoning": "1+1 is $\\boxed{2}$.", "answer": "2"},
        {"problem": "Find 3-1.", "reasoning": "3-1 = 2.", "answer": "2"},
    ]


def test_gsm_hard_from_parquet_uses_the_program_as_reasoning(tmp_path):
    path = write_parquet(tmp_path / "hard.parquet", [
        {"input": "Tom has 3 boxes of 4 pens.", "code": "def solution():\n    return 3 * 4", "target": 12.0},
        {"input": "Split 5 into 2.", "code": "def solution():\n    return 5 / 2", "target": 2.5},
    ])
    examples = load_examples(f"file:{path}")
    assert [e["answer"] for e in examples] == ["12", "2.5"]
    assert examples[0]["reasoning"] == "def solution():\n    return 3 * 4"
    assert examples[0]["problem"] == "Tom has 3 boxes of 4 pens."


def test_chat_messages_pass_through(tmp_path):
    chat = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "It is 2."}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}])
    examples = load_examples(f"file:{path}")
    assert examples == [{"messages": chat}]
    assert to_messages(examples[0], "Be brief.") == [{"role": "system", "content": "Be brief."}] + chat
    own = {"messages": [{"role": "system", "content": "Mine."}] + chat}
    assert to_messages(own, "Be brief.") == own["messages"]


def test_json_lines_saved_as_json_are_read(tmp_path):
    path = write_jsonl(tmp_path / "rows.json", [{"problem": "2+2?", "answer": "4"}])
    assert load_examples(f"file:{path}") == [{"problem": "2+2?", "reasoning": "", "answer": "4"}]


def test_unknown_columns_are_listed_with_the_mapping_to_use(tmp_path):
    path = write_csv(tmp_path / "quiz.csv", ["Q", "Working", "A"], [["What is 6 x 7?", "6 x 7 = 42", "42"]])
    with pytest.raises(DataError) as error:
        load_examples(f"file:{path}")
    message = str(error.value)
    assert "['A', 'Q', 'Working']" in message and "?problem=<column>&answer=<column>" in message
    assert "GSM8K (question, answer" in message
    assert load_examples(f"file:{path}?problem=Q&reasoning=Working&answer=A") == [
        {"problem": "What is 6 x 7?", "reasoning": "6 x 7 = 42", "answer": "42"}
    ]
    with pytest.raises(DataError, match=r"no column 'Answer' \(named in \?answer=Answer\); its columns are"):
        load_examples(f"file:{path}?problem=Q&answer=Answer")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_problem_joined_from_body_and_question_columns_trains(tmp_path, kind):
    """SVAMP's shape: the problem is Body then Question; the answer a number (8.0 in JSON, text in CSV)."""
    rows = [{"ID": "a1", "Body": "Jack had 5 pens. He bought 3 more.", "Question": "How many pens does he have?",
             "Equation": "( 5.0 + 3.0 )", "Answer": 8.0},
            {"ID": "a2", "Body": "A box holds 12 eggs.", "Question": "How many eggs are in 2 boxes?",
             "Equation": "( 12.0 * 2.0 )", "Answer": 24.0}]
    path = (write_csv(tmp_path / "svamp.csv", list(rows[0]), [list(row.values()) for row in rows]) if kind == "csv"
            else write_jsonl(tmp_path / "svamp.jsonl", rows))
    examples = load_examples(f"file:{path}?problem=Body+Question&reasoning=Equation&answer=Answer")
    assert examples == [
        {"problem": "Jack had 5 pens. He bought 3 more. How many pens does he have?", "reasoning": "( 5.0 + 3.0 )",
         "answer": "8" if kind == "jsonl" else "8.0"},
        {"problem": "A box holds 12 eggs. How many eggs are in 2 boxes?", "reasoning": "( 12.0 * 2.0 )",
         "answer": "24" if kind == "jsonl" else "24.0"},
    ]
    assert to_messages(examples[0], "")[0]["content"] == examples[0]["problem"]  # the turn the model learns from
    with pytest.raises(DataError) as error:
        load_examples(f"file:{path}?problem=Body+Questions&answer=Answer")
    assert ("no column 'Questions' (named in ?problem=Body+Questions); its columns are "
            "['Answer', 'Body', 'Equation', 'ID', 'Question']") in str(error.value)


# ---------------------------------------------------------------------------------------------- broken files


def test_broken_files_name_the_file_and_line(tmp_path):
    good = json.dumps({"problem": "1+1?", "answer": "2"})
    cases = {
        "missing.jsonl": (None, "does not exist"),
        "empty.jsonl": (b"", "holds no examples"),
        "header.csv": (b"problem,answer\n", "holds no examples"),
        "latin1.jsonl": (f"{good}\n".encode() + b'{"problem": "caf\xe9", "answer": "1"}\n', "line 2 is not UTF-8"),
        "latin1.csv": (b"problem,answer\n1+1?,2\ncaf\xe9?,1\n", "line 3 is not UTF-8"),
        "cut.jsonl": (f"{good}\n{good}\n{good[:12]}".encode(), "line 3 is not valid JSON"),
        "cut.json": (f"[{good}, {good[:9]}".encode(), "is not valid JSON"),
        "list.jsonl": (f"{good}\n[1, 2]\n".encode(), "line 2 holds a JSON list"),
        "notes.txt": (b"hello", "cannot read: use .jsonl, .json, .csv or .parquet"),
        "fake.parquet": (b"not parquet at all", "is not a readable Parquet file"),
        "chat.jsonl": (b'{"messages": [{"role": "user", "content": "hi"}]}\n', "at least one assistant turn"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(DataError, match=re.escape(message)) as error:
            load_examples(f"file:{path}")
        assert name in str(error.value)
    with pytest.raises(DataError, match="is a folder"):
        load_examples(f"file:{tmp_path}")


def test_rows_without_problem_or_answer_are_skipped_and_none_left_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "gaps.jsonl", [{"problem": "1+1?", "answer": "2"}, {"problem": "", "answer": "3"}])
    assert len(load_examples(f"file:{path}")) == 1
    path = write_jsonl(tmp_path / "blank.jsonl", [{"problem": "1+1?", "answer": ""}])
    with pytest.raises(DataError, match="None of the 1 rows"):
        load_examples(f"file:{path}")


# ---------------------------------------------------------------------------------------------- counts, mixtures


def test_mixture_takes_each_count_and_shuffles_by_seed(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "gsm.jsonl", rows)
    spec = f"builtin:basic-math*30+file:{path}*5"
    examples = load_examples(spec, seed=7)
    from_file = {e["problem"] for e in examples} & {r["question"] for r in rows}
    assert len(examples) == 35
    assert from_file == {f"What is {i} + {i}?" for i in range(5)}  # the file's first five rows
    assert load_examples(spec, seed=7) == examples
    assert load_examples(spec, seed=8) != examples
    assert len(load_examples(spec, max_samples=10, seed=7)) == 10  # max_samples caps the total


def test_max_samples_limits_a_single_part_and_a_count_beyond_the_file_gives_what_there_is(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": f"{i}?", "answer": str(i)} for i in range(8)])
    assert len(load_examples(f"file:{path}", max_samples=3)) == 3
    assert len(load_examples(f"file:{path}", max_samples=0)) == 8
    assert len(load_examples(f"file:{path}*100")) == 8
    assert len(load_examples("builtin:basic-math", max_samples=0)) == 1000


# ---------------------------------------------------------------------------------------------- the Hub


def test_hub_failure_is_a_clear_error_without_retrying(monkeypatch):
    import datasets

    def never(*args, **kwargs):
        raise AssertionError("load_dataset retries for half a minute offline; the Hub check must fail first")

    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(DataError, match="math-agent-studio/no-such-dataset") as error:
        load_examples("hub:math-agent-studio/no-such-dataset")
    assert "Hub" in str(error.value)


def test_hub_gated_dataset_without_token_says_how_to_get_access(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo, **kw: SimpleNamespace(gated="manual"))
    with pytest.raises(DataError, match="owner/gated is gated: accept its terms .* and set HF_TOKEN"):
        load_examples("hub:owner/gated")


def test_hub_streams_only_the_rows_it_needs(monkeypatch):
    import datasets
    import huggingface_hub

    pulled, calls = [], []

    def stream():
        for i in range(10**6):
            pulled.append(i)
            yield {"question": f"{i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return stream()

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo, **kw: SimpleNamespace(gated=False))
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_examples("hub:openai/gsm8k:main", max_samples=5)
    assert [e["answer"] for e in examples] == ["0", "2", "4", "6", "8"]
    assert len(pulled) == 5
    assert calls == [(("openai/gsm8k", "main"), {"split": "train", "streaming": True})]

    def bad_config(*args, **kwargs):
        raise ValueError("BuilderConfig 'mian' not found. Available: ['main', 'socratic']")

    monkeypatch.setattr(datasets, "load_dataset", bad_config)
    with pytest.raises(DataError, match=r"split 'train' of Hub dataset openai/gsm8k \(config mian\).*'socratic'"):
        load_examples("hub:openai/gsm8k:mian")


# ---------------------------------------------------------------------------------------------- chat format


EXAMPLE = {"problem": "What is 48 + 24?", "reasoning": "48 + 24 = 72.", "answer": "72"}


def test_to_messages_uses_the_one_reply_format():
    assert to_messages(EXAMPLE, "Tutor.") == [
        {"role": "system", "content": "Tutor."},
        {"role": "user", "content": "What is 48 + 24?"},
        {"role": "assistant", "content": "<think>\n48 + 24 = 72.\n</think>\n\nThe answer is \\boxed{72}."},
    ]
    assert to_messages(EXAMPLE, "")[0]["role"] == "user"
    assert last_boxed(assistant_reply("steps", "\\frac{1}{2}")) == "\\frac{1}{2}"


def test_render_with_the_smollm2_template(tokenizer):
    text = render_chat(to_messages(EXAMPLE, TUTOR_PROMPT), tokenizer)
    assert text == (
        f"<|im_start|>system\n{TUTOR_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is 48 + 24?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n48 + 24 = 72.\n</think>\n\nThe answer is \\boxed{72}.<|im_end|>\n"
    )
    assert supports_system_role(tokenizer)


def test_loss_is_on_the_assistant_tokens_only(tokenizer):
    messages = to_messages(EXAMPLE, TUTOR_PROMPT)
    encoded = tokenize_chat(messages, tokenizer)
    assert len(encoded["input_ids"]) == len(encoded["labels"]) == len(encoded["attention_mask"])
    assert tokenizer.decode(encoded["input_ids"]) == render_chat(messages, tokenizer)
    assert labelled_text(tokenizer, encoded) == messages[-1]["content"] + "<|im_end|>\n"
    prompt = tokenizer(render_chat(messages[:-1], tokenizer, add_generation_prompt=True), add_special_tokens=False)
    first = encoded["labels"].index(next(label for label in encoded["labels"] if label != -100))
    assert encoded["input_ids"][:first] == prompt["input_ids"]  # the prompt tokens are those seen at inference
    assert all(label != -100 for label in encoded["labels"][first:])


def test_every_assistant_turn_of_a_conversation_is_learned(tokenizer):
    messages = [
        {"role": "system", "content": "Tutor."}, {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "It is 2."}, {"role": "user", "content": "And 2+2?"},
        {"role": "assistant", "content": "It is 4."},
    ]
    encoded = tokenize_chat(messages, tokenizer)
    assert labelled_text(tokenizer, encoded) == "It is 2.<|im_end|>\nIt is 4.<|im_end|>\n"
    truncated = tokenize_chat(messages, tokenizer, max_seq_length=20)
    assert truncated["input_ids"] == encoded["input_ids"][:20] and truncated["labels"] == encoded["labels"][:20]


def test_a_template_without_system_role_gets_the_prompt_in_the_first_user_turn(tokenizer):
    gemma = copy.deepcopy(tokenizer)
    gemma.chat_template = GEMMA_TEMPLATE
    assert not supports_system_role(gemma)
    messages = to_messages(EXAMPLE, "Tutor.")
    assert fit_messages(messages, gemma)[0] == {"role": "user", "content": "Tutor.\n\nWhat is 48 + 24?"}
    text = render_chat(messages, gemma)
    assert text.startswith("<|im_start|><start_of_turn>user\nTutor.\n\nWhat is 48 + 24?<end_of_turn>\n")  # bos first
    encoded = tokenize_chat(messages, gemma)
    assert labelled_text(gemma, encoded) == messages[-1]["content"] + "<end_of_turn>\n"

    dropping = copy.deepcopy(tokenizer)  # a template that silently leaves system turns out
    dropping.chat_template = (
        "{% for m in messages %}{% if m.role != 'system' %}[{{ m.role }}]{{ m.content }}{% endif %}{% endfor %}"
    )
    assert not supports_system_role(dropping)
    assert "Tutor." in render_chat(messages, dropping)


def test_a_tokenizer_without_chat_template_is_refused(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(DataError, match="has no chat template"):
        tokenize_chat(to_messages(EXAMPLE, "Tutor."), plain)


# ---------------------------------------------------------------------------------------------- datasets, preview


def test_build_datasets_splits_by_eval_fraction_with_masked_labels(tokenizer):
    config = JobConfig(max_samples=40, eval_fraction=0.1, max_seq_length=160, seed=3)
    train, evaluation = build_datasets(config, tokenizer)
    assert (len(train), len(evaluation)) == (36, 4)
    assert train.column_names == ["input_ids", "labels"]
    for row in list(train) + list(evaluation):
        assert len(row["input_ids"]) == len(row["labels"]) <= 160
        assert row["labels"][0] == -100 and any(label != -100 for label in row["labels"])
    train_text = {tokenizer.decode(row["input_ids"]) for row in train}
    assert not train_text & {tokenizer.decode(row["input_ids"]) for row in evaluation}
    again, _ = build_datasets(config, tokenizer)
    assert again["input_ids"] == train["input_ids"]
    train, evaluation = build_datasets(JobConfig(max_samples=10, eval_fraction=0.0), tokenizer)
    assert len(train) == 10 and evaluation is None


def test_max_seq_length_below_the_longest_prompt_is_refused_with_the_length_needed(tokenizer):
    config = JobConfig(max_samples=20, max_seq_length=64)
    with pytest.raises(DataError, match=r"max_seq_length 64 is too short for the longest prompt \(\d+ tokens") as error:
        build_datasets(config, tokenizer)
    needed = int(re.search(r"raise it to at least (\d+)", str(error.value))[1])
    train, _ = build_datasets(JobConfig(max_samples=20, max_seq_length=needed), tokenizer)
    assert all(len(row["input_ids"]) <= needed for row in train)
    with pytest.raises(DataError, match=f"raise it to at least {needed}"):
        build_datasets(JobConfig(max_samples=20, max_seq_length=needed - 1), tokenizer)


def test_preview_shows_examples_as_the_model_sees_them_and_their_lengths(tokenizer):
    config = JobConfig(max_samples=50, max_seq_length=150)
    result = preview(config, tokenizer, n=3)
    examples = load_examples(config.dataset, max_samples=50, seed=config.seed)
    assert result["examples"] == [render_chat(to_messages(e, config.system_prompt), tokenizer) for e in examples[:3]]
    assert result["count"] == 50 and len(result["lengths"]) == 50
    assert result["lengths"][0] == len(tokenizer(result["examples"][0], add_special_tokens=False)["input_ids"])
    share = sum(length > 150 for length in result["lengths"]) / 50
    assert result["truncated_share"] == share and 0 < share < 1


def test_sft_trainer_keeps_the_labels_as_built(tiny_model_dir, tokenizer, tmp_path):
    """The contract with the worker: TRL uses pre-tokenized input_ids/labels as they are (no re-masking)."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = JobConfig(max_samples=12, eval_fraction=0.25, max_seq_length=120)
    train, evaluation = build_datasets(config, tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), max_length=config.max_seq_length, per_device_train_batch_size=4,
                     use_cpu=True, bf16=False, activation_checkpointing=False, report_to=[], max_steps=1)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=train,
                         eval_dataset=evaluation, processing_class=tokenizer)
    assert trainer.train_dataset["labels"] == train["labels"]
    assert trainer.eval_dataset["input_ids"] == evaluation["input_ids"]
    batch = next(iter(trainer.get_train_dataloader()))
    learned = batch["labels"] != -100
    assert 0 < learned.sum() < batch["attention_mask"].sum()  # some tokens learned, the prompts not
