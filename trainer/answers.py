"""Find the final answer in a model reply and decide whether two answers are the same.

`extract_answer` reads the answer out of a reply (\\boxed{}, `#### n`, "The answer is ...", ...).
`is_equivalent` compares two answers: plain numbers (commas, units, dollar signs, percents, fractions) are
compared here exactly; anything else goes to math-verify, which runs in a worker process so that a comparison
that hangs in sympy can be killed after `timeout_s`. That works from any thread (math-verify's own timeout uses
signal.alarm, which only works in the main thread, so it is turned off with `parsing_timeout=None` and
`timeout_seconds=None`). `python -m trainer.answers` is that worker: one JSON request per line on stdin.
"""

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

# ---------------------------------------------------------------- extraction

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES_RE = re.compile(r"^[ \t]*####\s*(?P<a>.+?)\s*$", re.M)  # [ \t]: `^\s*` rescans every run of blank lines
_ANSWER_IS_RE = re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\s*:?\s*(?P<a>[^\n]+)", re.I)
_FINAL_ANSWER_RE = re.compile(r"\bfinal\s+answer\s*\**\s*[:=]\s*\**\s*(?P<a>[^\n]+)", re.I)
_THEREFORE_RE = re.compile(r"\b(?:therefore|thus|hence)\b[,:]?\s*(?P<a>[^\n]+)", re.I)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|[!?;](?=\s|$)")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
STUDENT_CHECK_S = 2.0  # an answer sympy cannot compare in 2 s holds one checker no longer (0.06 s is usual)
MAX_STUDENT_ANSWER = 1000  # characters: an answer, not an essay (sympy is not given pages to parse)


def brace_pairs(text: str) -> dict[int, int]:
    """Index of every closed, unescaped `{` -> index of its `}` (nesting counted, `\\{` skipped), in one pass."""
    pairs, opened, i = {}, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            opened.append(i)
        elif char == "}" and opened:
            pairs[opened.pop()] = i
        i += 1
    return pairs


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}) in text, nested braces included."""
    pairs = brace_pairs(text)  # one pass: scanning on from each box would rescan an unclosed rest each time
    for match in reversed(list(_BOXED_RE.finditer(text))):
        close = pairs.get(match.end() - 1)
        if close is not None:
            return text[match.end():close].strip()
    return None


def _first_sentence(text: str) -> str:
    end = _SENTENCE_END_RE.search(text)
    return text[: end.start()] if end else text


def _clean(answer: str) -> str:
    """Strip spaces, bold stars, trailing punctuation and delimiters that wrap the whole answer ($x$, \\(x\\))."""
    answer = answer.strip(" \t\n*").rstrip(".,;:!").strip(" \t\n*")
    for left, right in _WRAPPERS:
        inner = answer[len(left): -len(right)]
        escaped_dollars_removed = inner.replace("\\$", "")
        if answer.startswith(left) and answer.endswith(right) and inner.strip() and left not in escaped_dollars_removed:
            return inner.strip().rstrip(".,;").strip()
    return answer


def _conclusion(sentence: str) -> str:
    """The answer inside a "Therefore ..." sentence: after the last `=`, else after " is ", else its last number."""
    if "=" in sentence:
        return sentence.rsplit("=", 1)[1]
    for verb in (" is ", " are ", " equals "):
        if verb in sentence:
            return sentence.rsplit(verb, 1)[1]
    numbers = _NUMBER_RE.findall(sentence)
    return numbers[-1] if numbers else sentence


def extract_answer(text: str, strict: bool = False) -> str | None:
    """The final answer in a reply, or None.

    Tried in order: the last \\boxed{...}, the last `#### n`, "The answer is ...", "Final answer: ...", and
    unless strict, a "Therefore/Thus/Hence ..." sentence and then the last number in the text.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for pattern in (_HASHES_RE, _ANSWER_IS_RE, _FINAL_ANSWER_RE):
        matches = list(pattern.finditer(text))
        if matches:
            answer = _clean(_first_sentence(matches[-1]["a"]))
            if answer:
                return answer
    if strict:
        return None
    matches = list(_THEREFORE_RE.finditer(text))
    if matches:
        answer = _clean(_conclusion(_first_sentence(matches[-1]["a"])))
        if answer:
            return answer
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


