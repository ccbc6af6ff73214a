"""tutor.evaluate and `python -m tutor eval`: problems, batched generation, the report."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA, needs_shared_data
from tests.test_tutor_models import make_job
from trainer.answers import is_equivalent
from tutor.__main__ import main
from tutor.chat import encode
from tutor.evaluate import (
    CPU_BATCH, EvalConfig, EvalError, Problem, auto_batch_size, disagreements, evaluate, generate_batch, load_problems,
    prompt_messages,
)
from tutor.models import load_for_evaluation, load_model

pytestmark = pytest.mark.usefixtures("empty_model_cache")

QUESTIONS = [
    "What is 2 + 3?",
    "A rectangle's length is 3 more than twice its width and its perimeter is 54. What is its width?",
    "If 3x + 7 = 22, what is x?",
    "Tom has 12 apples, gives away 5 and buys 9 more. He then splits them evenly between himself and 3 friends. "
    "How many apples does each of them get?",
]


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [{"question": q, "answer": f"Steps.\n#### {n}"} for q, n in zip(QUESTIONS, ["5", "8", "5", "4"])]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def prompts_for(loaded, questions):
    return [encode(loaded.tokenizer, prompt_messages(Problem(str(i), q, ""))) for i, q in enumerate(questions)]


@pytest.mark.parametrize("adapter", [False, True], ids=["base", "adapter"])
def test_batched_greedy_equals_one_at_a_time(data_root, sharp_model_dir, adapter):
    """Left padding with its attention mask must not change any answer: prompts differ in length here."""
    if adapter:
        make_job(data_root, "job-a", sharp_model_dir, seed=3)
    loaded = load_model("adapter:job-a" if adapter else str(sharp_model_dir))
    prompts = prompts_for(loaded, QUESTIONS)
    assert len({len(p) for p in prompts}) == len(prompts)
    batched, _ = generate_batch(loaded, prompts, max_new_tokens=16)
    single = [generate_batch(loaded, [p], max_new_tokens=16)[0][0] for p in prompts]
    assert batched == single
    assert len(set(batched)) == len(batched) and all(len(text) > 16 for text in batched)  # real, distinct texts


def test_an_adapter_merged_for_evaluation_replies_as_in_the_tutor(data_root, sharp_model_dir):
    """Evaluation merges the adapter into a model of its own: the same greedy replies as the Tutor's adapter, which
    differ from the base's; nothing is cached or shared with the Tutor."""
    make_job(data_root, "job-a", sharp_model_dir, seed=3)
    merged = load_for_evaluation("adapter:job-a")
    assert not hasattr(merged.model, "peft_config") and not merged.base.has_adapters
    tutor = load_model("adapter:job-a")
    assert tutor.model is not merged.model
    prompts = prompts_for(tutor, QUESTIONS)
    replies = generate_batch(merged, prompts, max_new_tokens=16)
    assert replies == generate_batch(tutor, prompts, max_new_tokens=16)
    assert replies != generate_batch(load_for_evaluation(str(sharp_model_dir)), prompts, max_new_tokens=16)


def test_replies_that_end_leave_the_batch_and_greedy_is_generates_own(data_root, sharp_model_dir, monkeypatch):
    """The loop writes what generate() writes; a reply that ends drops out of the batch without changing the others."""
    loaded = load_model(str(sharp_model_dir))
    prompts = prompts_for(loaded, QUESTIONS)
    with loaded.activated() as model:
        ids = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=16, do_sample=False)[0, len(prompts[0]):]
    assert generate_batch(loaded, [prompts[0]], max_new_tokens=16) == ([loaded.tokenizer.decode(ids)], 16)
    # The 4th token of the first reply ends replies from now on: that reply stops after 3, while others run on.
    monkeypatch.setattr(loaded.model.generation_config, "eos_token_id", int(ids[3]))
    batched, count = generate_batch(loaded, prompts, max_new_tokens=16)
    single = [generate_batch(loaded, [p], max_new_tokens=16) for p in prompts]
    assert batched == [texts[0] for texts, _ in single] and count == sum(n for _, n in single)
    assert single[0] == ([loaded.tokenizer.decode(ids[:3])], 3) and max(n for _, n in single) > 3
    assert auto_batch_size(loaded, 40, 600) == CPU_BATCH and auto_batch_size(loaded, 3, 600) == 3


