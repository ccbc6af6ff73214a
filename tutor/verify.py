"""What the tutor knows about an answer, and grading a student's answer only against what is known.

`known_answer(problem)` is the answer the problem itself gives when checked exactly: the real roots of an equation
in one unknown that it states ("Solve x^2 - 5x + 6 = 0": {2, 3}), or the value of the one arithmetic expression it
asks about ("What is 12*7+5?": 89). Anything else (a word problem) has no known answer here: `agreement` can make
one from several sampled replies instead, when enough of them agree.

Answers are compared as sets of values (`x = 2, x = 3`, `{2, 3}`, `2 or 3` are all {2, 3}), so an equation with
several roots is right only with all of them; an answer that is not a list of numbers goes to
trainer.answers.is_equivalent. The tutor's own reply never counts as a known answer.
"""

import re
from dataclasses import dataclass

from trainer.answers import answer_refusal, extract_answer, is_equivalent, too_large
from tutor.steps import Unchecked, equation_roots, expressions, plain_math, to_sympy

AGREEMENT = 0.8  # share of sampled answers that must agree for their answer to count as verified
SAMPLES_GPU, SAMPLES_CPU = 5, 3  # sampled solutions per check: a CPU makes fewer, and the badge says so

_ASSIGN_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]\s*(?:_\s*\d+\s*)?=")
_LIST_SPLIT_RE = re.compile(r",|;|\bor\b|\band\b", re.I)
_ASKS_VALUE_RE = re.compile(r"\b(?:what is|what's|compute|calculate|evaluate|find|simplify|work out)\b", re.I)
_NUMBER_RE = re.compile(r"\d*\.?\d+")
_SET_BRACKETS_RE = re.compile(r"\\[{}]|[{}\[\]]")


@dataclass
class Known:
    values: frozenset[float] | None  # the answer as a set of values (rounded to 9 places); None: not numbers
    shown: str  # as the student sees it: "x = 2, x = 3", "89"
    how: str  # how it was found: "the roots of x^2 - 5x + 6 = 0, substituted back", "12*7+5 evaluated", ...


def values_of(answer: str) -> frozenset[float] | None:
    """An answer as a set of numbers (`x = 2, x = 3` -> {2.0, 3.0}), or None when it is not a list of numbers."""
    text = _SET_BRACKETS_RE.sub(" ", plain_math(answer or "")).strip().rstrip(".")
    parts = [part for part in _LIST_SPLIT_RE.split(_ASSIGN_RE.sub(" ", text)) if part.strip()]
    if not parts or len(parts) > 20:
        return None
    values = set()
    for part in parts:
        try:
            value = to_sympy(part)
        except Unchecked:
            return None
        if value.free_symbols or not value.is_real:
            return None
        values.add(round(float(value), 9))
    return frozenset(values)