# ---------------------------------------------------------------- equivalence: plain numbers

_TEXT_COMMAND_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,;: ]|~|\\left|\\right|\\displaystyle")
_DEGREES_RE = re.compile(r"\^\s*\{?\\circ\}?|°|\\degree")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SIMPLE_FRACTION_RE = re.compile(r"^([-+]?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$|^([-+]?)(\d+)\s*/\s*(\d+)$")
_NUMBER_WITH_UNIT_RE = re.compile(
    r"^(?P<sign>[-+]?)\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<pct>\\?%)?"
    r"(?:(?:\s+|(?=[A-Za-z]{2}))(?P<unit>[A-Za-z][A-Za-z\s./^0-9²³]*))?$"
)
_NOT_UNITS = {"pi", "sqrt", "ln", "log", "sin", "cos", "tan"}
_WORD_NOTE_RE = re.compile(r"\s*\([A-Za-z][A-Za-z\s.]*\)\s*$")  # `9 (apples)`: a note in words after a number


def _plain(answer: str) -> str:
    """An answer with its wrapping, \\text{}, spacing commands and degree signs removed."""
    answer = _clean(answer.replace("\u2212", "-"))
    boxed = last_boxed(answer)
    if boxed is not None and answer.startswith(("\\boxed", "\\fbox")):
        answer = boxed
    answer = _TEXT_COMMAND_RE.sub(r" \1", answer)
    answer = _SPACING_RE.sub(" ", answer.replace("\\!", ""))  # MATH writes 32,\!348
    answer = _DEGREES_RE.sub("", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _clean(answer)


def _as_number(answer: str) -> tuple[Fraction, bool] | None:
    """(value, was a percent) for answers like `1,000`, `$18.00`, `5 cm`, `50\\%`, `\\frac{3}{4}`, `-7/2`."""
    text = _THOUSANDS_RE.sub("", answer.replace("\\$", "").replace("$", "")).strip()
    text = _WORD_NOTE_RE.sub("", text)
    fraction = _SIMPLE_FRACTION_RE.match(text)
    if fraction:
        sign, numerator, denominator = fraction.group(1, 2, 3) if fraction[2] else fraction.group(4, 5, 6)
        if int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        return (-value if sign == "-" else value), False
    match = _NUMBER_WITH_UNIT_RE.match(text)
    if not match:
        return None
    unit_word = match["unit"].split()[0].lower() if match["unit"] else ""
    if unit_word and (len(unit_word) < 2 or unit_word in _NOT_UNITS):
        return None  # `5 x`, `2 pi`, `3 sqrt 2` are expressions, not numbers with units
    value = Fraction(match["num"])
    return (-value if match["sign"] == "-" else value), bool(match["pct"])


def _numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    """Exact equality; a percent also matches its fraction (50% is 50 and 0.5)."""
    (x, x_percent), (y, y_percent) = a, b
    return x == y or (x_percent and x / 100 == y) or (y_percent and y / 100 == x)


# ---------------------------------------------------------------- equivalence: math-verify in a worker process

_VERIFIER_COMMAND = [sys.executable, "-m", "trainer.answers"]
_VERIFIER_START_S = 120.0  # importing sympy and math-verify in a fresh process, on a slow machine
VERIFIERS = int(os.environ.get("MATH_STUDIO_VERIFIERS", "3"))  # checks at once, each in its own process
_idle: list[subprocess.Popen] = []  # started and waiting for a check
_alive: set[subprocess.Popen] = set()  # idle or checking
_starting = 0  # being started
_pool = threading.Condition()
# Values sympy would compute or expand in full before comparing: a tower of powers of numbers (9^{9^9}), an exponent
# of four digits or more (x^{1000}), the factorial of a number of four digits or more. One 9^{9^{9^{9}}} held the one
# shared checker for 5.3 s.
_TOO_LARGE_RE = re.compile(r"\d\s*(?:\^|\*\*)\s*[{(]?\s*[+-]?\d+(?:\.\d+)?\s*[})]?\s*(?:\^|\*\*)"
                           r"|(?:\^|\*\*)\s*[{(]?\s*[+-]?\d{4,}|\d{4,}\s*!")


def _as_latex(answer: str) -> str:
    """math-verify finds LaTeX inside delimiters: wrap a bare answer like `\\sqrt{2}/2` or `[1, 3)` in $...$."""
    if any(mark in answer for mark in ("$", "\\(", "\\[", "\\boxed")):
        return answer
    return f"${answer}$"


def math_verify_equal(predicted: str, gold: str, whole_reply: bool = False) -> bool:
    """math-verify's judgement, without its signal-based timeout: call it through is_equivalent (or, for a whole
    reply that math-verify searches for its answer as lighteval scores GSM8K and MATH-500, reply_is_correct)."""
    from math_verify import parse, verify

    gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
    predicted_parsed = parse(predicted if whole_reply else _as_latex(predicted), parsing_timeout=None)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))


