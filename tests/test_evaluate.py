"""tutor.evaluate and `python -m tutor eval`: problems, batched generation, the report."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA, needs_shared_data
from tests.test_tutor_models import make_job
from trainer import store
from trainer.answers import extract_answer, is_equivalent, reply_is_correct
from tutor.__main__ import main
from tutor.chat import encode
import tutor.evaluate as evaluate_module
from tutor.evaluate import (
    CPU_BATCH, EvalConfig, EvalError, Estimate, GrowingLayer, Problem, Reply, answer_end, auto_batch_size,
    default_report_path, disagreements, estimate_run, estimate_seconds, evaluate, generate_batch, load_problems,
    loop_end, model_device, prompt_messages, stop_reason, write_report,
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
    batched = generate_batch(loaded, prompts, max_new_tokens=16)
    single = [generate_batch(loaded, [p], max_new_tokens=16)[0] for p in prompts]
    assert batched == single
    texts = [reply.text for reply in batched]
    assert len(set(texts)) == len(texts) and all(len(text) > 16 for text in texts)  # real, distinct texts


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
    """The loop writes what generate() writes, its cache growing a few tokens at a time here; a reply that ends drops
    out of the batch without changing the others."""
    monkeypatch.setattr(GrowingLayer, "GROW_TOKENS", 3)
    loaded = load_model(str(sharp_model_dir))
    prompts = prompts_for(loaded, QUESTIONS)
    with loaded.activated() as model:
        ids = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=16, do_sample=False)[0, len(prompts[0]):]
    assert generate_batch(loaded, [prompts[0]], max_new_tokens=16) == [Reply(loaded.tokenizer.decode(ids), 16, "limit")]
    # The 4th token of the first reply ends replies from now on: that reply stops after 3, while others run on.
    monkeypatch.setattr(loaded.model.generation_config, "eos_token_id", int(ids[3]))
    batched = generate_batch(loaded, prompts, max_new_tokens=16)
    single = [generate_batch(loaded, [p], max_new_tokens=16)[0] for p in prompts]
    assert batched == single
    assert single[0] == Reply(loaded.tokenizer.decode(ids[:3]), 3, "end") and max(r.tokens for r in single) > 3
    assert auto_batch_size(loaded, 40, 600) == CPU_BATCH and auto_batch_size(loaded, 3, 600) == 3


def test_a_reply_whose_answer_is_complete_stops_with_that_token_and_leaves_the_batch(data_root, sharp_model_dir,
                                                                                    monkeypatch):
    """The check of a reply's text (stop_reason) ends it with the token that completes it; the other replies run on
    as they would alone."""
    loaded = load_model(str(sharp_model_dir))
    prompts = prompts_for(loaded, QUESTIONS)
    alone = [generate_batch(loaded, [p], max_new_tokens=12)[0] for p in prompts]
    with loaded.activated() as model:
        ids = model.generate(input_ids=torch.tensor(prompts[:1]), max_new_tokens=4, do_sample=False)[0, len(prompts[0]):]
    done = "".join(loaded.tokenizer.decode([token]) for token in ids)  # as if its 4th token closed its \boxed{}
    monkeypatch.setattr(evaluate_module, "stop_reason", lambda text, newest: "answer" if text == done else "")
    batched = generate_batch(loaded, prompts, max_new_tokens=12)
    assert batched[0] == Reply(loaded.tokenizer.decode(ids), 4, "answer") and batched[1:] == alone[1:]
    assert all(reply.stop == "limit" and reply.tokens == 12 for reply in alone[1:])


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
    out = capsys.readouterr().out
    assert len(reports) == 1 and str(reports[0]) in out
    assert out.count(" to generate: 4 problems x ") == 2  # an estimate before each model generates
    assert out.count("tokens/s, batch 3; replies ended: ") == 2
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
        assert all(set(p) == {"id", "question", "gold", "output", "extracted", "correct", "math_verify", "tokens",
                              "stop"} for p in run["problems"])
        assert sum(p["tokens"] for p in run["problems"]) == run["generated_tokens"] > 0
        assert sum(run["stops"].values()) == 4 and run["estimate"]["problems"] == 4
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


def test_a_report_on_a_data_file_is_named_by_its_data_not_the_benchmark(data_root):
    names = {"": "gsm8k", "/data/svamp.jsonl": "svamp", "file:/data/asdiv v2.csv?problem=Q&answer=A": "asdiv-v2",
             f"{SHARED_DATA}/math500/test.jsonl": "math500-test", "hub:ChilleD/SVAMP": "SVAMP",
             "hub:openai/gsm8k:main": "gsm8k", "builtin:basic-math": "basic-math"}
    assert {data: EvalConfig(data_file=data).test_set for data in names} == names
    assert EvalConfig(benchmark="math500").test_set == "math500"
    assert default_report_path(EvalConfig(data_file="/data/svamp.jsonl")).name.startswith("svamp-")


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
    assert report["data"] == {"source": f"file:{path}", "problems": 2} and report["benchmark"] == "svamp"
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


# ---- where a reply ends ----

# The embedded model's reply to GSM8K's first test problem (greedy, 512 tokens, never ending), its start and loop.
RUNAWAY = ("Janet has 16 eggs per day, so she lays 16 eggs per day * 16 days = 24 eggs per day. "
           "She makes 2.4 eggs per day * 4 days = 8.8 eggs per day. "
           "She makes 8.8 eggs per day * $2 per fresh duck egg = $1.44 per fresh duck egg. "
           "She makes 1.44 eggs per day * $2 per fresh duck egg = $2.44 per fresh duck egg. "
           "She makes 2.44 eggs per day * $2 per fresh duck egg = $4.84 per fresh duck egg. "
           "She makes 4.84 eggs per day * $2 per fresh duck egg = $8.24 per fresh duck egg. "
           "She makes 8.24 eggs per day * $2 per fresh duck egg = $16.68 per fresh duck egg. "
           "She makes 16.68 eggs per day * $2 per fresh duck egg = $32.36 per fresh duck")
# Replies that end (their end token came after the last character), each with its gold answer.
ENDED = [
    ("<think>16 - 3 - 4 = 9 eggs are left. Is it \\boxed{9}? No: 9 * 2 = 18 dollars.</think>\n"
     "She makes $\\boxed{18}$ dollars every day.", "18"),
    ("She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18\nI hope this helps!", "18"),
    ("She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
    ("Half of 1 is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("In year 2 he pays 90. In year 3 he pays 100. In year 4 he pays 110. So the answer is 110.", "110"),
    ("I think it is 17.", "18"),
]


def stopped(text: str) -> str:
    """What generate_batch keeps of a reply that the model writes a character per token: the tightest cut."""
    return next((text[: i + 1] for i, char in enumerate(text) if stop_reason(text[: i + 1], char)), text)


def test_a_reply_ends_once_its_final_answer_is_complete_past_its_thinking():
    thinking, _ = ENDED[0]
    assert answer_end(thinking) == thinking.index("}$ dollars") + 1  # the box while thinking was not final
    assert answer_end("<think>so \\boxed{9}") is None and answer_end("\\boxed{\\frac{1}{2") is None
    assert answer_end("x = \\boxed{\\frac{1}{2}} or \\boxed{3}") == len("x = \\boxed{\\frac{1}{2}}")
    assert answer_end("Steps.\n#### 18") is None and answer_end("Steps.\n#### 18\nMore") == len("Steps.\n#### 18")
    assert answer_end("The answer is 18.") is None  # words are no final answer: the reply runs to its end token


def test_a_reply_that_loops_ends_at_the_fourth_round_numbers_aside():
    fourth = RUNAWAY.index("$8.24 per fresh duck egg.") + len("$8.24 per fresh duck egg.")
    assert loop_end(RUNAWAY) == fourth and stopped(RUNAWAY) == RUNAWAY[: fourth + 1]  # cut at the space that ends it
    assert loop_end(RUNAWAY[: fourth - 1]) is None  # three rounds and most of a fourth are no loop yet
    assert loop_end("Add 2.\n" * 9) is None  # fewer than three words: a formula or a table row, not a loop
    cycle = "First we add the eggs. Then we sell 3 eggs. " * 4
    assert loop_end(cycle) == len(cycle) - 1  # two sentences, four rounds
    assert stop_reason(RUNAWAY, "fresh") == "" and stop_reason(RUNAWAY + ". ", ". ") == "loop"


def test_cutting_replies_that_end_keeps_their_score():
    """A reply that ends is cut after its final answer at most (a token's worth of text on): the same answer, the
    same verdict from the extractor and from math-verify on the whole reply."""
    for reply, gold in ENDED:
        cut = stopped(reply)
        assert reply.startswith(cut) and extract_answer(cut) == extract_answer(reply), reply
        assert is_equivalent(extract_answer(cut), gold) == is_equivalent(extract_answer(reply), gold)
        assert reply_is_correct(cut, gold) == reply_is_correct(reply, gold), reply
    assert [stopped(reply) != reply for reply, _ in ENDED] == [True, True, False, True, False, False]


@needs_shared_data()
def test_gsm8k_solutions_written_as_replies_keep_their_answers():
    """GSM8K's reference solutions are replies that end: not one of the first 400 is cut before its answer (across
    the train set 2 of 7,473 are: an enumeration of 4 lines alike, see benchmarks/README.md)."""
    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").open()][:400]
    assert all(extract_answer(stopped(row["answer"])) == extract_answer(row["answer"]) for row in rows)


# ---- saying what a run will take ----


def test_the_estimate_is_problems_times_reply_tokens_over_the_rate():
    assert estimate_seconds(4, 250, 25.0) == 40.0 and estimate_seconds(1319, 200, 2000.0) == pytest.approx(131.9)
    estimate = Estimate(50, 240.0, 20.0, "3 earlier run(s) on this device")
    assert estimate.seconds == 600.0
    assert str(estimate) == "about 10 min to generate: 50 problems x 240 tokens / 20.0 tokens/s (3 earlier run(s) on " \
                            "this device)"


def test_the_warm_up_rate_times_decoding_steps_apart_from_the_prefill(monkeypatch):
    """A slow, noisy prefill (here 5 s once, 1 s after) must not enter the rate: two rows, 0.1 s a step."""
    from tutor import evaluate as module

    clock, prefills = [0.0], iter([5.0, 1.0])

    def generate(loaded, prompts, steps, step_times):
        for step in range(steps):
            clock[0] += next(prefills) if step == 0 else 0.1
            step_times.append(clock[0])
        return [Reply("", steps, "limit") for _ in prompts]

    monkeypatch.setattr(module, "generate_batch", generate)
    monkeypatch.setattr(module.time, "perf_counter", lambda: clock[0])
    assert module.warm_up_rate(None, [[1, 2], [3, 4]]) == pytest.approx(2 / 0.1)
    assert module.warm_up_rate(None, [[1, 2], [3, 4]]) == pytest.approx(2 / 0.1)


def test_the_estimate_comes_from_earlier_reports_of_the_model_else_from_a_warm_up(data_root, tiny_model_dir,
                                                                                 gsm8k_file):
    loaded = load_for_evaluation(str(tiny_model_dir))
    prompts = prompts_for(loaded, QUESTIONS)
    first = estimate_run(loaded, prompts[:2], 10, 8)
    assert first.source == "a 8-step warm-up, replies guessed at half of 8 tokens"
    assert first.reply_tokens == 4 and first.tokens_per_s > 0 and first.problems == 10

    config = EvalConfig(model=str(tiny_model_dir), data_file=str(gsm8k_file), batch_size=2, max_new_tokens=8)
    report = evaluate(config)
    write_report(report, default_report_path(config))
    run = report["summary"]["base"]
    assert run["estimate"]["source"] == first.source  # no report before this run
    later = estimate_run(loaded, prompts[:2], 10, 8)
    assert later.source == "1 earlier run(s) on this device" and later.reply_tokens == run["generated_tokens"] / 4
    assert later.tokens_per_s == pytest.approx(run["generated_tokens"] / run["generate_s"])
    assert later.seconds == pytest.approx(10 * run["generate_s"] / 4)
    other_batch = estimate_run(loaded, prompts[:3], 10, 8)  # tokens/s differ by batch: measured, reply length kept
    assert other_batch.source == "a 8-step warm-up" and other_batch.reply_tokens == later.reply_tokens
    assert estimate_run(loaded, prompts[:2], 10, 16).source.endswith("half of 16 tokens")  # another protocol
    assert [r["summary"]["base"]["device"] for r in store.read_reports(data_root)] == [model_device(loaded)]
