"""trainer.answers: extracting final answers, deciding equivalence (also off the main thread), checking students."""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import SHARED_DATA, needs_shared_data

from trainer import answers
from trainer.answers import check_student_answer, extract_answer, is_equivalent, last_boxed, math_verify_equal

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        # \boxed{}: the last complete one, nested and escaped braces included
        ("first \\boxed{1}, finally \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
        ("\\boxed{x^{2}+\\frac{1}{2}}", "x^{2}+\\frac{1}{2}"),
        ("\\boxed{5} and then \\boxed{6", "5"),
        ("\\fbox{7}", "7"),
        ("The answer is 5. Actually \\boxed{6}", "6"),
        # GSM8K
        ("Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72.\n#### 72", "72"),
        ("#### 1,000", "1,000"),
        ("#### 7\nThe answer is 8", "7"),
        # "The answer is ..." and "Final answer: ..."
        ("So the answer is 42.", "42"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The final answer is: 3.5. Next we check.", "3.5"),
        ("The answer is 3.5 meters. That is all.", "3.5 meters"),
        ("Final answer: 18", "18"),
        ("**Final Answer:** $18", "$18"),
        ("**Final answer**: **12**", "12"),
        ("Final answer:\n\\(x = 2\\)", "x = 2"),
        # "Therefore ..." sentences
        ("Therefore, x = \\frac{1}{2}.", "\\frac{1}{2}"),
        ("Thus the total is 15 dollars.", "15 dollars"),
        ("Therefore, Janet makes $18 every day.", "18"),
        ("Hence the area is $3\\sqrt{2}$.", "3\\sqrt{2}"),
        # the last number as the last resort
        ("She has 3 apples and 12 pears", "12"),
        ("In all 1,234 people came", "1234"),
        ("It was -4.5 degrees", "-4.5"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Therefore x = 3.", None),
        ("She has 3 apples", None),
        ("The answer is 4.", "4"),
        ("so \\boxed{9}", "9"),
        ("#### 10", "10"),
    ],
)
def test_extract_answer_strict_needs_a_stated_answer(text, expected):
    assert extract_answer(text, strict=True) == expected


@needs_shared_data()
def test_extract_answer_on_real_solutions():
    for line in (SHARED_DATA / "gsm8k" / "test.jsonl").open():
        row = json.loads(line)
        assert extract_answer(row["answer"]) == row["answer"].rsplit("####", 1)[1].strip()
    for line in (SHARED_DATA / "math500" / "test.jsonl").open():
        row = json.loads(line)
        assert extract_answer(row["solution"]) == row["answer"], row["unique_id"]


def test_last_boxed_needs_a_closed_box():
    assert last_boxed("\\boxed{\\frac{1}{2}") is None
    assert last_boxed("\\boxed {a}") == "a"
    assert last_boxed("nothing") is None


# ---------------------------------------------------------------- equivalence

EQUIVALENT = [
    ("1,000", "1000"),
    ("1,234,567", "1234567"),
    ("$18", "18"),
    ("\\$18.00", "18"),
    ("\\$1,234.50", "1234.5"),
    ("$\\$32,\\!348$", "32348"),
    ("18 dollars", "18"),
    ("5 cm", "5"),
    ("\\text{5 cm}", "5"),
    ("10^\\circ", "10"),
    ("45^{\\circ}", "45"),
    ("50\\%", "50"),
    ("50%", "0.5"),
    ("6\\%", "0.06"),
    ("0.50", ".5"),
    ("\u22125", "-5"),
    ("$5$", "5"),
    ("\\boxed{42}", "42"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\frac{6}{8}", "\\frac{3}{4}"),
    ("-7/2", "-3.5"),
    ("$\\frac{1}{3}$", "\\frac13"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("3\\sqrt{3}", "\\sqrt{27}"),
    ("\\pi/2", "\\frac{\\pi}{2}"),
    ("2^{10}", "1024"),
    ("2x+3", "3+2x"),
    ("x^2-1", "(x-1)(x+1)"),
    ("x = 5", "5"),
    ("[1, 3)", "[1,3)"),
    ("(-\\infty, 2]", "(-\\infty,2]"),
    ("(1, 2)", "(1,2)"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
]

NOT_EQUIVALENT = [
    ("5", "6"),
    ("-5", "5"),
    ("18", "180"),
    ("1000", "100"),
    ("12 apples", "13"),
    ("1,2", "12"),
    ("50%", "5"),
    ("0.333", "\\frac{1}{3}"),
    ("\\frac{1}{2}", "2"),
    ("1/2", "2/1"),
    ("\\frac{1}{0}", "0"),
    ("\\sqrt{2}", "2"),
    ("3.14", "\\pi"),
    ("2 pi", "2"),
    ("5x", "5"),
    ("2x", "2"),
    ("x+1", "x-1"),
    ("x = 4", "5"),
    ("(1, 2)", "(2, 1)"),
    ("[1, 3)", "(1, 3]"),
    ("(-\\infty, 2]", "(-\\infty, 2)"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("", "5"),
    (None, "5"),
    ("5", None),
]


@pytest.mark.parametrize(
    "predicted, gold, expected",
    [(p, g, True) for p, g in EQUIVALENT] + [(p, g, False) for p, g in NOT_EQUIVALENT],
)
def test_is_equivalent(predicted, gold, expected):
    assert is_equivalent(predicted, gold) is expected


def test_is_equivalent_from_worker_threads():
    pairs = [("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True), ("x^2-1", "(x-1)(x+1)", True), ("[1, 3)", "(1, 3]", False),
             ("1,000", "1000", True)]
    results = {}
    thread = threading.Thread(target=lambda: results.update(single=is_equivalent("2x+3", "3+2x")))
    thread.start()
    thread.join()
    assert results == {"single": True}
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda pair: is_equivalent(pair[0], pair[1]), pairs)) == [want for _, _, want in pairs]


def test_math_verify_runs_off_the_main_thread_without_signals():
    # math-verify's default timeout calls signal.alarm, which raises off the main thread; ours must not
    results = []
    thread = threading.Thread(target=lambda: results.append(math_verify_equal("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}")))
    thread.start()
    thread.join()
    assert results == [True]


@pytest.fixture
def fresh_verifier():
    """No checker process from before, and none left after: a stand-in's replacement, started in the background with
    the stand-in's command, would otherwise stay in the pool and answer later tests' checks (it did: 'Correct!')."""
    answers.stop_verifier()
    yield
    end = time.monotonic() + 120
    while answers._starting and time.monotonic() < end:
        time.sleep(0.05)
    answers.stop_verifier()
    assert answers.verifiers_alive() == 0


def test_a_hung_check_returns_false_and_its_worker_is_killed(fresh_verifier, monkeypatch):
    hangs = "import sys, time; print('ready', flush=True); sys.stdin.readline(); time.sleep(600)"
    monkeypatch.setattr(answers, "_VERIFIER_COMMAND", [sys.executable, "-c", hangs])
    results = []
    thread = threading.Thread(target=lambda: results.append(is_equivalent("x^2", "y^2", timeout_s=0.5)))
    thread.start()
    thread.join(timeout=60)
    assert results == [False]
    while answers._starting:  # its replacement is started at once, in the background
        time.sleep(0.1)
    assert answers.verifiers_alive() == len(answers._idle) == 1  # the hung one killed: nothing keeps spinning
    answers.stop_verifier()  # the stand-in's replacement
    monkeypatch.undo()
    assert is_equivalent("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}") is True  # a fresh worker takes over


def test_a_crashed_worker_fails_loudly(fresh_verifier, monkeypatch):
    crashes = "import sys; print('ready', flush=True); sys.stdin.readline(); sys.exit(3)"
    monkeypatch.setattr(answers, "_VERIFIER_COMMAND", [sys.executable, "-c", crashes])
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        is_equivalent("x^2", "y^2")


# ---------------------------------------------------------------- the student's own answer


@pytest.mark.parametrize(
    "student, gold_or_reply, correct",
    [
        ("1/2", "We simplify and get \\boxed{0.5}.", True),
        ("0.5", "\\frac{1}{2}", True),
        ("x = 5", "5", True),
        ("$18", "She sells 9 eggs at $2.\n#### 18", True),
        ("The answer is 72", "#### 72", True),
        ("7", "#### 8", False),
        ("\\sqrt{2}", "\\frac{\\sqrt{2}}{2}", False),
    ],
)
def test_check_student_answer(student, gold_or_reply, correct):
    ok, message = check_student_answer(student, gold_or_reply)
    assert ok is correct
    assert message.startswith("Correct") if correct else message.startswith("Not correct")


def test_check_student_answer_without_an_answer_or_a_gold():
    assert check_student_answer("  ", "5") == (False, "Type your answer first.")
    ok, message = check_student_answer("5", "Let us talk about what fractions mean before computing anything at all.")
    assert not ok and "no final answer" in message


def test_towers_and_huge_exponents_are_refused_before_sympy(fresh_verifier):
    """9^{9^{9^{9}}} kept the one shared checker busy 5.3 s per try; it is refused without reaching a worker."""
    for answer in ["9^{9^{9^{9}}}", "9^9^9", "2**3**4", "9^{99999}", "10000!"]:
        ok, message = check_student_answer(answer, "5")
        assert not ok and "too large to check" in message, answer
    assert answers.verifiers_alive() == 0  # no worker was needed
    for answer, gold in [("e^{-x^2}", "\\exp(-x^2)"), ("2^{10}", "1024"), ("x^2 + y^2", "y^2 + x^2")]:
        assert check_student_answer(answer, gold)[0], answer  # ordinary powers are still checked


def test_one_slow_check_does_not_hold_up_the_others(fresh_verifier, monkeypatch):
    """Checks run in a small pool of worker processes: while one hangs until its deadline, another is answered."""
    hangs_on_x = ("import json, sys, time\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
                  "    if 'x' in json.loads(line)[0]: time.sleep(600)\n    print('true', flush=True)\n")
    monkeypatch.setattr(answers, "_VERIFIER_COMMAND", [sys.executable, "-c", hangs_on_x])
    stuck = threading.Thread(target=lambda: pytest.raises(RuntimeError, is_equivalent, "x^2", "y^2", timeout_s=600))
    stuck.start()
    while answers.verifiers_alive() == 0:  # the stuck check holds its worker
        time.sleep(0.05)
    assert is_equivalent("a^2", "b^2", timeout_s=60) is True  # answered by another worker...
    assert stuck.is_alive()  # ...while the stuck check still waits (one shared worker answered it only after)
    answers.stop_verifier()
    for process in list(answers._alive):
        process.kill()  # the stuck one: its check then ends
    stuck.join(60)