def test_gsm8k_and_math500_files_become_problems(tmp_path, gsm8k_file):
    """Test files are read and normalized as training data is: GSM8K's `####` split, MATH's answer column."""
    problems, source = load_problems("gsm8k", str(gsm8k_file), limit=3)
    assert source == f"file:{gsm8k_file}" and len(problems) == 3
    assert problems[1] == Problem("1", QUESTIONS[1], "8")

    math = tmp_path / "math.jsonl"
    math.write_text(json.dumps({"problem": "Compute $\\frac{1}{2}+\\frac{1}{3}$.", "solution": "...",
                                "answer": "\\frac{5}{6}", "unique_id": "test/algebra/1.json"}) + "\n")
    assert load_problems("math500", str(math))[0] == [Problem("0", "Compute $\\frac{1}{2}+\\frac{1}{3}$.", "\\frac{5}{6}")]

    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"text": "2+2?", "label": "4"}) + "\n")
    with pytest.raises(EvalError, match="match no known math schema"):
        load_problems("math500", str(odd))
    with pytest.raises(EvalError, match="does not exist"):
        load_problems("gsm8k", str(tmp_path / "missing.jsonl"))


@needs_shared_data()
def test_shared_benchmark_files_are_found_without_a_data_file():
    gsm8k, source = load_problems("gsm8k", limit=5)
    assert source == f"file:{SHARED_DATA / 'gsm8k' / 'test.jsonl'}" and gsm8k[0].gold == "18"
    math500, _ = load_problems("math500", limit=2)
    assert len(math500) == 2 and math500[0].id == "0" and math500[0].gold


def test_disagreements_are_the_problems_one_gets_right_and_the_other_wrong():
    def row(i, correct):
        return {"id": str(i), "question": f"q{i}", "gold": "1", "output": "o", "extracted": "x", "correct": correct}

    base = [row(0, True), row(1, False), row(2, True), row(3, False)]
    adapter = [row(0, True), row(1, True), row(2, False), row(3, False)]
    assert [d["id"] for d in disagreements(base, adapter)] == ["1", "2"]
    assert disagreements(base, adapter)[0]["adapter"]["correct"] is True


def test_eval_of_base_and_adapter_writes_a_full_report_into_the_job(data_root, tiny_model_dir, gsm8k_file, capsys):
    job = make_job(data_root, "job-a", tiny_model_dir, seed=3)
    code = main(["eval", "--adapter", "job-a", "--benchmark", "gsm8k", "--data-file", str(gsm8k_file),
                 "--batch-size", "3", "--max-new-tokens", "8"])
    assert code == 0
    reports = list((job / "eval").glob("gsm8k-*.json"))
    assert len(reports) == 1 and str(reports[0]) in capsys.readouterr().out
    report = json.loads(reports[0].read_text())

    assert set(report) == {"benchmark", "data", "protocol", "created", "summary", "runs", "disagreements",
                           "contamination"}
    assert report["data"] == {"source": f"file:{gsm8k_file}", "problems": 4}
    protocol = report["protocol"]
    assert protocol["shots"] == 0 and protocol["max_new_tokens"] == 8 and protocol["batch_size"] == 3
    assert protocol["decoding"].startswith("greedy") and protocol["extractor"] == "trainer.answers.extract_answer"
    assert set(protocol["versions"]) == {"torch", "transformers", "peft", "math-verify"}
    assert set(report["runs"]) == {"base", "adapter"} and report["runs"]["base"]["choice"] == str(tiny_model_dir)
    for run in report["runs"].values():
        assert [p["question"] for p in run["problems"]] == QUESTIONS  # the file's order, though run longest first
        assert all(set(p) == {"id", "question", "gold", "output", "extracted", "correct", "math_verify"}
                   for p in run["problems"])
        assert run["accuracy"] == sum(p["correct"] for p in run["problems"]) / 4
    assert report["summary"]["adapter"]["total"] == 4 and "problems" not in report["summary"]["adapter"]
    assert report["runs"]["base"]["problems"][0]["output"] != report["runs"]["adapter"]["problems"][0]["output"]