def _show_value(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e15 else str(value)


def _asks_for(unknown: str, problem: str) -> bool:
    """Whether the problem asks to solve its equation or for the unknown itself."""
    asks = rf"\b(?:solve|roots?|solutions?|zeros?)\b|(?:what|find|value of|determine)\W+(?:is\W+)?\$?{unknown}(?!\w)(?!\s*[-+*/^(])"
    return re.search(asks, problem, re.I) is not None


def _only_numbers_of(expression: str, problem: str) -> bool:
    """Whether the expression holds every number in the problem ("What is 12*7+5?", not a story around it)."""
    return sorted(_NUMBER_RE.findall(plain_math(problem))) == sorted(_NUMBER_RE.findall(expression))


def known_answer(problem: str) -> Known | None:
    """The answer the problem gives when checked exactly, or None (see the module's docstring)."""
    problem = problem or ""
    roots = equation_roots(problem)
    if len(roots) == 1:
        ((unknown, (values, equation)),) = roots.items()
        if not _asks_for(unknown, problem):  # "If 3x + 7 = 22, what is 2x?" asks for something else
            return None
        shown = ", ".join(f"{unknown} = {_show_value(v)}" for v in sorted(values)) or "no real solution"
        return Known(frozenset(values), shown, f"the roots of {equation.removesuffix(' (the problem)')}, checked by "
                     "substituting them back")
    found = expressions(problem)
    if len(found) == 1 and not roots and _ASKS_VALUE_RE.search(problem) and _only_numbers_of(found[0], problem):
        try:
            value = to_sympy(found[0])
        except Unchecked:
            return None
        if value.is_real and not value.free_symbols:
            number = round(float(value), 9)
            return Known(frozenset({number}), _show_value(number), f"{found[0]} evaluated exactly")
    return None


def agreement(answers: list[str | None], threshold: float = AGREEMENT) -> tuple[str | None, list[tuple[str, int]]]:
    """(the answer that at least `threshold` of the samples give, or None; every distinct answer with its count).

    Answers are grouped with is_equivalent (the first of each group names it); a missing answer counts against.
    """
    groups: list[list[str]] = []
    for answer in answers:
        if not answer:
            continue
        group = next((g for g in groups if is_equivalent(answer, g[0])), None)
        if group is None:
            groups.append([answer])
        else:
            group.append(answer)
    counted = sorted(((g[0], len(g)) for g in groups), key=lambda pair: -pair[1])
    if counted and answers and counted[0][1] / len(answers) >= threshold:
        return counted[0][0], counted
    return None, counted


def same_answer(answer: str, known: Known) -> bool:
    values = values_of(answer)
    if values is not None and known.values is not None:
        return values == known.values
    return (known.values is None or len(known.values) == 1) and is_equivalent(answer, known.shown)


def grade(student: str, known: Known) -> tuple[bool, str]:
    """(correct, what to tell the student) for an answer to a problem whose answer is known."""
    refusal = answer_refusal(student)
    if refusal:
        return False, refusal
    answer = extract_answer(student, strict=True) or student.strip()
    if too_large(answer):
        return False, "That answer is too large to check: simplify it first."
    if same_answer(answer, known):
        return True, f"Correct! Checked against {known.how}."
    values = values_of(answer)
    if values is not None and known.values and len(known.values) > 1 and values < known.values:
        return False, (f"Part of it: the equation has {len(known.values)} solutions and you gave {len(values)}. "
                       "Find all of them.")
    return False, "Not correct yet. Check your steps and try again."


def reply_check(problem: str, reply_answer: str) -> tuple[str, Known | None, str | None]:
    """(the verdict on a tutor's reply: "verified", "does not check", "no answer" or "not checked"; the problem's
    known answer; the answer the reply states)."""
    known = known_answer(problem)
    answer = extract_answer(reply_answer or "", strict=True)
    if known is None:
        return "not checked", None, answer
    if answer is None:
        return "no answer", known, None
    return ("verified" if same_answer(answer, known) else "does not check"), known, answer


def badge(problem: str, reply_answer: str) -> str:
    """One line on a tutor's reply: verified when its answer checks against the problem, else why not."""
    verdict, known, answer = reply_check(problem, reply_answer)
    if verdict == "not checked":
        return ("❔ **Uncertain**: not checked (the question has no equation or arithmetic to check the answer "
                "against; Verify by sampling can).")
    if verdict == "no answer":
        return f"❔ **Uncertain**: the reply states no final answer; checked exactly, the answer is {known.shown}."
    if verdict == "verified":
        return f"✅ **Verified**: {known.how}."
    return f"⚠️ **Does not check**: {known.how} gives {known.shown}, not {answer}."


def sample_count() -> tuple[int, bool]:
    """(how many solutions to sample here, whether on a GPU)."""
    import torch

    on_gpu = torch.cuda.is_available()
    return (SAMPLES_GPU if on_gpu else SAMPLES_CPU), on_gpu


def sampled_answer(reply: str) -> str | None:
    """The final answer of one sampled reply, as Verify by sampling reads it (after any <think> section)."""
    from tutor.render import split_reasoning

    return extract_answer(split_reasoning(reply)[1])


def sample_answers(choice: str, history: list[dict], settings, n: int) -> list[str | None]:
    """The final answers of n replies sampled for the conversation `history` (one at a time unless replies are
    batched, as they are on a GPU; see tutor/serving.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from tutor.chat import complete_reply
    from tutor.serving import batching_enabled

    def one(_) -> str | None:
        return sampled_answer(complete_reply(choice, history, settings))

    with ThreadPoolExecutor(n if batching_enabled() else 1) as pool:
        return list(pool.map(one, range(n)))


def sampled_known(answers: list[str | None], on_gpu: bool) -> tuple[Known | None, str]:
    """(the answer the samples agree on, or None; the badge that says so, with the competing answers)."""
    majority, counted = agreement(answers)
    device = "" if on_gpu else f" ({len(answers)} samples: fewer on a CPU)"
    if majority is None:
        competing = ", ".join(f"{answer} ({count})" for answer, count in counted) or "none stated"
        words = f"❔ **Uncertain**: sampled solutions disagree{device}: {competing}; the threshold is {AGREEMENT:.0%}."
        return None, words
    agreed = dict(counted)[majority]
    how = f"{agreed} of {len(answers)} sampled solutions agreeing"
    return Known(values_of(majority), majority, how), f"✅ **Verified** by sampling: {how} on {majority}{device}."
