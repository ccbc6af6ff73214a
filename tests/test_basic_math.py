"""The builtin dataset: deterministic, in the MathX-5M schema, and every answer re-checked from the problem text."""

import re
from fractions import Fraction
from math import gcd

import pytest

from trainer.basic_math import GENERATORS, generate

SOLUTION_RE = re.compile(r"^<think>\n(?P<steps>.+)\n</think>\n\nThe answer is \\boxed\{(?P<answer>.+)\}\.$", re.S)
NUMBER = r"-?\$?\d+(?:\.\d+)?"
# "a op b op c = d" written out in the steps; evaluated left to right (the steps never mix + with × in one chain)
CHAIN_RE = re.compile(rf"(?<![\d./$])(?P<chain>{NUMBER}(?: [-+×÷] {NUMBER})+) = (?P<result>{NUMBER})(?![\d/]|\.\d)")


def number(text: str) -> Fraction:
    """An answer as an exact number: 12, 2.5, 15.05, \\frac{7}{12}, -\\frac{1}{6}."""
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    if match:
        sign, p, q = match.groups()
        assert gcd(int(p), int(q)) == 1 and int(q) > 1, f"{text} is not in lowest terms"
        return Fraction(int(p), int(q)) * (-1 if sign else 1)
    return Fraction(text.replace("$", ""))


def fractions(a, b, op, c, d):
    x, y = Fraction(int(a), int(b)), Fraction(int(c), int(d))
    return {"+": x + y, "-": x - y, "×": x * y}[op]


def whole(value: Fraction) -> Fraction:
    assert value.denominator == 1, f"{value} should be a whole number of things"
    return value


# (pattern of a problem, the answer recomputed from the numbers in it); linear equations are checked by substitution
CHECKS = [
    (r"^Solve for x: (\d+)x \+ (\d+) = (\d+)\.$", lambda a, b, c, x: a * x + b == c),
    (r"^Solve for x: (\d+)x - (\d+) = (-?\d+)\.$", lambda a, b, c, x: a * x - b == c),
    (r"^Solve for x: (\d+)x \+ (\d+) = (\d+)x \+ (\d+)\.$", lambda a, b, c, d, x: a * x + b == c * x + d),
    (r"buys (\d+) \w+ at \$(\d+) each and pays with a \$(\d+) bill", lambda n, p, bill, x: x == bill - n * p),
    (r"has (\d+) \w+ and gets (\d+) more\. \w+ then shares them equally among (\d+) friends",
     lambda a, b, k, x: x == whole(Fraction(a + b, k))),
    (r"reads (\d+) pages a day for (\d+) days, then (\d+) pages", lambda p, d, q, x: x == p * d + q),
    (r"^What is (\d+)% of (\d+)\?$", lambda p, n, x: x == Fraction(p * n, 100)),
    (r"costs \$(\d+)\. It is on sale for (\d+)% off", lambda price, p, x: x == price - Fraction(price * p, 100)),
    (r"has (\d+) people\. Its population grows by (\d+)%", lambda n, p, x: x == whole(n + Fraction(n * p, 100))),
    (r"rectangle is (\d+) cm long and (\d+) cm wide\. What is its area", lambda l, w, x: x == l * w),
    (r"rectangle is (\d+) cm long and (\d+) cm wide\. What is its perimeter", lambda l, w, x: x == 2 * l + 2 * w),
    (r"triangle has a base of (\d+) m and a height of (\d+) m", lambda b, h, x: x == Fraction(b * h, 2)),
    (r"square has a perimeter of (\d+) cm", lambda p, x: x == Fraction(p, 4) ** 2),
    (r"^Compute (\d+)/(\d+) ([-+×]) (\d+)/(\d+)\. Write the answer as a fraction in lowest terms\.$", None),
    (r"^(\d+) \w+ cost \$(\d+(?:\.\d+)?)\. At the same price, how much do (\d+) \w+ cost",
     lambda n, total, m, x: x == total / n * m),
    (r"travels (\d+) km in (\d+) hours at a steady speed\. How far does it travel in (\d+) hours",
     lambda d, t, t2, x: x == Fraction(d, t) * t2),
    (r"^Compute (\d+) \+ (\d+) × (\d+) - (\d+)\.$", lambda a, b, c, d, x: x == a + b * c - d),
]


def check_answer(problem: str, answer: Fraction) -> int:
    """Index of the check that recognised the problem, after asserting the answer."""
    matched = [i for i, (pattern, _) in enumerate(CHECKS) if re.search(pattern, problem)]
    assert len(matched) == 1, f"{problem!r} matches checks {matched}"
    pattern, check = CHECKS[matched[0]]
    groups = re.search(pattern, problem).groups()
    if check is None:  # fractions: recompute with Fraction
        a, b, op, c, d = groups
        assert answer == fractions(a, b, op, c, d), problem
    else:
        assert check(*(Fraction(g) for g in groups), answer), f"{problem!r}: {answer} is wrong"
    return matched[0]


def evaluate(chain: str) -> Fraction:
    tokens = chain.replace("$", "").split(" ")
    value = Fraction(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        operand = Fraction(operand)
        value = {"+": value + operand, "-": value - operand, "×": value * operand, "÷": value / operand}[op]
    return value


@pytest.fixture(scope="module")
def rows():
    return generate(600, seed=3)


def test_same_seed_same_rows_and_another_seed_other_rows():
    assert generate(40, seed=11) == generate(40, seed=11)
    assert generate(40, seed=11) != generate(40, seed=12)
    assert generate(10, seed=11) == generate(40, seed=11)[:10]


def test_rows_are_in_the_mathx_schema_with_the_boxed_answer_matching(rows):
    assert len(rows) == 600
    assert len({row["problem"] for row in rows}) == 600
    for row in rows:
        assert set(row) == {"problem", "generated_solution", "expected_answer"}
        match = SOLUTION_RE.match(row["generated_solution"])
        assert match, row["generated_solution"]
        assert match["answer"] == row["expected_answer"]
        assert len(match["steps"].splitlines()) >= 2


def test_every_answer_is_right_when_recomputed_from_the_problem(rows):
    used = {check_answer(row["problem"], number(row["expected_answer"])) for row in rows}
    assert used == set(range(len(CHECKS))), f"problem kinds never generated: {set(range(len(CHECKS))) - used}"
    assert len(GENERATORS) >= 14


def test_every_calculation_in_the_steps_is_right(rows):
    checked = 0
    for row in rows:
        steps = SOLUTION_RE.match(row["generated_solution"])["steps"]
        for match in CHAIN_RE.finditer(steps):
            assert evaluate(match["chain"]) == Fraction(match["result"].replace("$", "")), f"{match[0]!r} in {steps!r}"
            checked += 1
    assert checked >= 2 * len(rows) * 0.8  # nearly every solution shows two or more calculations


def test_fraction_answers_are_in_lowest_terms():
    fraction_rows = [row for row in generate(300, seed=5) if "\\frac" in row["expected_answer"]]
    assert fraction_rows
    for row in fraction_rows:
        number(row["expected_answer"])  # asserts lowest terms


def test_solutions_are_short_enough_for_a_tiny_model(tiny_model_dir, rows):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [len(tokenizer(row["generated_solution"])["input_ids"]) for row in rows]
    assert 30 <= min(lengths) and max(lengths) <= 130, (min(lengths), max(lengths))