def _read_line(process: subprocess.Popen, timeout_s: float) -> str | None:
    """One line from the worker, or None when none came within timeout_s."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline() if ready else None


def _start_verifier() -> subprocess.Popen:
    from trainer.jobs import worker_env

    process = subprocess.Popen(
        _VERIFIER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        cwd=Path(__file__).resolve().parents[1], env=worker_env(),
    )
    if _read_line(process, _VERIFIER_START_S) != "ready\n":
        process.kill()
        process.wait()
        raise RuntimeError(f"The answer verifier process ({' '.join(_VERIFIER_COMMAND)}) did not start.")
    return process


def _take_verifier() -> subprocess.Popen:
    """An idle worker process, a new one while fewer than VERIFIERS run, else the first to become idle."""
    global _starting
    with _pool:
        while True:
            while _idle:
                process = _idle.pop()
                if process.poll() is None:
                    return process
                _alive.discard(process)
            if len(_alive) + _starting < VERIFIERS:
                _starting += 1
                break
            _pool.wait()
    try:
        process = _start_verifier()
        with _pool:
            _alive.add(process)
        return process
    finally:
        with _pool:
            _starting -= 1
            _pool.notify()


def _give_back(process: subprocess.Popen, healthy: bool) -> None:
    global _starting
    with _pool:
        if healthy:
            _idle.append(process)
        else:
            process.kill()
            process.wait()
            _alive.discard(process)
            _starting += 1  # its replacement, started now rather than in the next student's time
            threading.Thread(target=_replace, daemon=True, name="verifier-start").start()
        _pool.notify()


def _replace() -> None:
    global _starting
    try:
        process = _start_verifier()
        with _pool:
            _alive.add(process)
            _idle.append(process)
    finally:
        with _pool:
            _starting -= 1
            _pool.notify()


def verifiers_alive() -> int:
    """Worker processes started and not stopped (idle or checking)."""
    return len(_alive)


def stop_verifier() -> None:
    """Kill the idle worker processes (new ones start on the next symbolic comparisons)."""
    with _pool:
        for process in _idle:
            process.kill()
            process.wait()
            _alive.discard(process)
        _idle.clear()


atexit.register(stop_verifier)


def _verify_with_deadline(predicted: str, gold: str, timeout_s: float, whole_reply: bool = False) -> bool:
    """math_verify_equal in one of the worker processes; False, and that worker killed (the others go on), when it
    takes over timeout_s."""
    process = _take_verifier()
    healthy = False
    try:
        process.stdin.write(json.dumps([predicted, gold, whole_reply]) + "\n")
        process.stdin.flush()
        line = _read_line(process, timeout_s)
        if line is None:
            return False
        if not line:
            raise RuntimeError("The answer verifier process exited unexpectedly; see its error output above.")
        healthy = True
        return json.loads(line)
    finally:
        _give_back(process, healthy)


def reply_is_correct(reply: str, gold: str, timeout_s: float = 5.0) -> bool:
    """math-verify's own scoring of a whole reply against the gold answer (lighteval's GSM8K and MATH-500 metric):
    it finds the answer itself, so it is a second scorer beside extract_answer + is_equivalent."""
    if not reply or not gold or too_large(gold) or len(reply) > 20_000:
        return False
    return _verify_with_deadline(reply, gold, timeout_s, whole_reply=True)


def too_large(answer: str) -> bool:
    """An answer whose value sympy would compute in full, for seconds or for ever (see _TOO_LARGE_RE)."""
    return bool(_TOO_LARGE_RE.search(answer))


def is_equivalent(predicted: str | None, gold: str | None, timeout_s: float = 5.0) -> bool:
    """Whether predicted means the same answer as gold. Safe to call from any thread; at most ~timeout_s."""
    if not predicted or not gold:
        return False
    predicted_plain, gold_plain = _plain(predicted), _plain(gold)
    if not predicted_plain or not gold_plain:
        return False
    if predicted_plain.replace(" ", "") == gold_plain.replace(" ", ""):
        return True
    predicted_number, gold_number = _as_number(predicted_plain), _as_number(gold_plain)
    if predicted_number is not None and gold_number is not None:
        return _numbers_equal(predicted_number, gold_number)
    if too_large(predicted_plain) or too_large(gold_plain):
        return False
    return _verify_with_deadline(predicted_plain, gold_plain, timeout_s)


# ---------------------------------------------------------------- the chat's "check my answer"

def _gold_answer(gold_or_reply: str) -> str | None:
    """The answer to compare with: stated in a reply, else the text itself when short, else the reply's last number."""
    text = gold_or_reply.strip()
    marked = extract_answer(text, strict=True)
    if marked:
        return marked
    if "\n" not in text and len(text.split()) <= 6:
        return text or None
    return extract_answer(text)


