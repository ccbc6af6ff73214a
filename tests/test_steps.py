"""tutor/steps.py: the first wrong step of a worked solution, found by exact checks; /find_mistake through the API."""

import json
import random
import time

import pytest

from tests.browser import app_env, app_server
from tests.conftest import SHARED_DATA, needs_shared_data
from tutor.steps import Unchecked, check_steps, find_mistake, split_steps, to_sympy

NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
           "clips did Natalia sell altogether in April and May?")


@pytest.mark.parametrize("problem, solution, step, words", [
    # GSM8K calculator notes and the visible calculation
    (NATALIA, "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72",
     None, "checked exactly"),
    (NATALIA, "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=74>>74 clips.\n#### 74",
     2, "48+24 = 72, not 74"),
    (NATALIA, "Natalia sold 48/2 = 26 clips in May.\nShe sold 48+26 = 74 clips.", 1, "48/2 = 24, not 26"),
    # chains, money, thousands, percents, rounding, `x` as times
    ("", "Betty needs 100 - 50 - 30 - 15 = $5 more.", None, "1 of 1"),
    ("", "It costs 1,200 * 3 = 3,600 dollars = 3600", None, "1 of 1"),
    ("", "10/3 = 3.33 per day, so 0.2 x 50 = 10", None, "1 of 1"),
    ("", "100/4 = 25%, and 20% of 50 = 10", None, "1 of 1"),
    ("", "She earns 12 x 5 = 50", 1, "12 x 5 = 60, not 50"),
    ("", "1 hour = 60 minutes, so 2 hours = 120 minutes", None, "0 of 1"),
    ("", "√(144) = 13", 1, "= 12, not 13"),
    # algebra: an equation's roots substituted back into each later step
    ("If 3x + 7 = 22, what is x?", "3x = 22 - 7 = 15\nx = 15/3 = 5", None, "2 of 2"),
    ("If 3x + 7 = 22, what is x?", "3x + 7 = 22 -> 3x = 29 -> x = 29/3", 1, "x = 5 does not satisfy"),
    ("", "3x + 7 = 22\n3x = 15\nx = 6", 3, "x = 6 does not follow from 3x + 7 = 22"),
    ("Solve $x^2 - 5x + 6 = 0$.", "(x - 2)(x - 3) = 0\nx = 2 or x = 3", None, "2 of 2"),
    ("Solve $x^2 - 5x + 6 = 0$.", "(x - 2)(x - 3) = 0\nx = 2", 2, "x = 3 does not satisfy"),
    ("Solve $x^2 - 5x + 6 = 0$.", "$(x-1)(x-6) = 0$", 1, "x = 2, x = 3"),
    ("", "2(x + 3) = 2x + 6", None, "0 of 1"),  # an identity: nothing to solve
    # a number from nowhere: copied wrong, or the result of a missing step
    (NATALIA, "Natalia sold 46/2 = <<46/2=23>>23 clips in May.", 1, "46 is not in the problem"),
    (NATALIA, "She sold 48+23 = <<48+23=71>>71 clips.", 1, "23 is not in the problem"),
    (NATALIA, "In May she sold half: 24 clips.\nShe sold 48+24 = 72 clips.", None, "1 of 2"),
])
def test_first_wrong_step(problem, solution, step, words):
    found = find_mistake(problem, solution)
    assert found.step == step, found
    assert words in found.explanation


def test_steps_are_non_empty_lines_and_list_marks_do_not_count_as_minus():
    assert split_steps("\n a = 1 \n\n  b\n") == ["a = 1", "b"]
    assert find_mistake("", "- 48/2 = 24\n1. 3 + 4 = 7\nStep 3: 2 * 5 = 11").step == 3


@pytest.mark.parametrize("text", ["9^9^9^9", "2^100000", "1" * 50, "x" * 200, "__import__('os')", "a.b", "1/0",
                                  "x[0]"])
def test_expensive_or_foreign_expressions_are_refused_at_once(text):
    started = time.process_time()
    with pytest.raises(Unchecked):
        to_sympy(text)
    assert time.process_time() - started < 1  # CPU time of this process: sympy never got the big power


def test_a_huge_power_in_a_step_is_not_checked_rather_than_computed():
    found = find_mistake("", "9^9^9 = 3\n2 + 2 = 5")
    assert found.step == 2 and "2 + 2 = 4" in found.explanation


def test_a_judge_is_asked_only_about_steps_without_arithmetic():
    asked = []

    def judge(problem, earlier, step):
        asked.append((earlier, step))
        return "twice" in step, "half of 48 is not twice 48"

    found = find_mistake(NATALIA, "48/2 = 24\nShe sold twice as many in May\n48+24 = 72\n#### 72", judge)
    assert asked == [(["48/2 = 24"], "She sold twice as many in May")]
    assert found.step == 2 and "judged by the model" in found.explanation
    assert find_mistake(NATALIA, "48/2 = 25\nShe sold twice as many in May", judge).step == 1  # exact before it


def test_too_long_or_empty_solutions_are_refused():
    with pytest.raises(ValueError, match="Paste a worked solution"):
        find_mistake("", "  \n ")
    with pytest.raises(ValueError, match="at most 80"):
        find_mistake("", "1 + 1 = 2\n" * 81)


@needs_shared_data()
def test_unchanged_gsm8k_solutions_are_rarely_flagged_and_a_changed_result_always_is():
    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "train.jsonl").open()][:200]
    flagged = [r for r in rows if check_steps(r["question"], split_steps(r["answer"]))[-1].status == "wrong"]
    assert len(flagged) <= 4  # GSM8K has a few slips of its own
    rng = random.Random(0)
    for row in rows[:60]:
        lines = split_steps(row["answer"])
        k = rng.randrange(len(lines) - 1)
        if "<<" not in lines[k] or row in flagged:
            continue
        note_result = lines[k].split(">>")[0].split("=")[-1]
        changed = lines[k].replace(f"={note_result}>>{note_result}", f"={note_result}1>>{note_result}1")
        solution = "\n".join(lines[:k] + [changed] + lines[k + 1:])
        assert find_mistake(row["question"], solution).step == k + 1, solution


@pytest.mark.slow
def test_find_mistake_through_the_api(data_root, tmp_path):
    from gradio_client import Client

    with app_server(app_env(), tmp_path / "app.log") as url:
        client = Client(url, verbose=False)
        wrong = client.predict("If 3x + 7 = 22, what is x?", "3x = 22 - 7 = 15\nx = 15/3 = 6", "",
                               api_name="/find_mistake")
        right = client.predict(NATALIA, "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72", "",
                               api_name="/find_mistake")
        judged = client.predict(NATALIA, "In May she sold twice as many.\n48*2 = 96\n#### 96",
                                "embedded:smollm2-135m-instruct", api_name="/find_mistake")  # the model: step 1 only
    assert wrong["first_wrong_step"] == 2 and "15/3 = 5, not 6" in wrong["explanation"]
    assert judged["first_wrong_step"] in (1, None) and judged["explanation"]
    assert ("judged by the model" in judged["explanation"]) == (judged["first_wrong_step"] == 1)
    assert right == {"first_wrong_step": None, "explanation": right["explanation"]}
    assert "No wrong step found" in right["explanation"]
