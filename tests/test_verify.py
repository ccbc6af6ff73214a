"""tutor/verify.py: answers known exactly from the problem, graded as sets; the app's Check never trusts the tutor."""

import pytest

from tutor.verify import agreement, badge, grade, known_answer, values_of

QUADRATIC = "Solve $x^2 - 5x + 6 = 0$."


@pytest.mark.parametrize("answer, values", [
    ("x = 2, x = 3", {2, 3}), ("x=3 or x=2", {2, 3}), ("\\{2, 3\\}", {2, 3}), ("{2,3}", {2, 3}), ("2 and 3", {2, 3}),
    ("x = 2", {2}), ("$\\frac{3}{4}$", {0.75}), ("1,000", {1000}), ("-7/2", {-3.5}),
    ("x + 1", None), ("five", None), ("", None),
])
def test_values_of_an_answer(answer, values):
    assert values_of(answer) == (None if values is None else frozenset(values))


def test_known_answers_come_from_the_problem_only():
    roots = known_answer(QUADRATIC)
    assert roots.values == {2, 3} and roots.shown == "x = 2, x = 3" and "substituting them back" in roots.how
    assert known_answer("What is 12*7+5?").values == {89}
    assert known_answer("If 3x + 7 = 22, what is x?").values == {5}
    assert known_answer("Natalia sold clips to 48 of her friends, and half as many in May. How many?") is None
    assert known_answer("Solve x + y = 3 and x - y = 1") is None  # two unknowns: not checked here
    assert known_answer("If 3x + 7 = 22, what is 2x?") is None  # asks for something else than x
    assert known_answer("Is 12*7+5 more than 80?") is None  # not a question about its value
    assert known_answer("Tom had 3 bags. What is 12*7+5?") is None  # a story around it
    assert known_answer("Find the value of x if 2x = 9.").values == {4.5}


@pytest.mark.parametrize("student, correct, words", [
    ("x = 2, x = 3", True, "Correct"), ("{3, 2}", True, "Correct"), ("x=2 or x=3", True, "Correct"),
    ("x = 2", False, "the equation has 2 solutions and you gave 1"), ("x = 1", False, "Not correct"),
    ("x = 1, x = 2, x = 3", False, "Not correct"), ("", False, "Type your answer"),
])
def test_an_equation_with_two_roots_is_graded_as_a_set(student, correct, words):
    ok, said = grade(student, known_answer(QUADRATIC))
    assert ok is correct and words in said


def test_the_badge_says_what_is_known():
    assert badge("What is 12*7+5?", "12*7 = 84, 84 + 5 = 89. \\boxed{89}").startswith("✅ **Verified**")
    wrong = badge(QUADRATIC, "The answer is x = 1.")
    assert wrong.startswith("⚠️ **Does not check**") and "x = 2, x = 3" in wrong
    assert badge(QUADRATIC, "So x = 2 or x = 3 \\boxed{2, 3}").startswith("✅")
    assert badge("How many clips did Natalia sell?", "\\boxed{72}").startswith("❔ **Uncertain**: not checked")
    assert badge(QUADRATIC, "Let us factor it").startswith("❔ **Uncertain**: the reply states no final answer")


def test_agreement_clusters_equivalent_answers():
    assert agreement(["72", "72.0", "$72", "70", "72 clips"]) == ("72", [("72", 4), ("70", 1)])
    answer, counted = agreement(["1", "2", "3", None, "1"])
    assert answer is None and counted[0] == ("1", 2)


def test_check_my_answer_never_trusts_the_tutor():
    import app

    turns = [{"role": "user", "content": QUADRATIC}, {"role": "assistant", "content": "\\boxed{x = 2}"}]
    assert app.check_answer("x = 2, x = 3", turns, {}).startswith("✅")
    assert app.check_answer("x = 2", turns, {}).startswith("❌")  # what the tutor said, but only one root
    story = [{"role": "user", "content": "Tom has some apples and eats a few. How many are left?"},
             {"role": "assistant", "content": "The answer is 3."}]
    assert "can't be checked" in app.check_answer("3", story, {})
    assert app.check_answer("7", story, {"answer": "7"}).startswith("✅")  # a practice problem: its gold answer


def test_sampled_solutions_verify_an_answer_only_above_the_threshold():
    from tutor.verify import sampled_known

    known, words = sampled_known(["72", "72.0", "$72"], on_gpu=False)
    assert known.shown == "72" and "3 of 3" in words and "fewer on a CPU" in words
    known, words = sampled_known(["72", "70", "72", "72", "68"], on_gpu=True)
    assert known is None and "72 (3), 70 (1), 68 (1)" in words and "80%" in words


def test_check_my_answer_uses_an_answer_sampled_solutions_agreed_on():
    import app
    from tutor.verify import sampled_known

    question = "Natalia sold 48 clips in April and half as many in May. How many in all?"
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": "\\boxed{70}"}]
    agreed = {question: sampled_known(["72", "72", "72"], on_gpu=False)[0]}
    assert app.check_answer("72", turns, {}, agreed).startswith("✅")
    assert app.check_answer("70", turns, {}, agreed).startswith("❌")  # the tutor's reply, outvoted
    assert "can't be checked" in app.check_answer("72", turns, {}, {})