def answer_refusal(student: str) -> str | None:
    """Why a student's answer is not checked at all (empty, too long), or None."""
    student = (student or "").strip()
    if not student:
        return "Type your answer first."
    if len(student) > MAX_STUDENT_ANSWER:
        return f"That is too long for an answer ({len(student):,} characters): type just the final answer."
    return None


def check_student_answer(student: str, gold_or_reply: str) -> tuple[bool, str]:
    """(correct, a short message for the student). gold_or_reply is an answer or a whole reply that contains one."""
    refusal = answer_refusal(student)
    if refusal:
        return False, refusal
    student = student.strip()
    gold = _gold_answer(gold_or_reply or "")
    if gold is None:
        return False, "There is no final answer to compare with yet."
    answer = extract_answer(student, strict=True) or student
    if too_large(answer):
        return False, ("That answer is too large to check (a tower of powers, or a huge exponent or factorial): "
                       "simplify it first.")
    if is_equivalent(answer, gold, timeout_s=STUDENT_CHECK_S):
        return True, "Correct! Well done."
    return False, "Not correct yet. Check your steps and try again."


def _serve() -> None:
    """The worker: read `[predicted, gold, whole_reply]` JSON lines on stdin, answer `true`/`false` lines on stdout."""
    import logging

    import math_verify  # noqa: F401  (imported before "ready", so the first deadline is not spent importing)

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning: we time it here
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(math_verify_equal(*json.loads(line))), flush=True)


if __name__ == "__main__":
    _serve()
