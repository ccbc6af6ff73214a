"""The hint ladder: each "Give me a hint" climbs one rung, and no hint gives the answer away.

Rungs: the idea -> the setup -> the next step -> a worked step on a similar problem. Every hint a model writes is
checked against the answers to hide (the verified or gold answer, and whatever the tutor already answered: hiding
needs no proof) with the project's equivalence: a sentence that states one of them, or a number equal to one that
the problem does not itself contain, is a leak. A leaking hint is written again once; what still leaks is cut
sentence by sentence, and when nothing is left the rung's own plain words are given instead.
"""

import re
from collections.abc import Callable

from trainer.answers import extract_answer, is_equivalent
from tutor.steps import plain_math
from tutor.verify import values_of

RUNGS = [
    ("the idea", "Name the one idea or method that solves it (for example: undo the operations, factor, set up a "
                 "proportion). Do not compute anything."),
    ("the setup", "Show how to set the problem up: name the unknown and write the equation or the expression to "
                  "compute, without working it out."),
    ("the next step", "Show only the next step the student should take from the setup, and stop before the result."),
    ("a similar problem", "Make up a similar problem with different numbers and work one step of it as an example. "
                          "Do not solve the original problem."),
]
FALLBACKS = [
    "Ask yourself what the question wants, and which operation or method links what you know to it.",
    "Give the unknown a name, and write one equation or expression that uses every number the problem gives.",
    "Do one operation to both sides (or one calculation) that brings you closer to the unknown, and check it.",
    "Try the same method on a smaller version of the problem with easy numbers first, then come back.",
]
HINT_PROMPT = ("You are a math tutor giving one short hint (at most three sentences). Never state the final answer, "
               "never compute the final result, never write \\boxed{{}}. This hint: {task}")
Generate = Callable[[list[dict]], str]  # chat messages -> the model's reply

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER_RE = re.compile(r"-?\d*\.?\d+(?:/\d+)?")


def hint_messages(problem: str, rung: int, earlier: list[str]) -> list[dict]:
    task = RUNGS[rung][1]
    given = "".join(f"\nHint {i + 1} already given: {hint}" for i, hint in enumerate(earlier))
    return [{"role": "system", "content": HINT_PROMPT.format(task=task)},
            {"role": "user", "content": f"Problem: {problem}{given}\n\nWrite hint {rung + 1} ({RUNGS[rung][0]})."}]


def leaks(text: str, hidden: list[str], problem: str) -> bool:
    """Whether text states one of the hidden answers: as its final answer, or as a number the problem lacks."""
    stated = extract_answer(text, strict=True)
    if stated and any(is_equivalent(stated, answer) for answer in hidden):
        return True
    given = set(_NUMBER_RE.findall(plain_math(problem)))
    shown = {n for n in _NUMBER_RE.findall(plain_math(text)) if n not in given}
    values = [values_of(answer) for answer in hidden]
    return any(v and values_of(n) and values_of(n) <= v for v in values for n in shown)


def cut_leaks(text: str, hidden: list[str], problem: str) -> str:
    """text without the sentences that leak."""
    kept = [s for s in _SENTENCE_RE.split(text.strip()) if s.strip() and not leaks(s, hidden, problem)]
    return " ".join(kept)


def next_hint(problem: str, rung: int, earlier: list[str], hidden: list[str], generate: Generate) -> tuple[str, str]:
    """(the hint for this rung, a note when it was rewritten, cut or replaced; "" otherwise)."""
    rung = min(rung, len(RUNGS) - 1)
    hidden = [answer for answer in hidden if answer]
    messages = hint_messages(problem, rung, earlier)
    hint = generate(messages).strip()
    if hidden and leaks(hint, hidden, problem):
        hint = generate(messages).strip()
        if leaks(hint, hidden, problem):
            cut = cut_leaks(hint, hidden, problem)
            if cut:
                return cut, "(part of this hint gave the answer away and was cut)"
            return FALLBACKS[rung], "(the model's hints gave the answer away; this one is the ladder's own)"
        return hint, "(the first hint gave the answer away and was written again)"
    return hint or FALLBACKS[rung], "" if hint else "(the model wrote nothing; this hint is the ladder's own)"


HINT_TOKENS = 64  # about three short sentences


def model_generate(choice: str, max_new_tokens: int = HINT_TOKENS, temperature: float = 0.7) -> Generate:
    """A Generate that samples one reply from the chat model `choice`."""
    from tutor.chat import ChatSettings, complete_reply
    from tutor.render import split_reasoning

    def generate(messages: list[dict]) -> str:
        settings = ChatSettings(temperature=temperature, max_new_tokens=max_new_tokens,
                                system_prompt=messages[0]["content"])
        return split_reasoning(complete_reply(choice, messages[1:], settings))[1]

    return generate