def test_progress_reports_each_batch_and_one_at_a_time_uses_batches_of_one(data_root, tiny_model_dir, gsm8k_file):
    calls = []
    config = EvalConfig(model=str(tiny_model_dir), data_file=str(gsm8k_file), max_new_tokens=4, one_at_a_time=True)
    report = evaluate(config, progress=lambda done, total, label: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert report["protocol"]["batch_size"] == 1 and "disagreements" not in report


def test_an_adapter_of_another_base_is_refused(data_root, tiny_model_dir, gsm8k_file, capsys):
    make_job(data_root, "job-a", tiny_model_dir, seed=3)
    code = main(["eval", "--model", "embedded:smollm2-135m-instruct", "--adapter", "job-a",
                 "--data-file", str(gsm8k_file)])
    assert code == 2 and "leave --model out" in capsys.readouterr().err


@pytest.mark.slow
@needs_shared_data()
def test_cli_eval_of_the_embedded_model_on_five_gsm8k_problems(data_root, tmp_path):
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tutor", "eval", "--model", "embedded:smollm2-135m-instruct",
               "--benchmark", "gsm8k", "--limit", "5", "--max-new-tokens", "96", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    run = report["runs"]["base"]
    assert report["data"]["problems"] == 5 and run["total"] == 5 and run["model"].startswith("SmolLM2-135M")
    assert all(p["output"].strip() for p in run["problems"])  # the real model writes an answer to each
    assert "gsm8k: 5 problems" in done.stdout


def test_any_test_set_with_the_specs_and_schemas_of_training(tmp_path):
    """CSV with its own column names mapped, a problem/answer JSON with units and text around the numbers, Parquet."""
    import pandas as pd

    csv = tmp_path / "quiz.csv"
    pd.DataFrame({"Q": ["What is 4 + 5?", "What is 3 * 3?"], "A": ["9 (apples)", "9.0"]}).to_csv(csv, index=False)
    problems, source = load_problems("gsm8k", f"file:{csv}?problem=Q&answer=A")
    assert source == f"file:{csv}" and [p.question for p in problems] == ["What is 4 + 5?", "What is 3 * 3?"]
    assert all(is_equivalent("9", p.gold) for p in problems) and not is_equivalent("8", problems[0].gold)

    parquet = tmp_path / "test.parquet"
    pd.DataFrame({"problem": ["Solve $x+1=3$."], "solution": ["So $x=\\boxed{2}$."]}).to_parquet(parquet)
    assert load_problems("math500", str(parquet))[0][0].gold == "2"  # MATH's answer is read from its box

    with pytest.raises(EvalError, match="no column 'Question'.*'A', 'Q'"):
        load_problems("gsm8k", f"file:{csv}?problem=Question&answer=A")
    missing = r"no column 'Body' \(named in \?problem=Body\+Q\); its columns are \['A', 'Q'\]"
    with pytest.raises(EvalError, match=missing):
        load_problems("gsm8k", f"file:{csv}?problem=Body+Q&answer=A")
    with pytest.raises(EvalError, match="one at a time"):
        load_problems("gsm8k", f"file:{csv}?problem=Q&answer=A*2+builtin:basic-math*2")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_cli_eval_reads_a_problem_joined_from_body_and_question(data_root, tiny_model_dir, tmp_path, kind):
    import pandas as pd

    frame = pd.DataFrame({"Body": ["Jack had 5 pens. He bought 3 more.", "A box holds 12 eggs."],
                          "Question": ["How many pens does he have?", "How many eggs are in 2 boxes?"],
                          "Answer": [8.0, 24.0]})
    path = tmp_path / f"svamp.{kind}"
    frame.to_csv(path, index=False) if kind == "csv" else frame.to_json(path, orient="records", lines=True)
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data-file",
                 f"file:{path}?problem=Body+Question&answer=Answer", "--max-new-tokens", "2", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["data"] == {"source": f"file:{path}", "problems": 2}
    problems = report["runs"]["base"]["problems"]
    assert [p["question"] for p in problems] == ["Jack had 5 pens. He bought 3 more. How many pens does he have?",
                                                 "A box holds 12 eggs. How many eggs are in 2 boxes?"]
    assert [is_equivalent(n, p["gold"]) for n, p in zip(["8", "24"], problems)] == [True, True]


def test_test_problems_in_the_training_data_are_counted(data_root, tmp_path, sharp_model_dir):
    from trainer import store
    from trainer.config import JobConfig
    from tutor.evaluate import contamination

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": q, "answer": "1"}) + "\n" for q in
                             ["What is 2 + 3?", "Unrelated training problem."]))
    job = make_job(data_root, "job-a", sharp_model_dir, seed=1)
    JobConfig(base_model=str(sharp_model_dir), dataset=f"file:{train}", max_samples=0).save(store.config_file(job))
    test = [Problem("0", "what is 2+3 ?", "5"), Problem("1", "What is 7 + 1?", "8")]  # the first, spaced otherwise
    assert contamination(test, job) == {"checked": True, "training_examples": 2, "overlap": 1, "ids": ["0"]}
    train.unlink()  # a training set that cannot be read now: said, not raised
    assert contamination(test, job)["checked"] is False


def test_math_verify_scores_the_whole_reply_as_a_second_scorer():
    from trainer.answers import reply_is_correct

    slow = 60  # seconds: a deadline for a busy machine, not a speed test
    assert reply_is_correct("First 2 + 3 = 5, so the answer is $\\boxed{5}$.", "5", timeout_s=slow)
    assert reply_is_correct("The roots are $x = \\frac{1}{2}$.", "0.5", timeout_s=slow)
    assert not reply_is_correct("So it is $\\boxed{6}$.", "5", timeout_s=slow)
