"""Find the first wrong step of a worked solution: arithmetic and algebra checked exactly, the rest left to a judge.

A step is a non-empty line. In each step, `check_steps` reads:
- GSM8K's calculator notes `<<48/2=24>>`: the expression must equal the result;
- chains `a = b = c` (`48/2 = 24`, `100 - 50 - 30 - 15 = $5`): each side must equal the next, exactly (a decimal
  written with d places may be off by up to 10^-d, for rounding);
- equations in one unknown (`3x + 7 = 22 -> x = 5`, `x = 2 or x = 3`): the first equation in an unknown, from the
  problem or else from the solution, fixes its real roots; every later equation in it must hold at each of them
  (roots substituted back), so a step that loses a root or changes one is wrong;
- the numbers a calculation starts from: each must be in the problem (digits or words like "twice", "dozen"), in
  an earlier step, in the words of the same step, or a common constant (60 minutes, 100 percent, ...); a number
  from nowhere is a copied-wrong number or the result of a step that is missing.
Expressions are parsed with Python's `ast` into exact sympy numbers (no eval), with bounds that make a long or
explosive expression (`9^9^9`) "not checked" at once instead of slow. Steps with nothing checkable are left to
`judge`, a function that may ask a model (see `model_judge`); it is only consulted before the first step found
wrong symbolically, and its verdict is labelled as the model's.
"""

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import sympy

MAX_SIDE = 160  # characters in one side of an equation
MAX_POWERS = 3  # `^` in one side
MAX_EXPONENT = 64
MAX_DIGITS = 40  # in one number
MAX_DEGREE = 6  # of an equation whose roots are found
MAX_STEPS = 80
MAX_SOLUTION_CHARS = 20_000
COMMON_NUMBERS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 24, 25, 30, 31, 36, 50, 52, 60, 100, 128, 365, 1000, 1440,
                  3600, 5280}  # and units: 16 ounces a pound, 128 a gallon, 5280 feet a mile, 1440 minutes a day
WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1_000_000,
    "half": 2, "twice": 2, "double": 2, "triple": 3, "thrice": 3, "quarter": 4, "third": 3, "fourth": 4,
    "fifth": 5, "dozen": 12, "week": 7, "weeks": 7, "year": 12, "hour": 60, "day": 24, "pair": 2, "score": 20,
}

_NOTE_RE = re.compile(r"<<([^<>=\n]*)=([^<>\n]*)>>")
_LIST_MARK_RE = re.compile(r"^\s*(?:(?:step\s*)?\d+\s*[.):]\s+|[-*•]\s+)", re.I)
_ANSWER_LINE_RE = re.compile(r"^\s*####")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_RE = [(re.compile(p), r) for p, r in [
    (r"\\text\s*\{([^{}]*)\}", r" \1 "), (r"\\sqrt", "√"), (r"\\(?:cdot|times)", "*"), (r"\\div", "/"),
    (r"\\(?:left|right|displaystyle|,|;|!|quad)", " "), (r"\\implies|\\Rightarrow|\\to|->|→|=>|⇒|⟹", " ; "),
    (r"\\[()\[\]]|\$", " "), (r"\\neq|≠|≈|\\approx|<|>|≤|≥|\\[lg]eq?", " ; "),
]]
# A run of math: numbers (with a percent sign), single letters, operators, brackets, `=` and spaces.
_RUN_RE = re.compile(r"(?:\d*\.?\d+(?:\s*%)?|√|(?<![A-Za-z])[A-Za-z](?![A-Za-z])|[-+*/^()={}×÷·−]|[ \t])+")
_TIMES_X_RE = re.compile(r"(?<=[\d)])\s+[x×]\s+(?=[\d(.])|(?<=\d)[x×](?=\d)")  # `5 x 3`, `2x3`: times (`3x(1/3)`: x)
_IMPLICIT_RE = re.compile(r"(?<=[\d)])\s*(?=[A-Za-z(√])|(?<=[A-Za-z])(?=\()")
_PERCENT_RE = re.compile(r"(\d*\.?\d+)\s*%")
_ROOT_RE = re.compile(r"√\s*(\d*\.?\d+)")
_NUMBER_RE = re.compile(r"\d*\.?\d+")
_WORD_RE = re.compile(r"[A-Za-z]+")
_CUT_AFTER_RE = re.compile(r"[A-Za-z]+\s*[-+*/×÷^]")
_CUT_BEFORE_RE = re.compile(r"\s*[-+*/×÷^]\s")
_OF_BEFORE_RE = re.compile(r"\b(?:of|by|per|times)\s*$", re.I)
_WORD_BEFORE_RE = re.compile(r"[A-Za-z]{2,}\s*$")
_BARE_NUMBER_RE = re.compile(r"[-+]?\s*\$?\s*\d*\.?\d+%?")
_PERCENT_END_RE = re.compile(r"%[\s.]*$")
_OPERATOR_RE = re.compile(r"[-+*/^×÷]|\d\s*\(|\)\s*\(")
_DISJUNCTION_RE = re.compile(r"^\s*([A-Za-z])\s*$")


class Unchecked(ValueError):
    """This text is not an expression the checker reads, or it would cost too much."""


@dataclass
class StepCheck:
    status: str  # "right": something in it was checked and held; "wrong"; "unchecked": nothing to check
    why: str = ""


@dataclass
class Mistake:
    step: int | None  # 1-based, counting non-empty lines; None: no wrong step found
    explanation: str

    def as_json(self) -> dict:
        return {"first_wrong_step": self.step, "explanation": self.explanation}


Judge = Callable[[str, list[str], str], tuple[bool, str]]  # (problem, earlier steps, step) -> (wrong, why)


# ---------------------------------------------------------------- text to exact expressions

def split_steps(solution: str) -> list[str]:
    return [line.strip() for line in (solution or "").splitlines() if line.strip()]


def plain_math(text: str) -> str:
    """Step text with LaTeX, dollar signs, thousands commas and arrows turned into what _RUN_RE reads."""
    text = _THOUSANDS_RE.sub("", text.replace("\u2212", "-").replace("\\$", "$"))
    while (frac := _FRAC_RE.search(text)) is not None:
        text = text[:frac.start()] + f"(({frac[1]})/({frac[2]}))" + text[frac.end():]
    for pattern, replacement in _LATEX_RE:
        text = pattern.sub(replacement, text)
    return text


def _strip_unbalanced(side: str) -> str:
    side = side.strip().rstrip(".")
    while side.startswith("(") and side.count("(") > side.count(")"):
        side = side[1:].strip()
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1].strip()
    return side


def to_sympy(side: str) -> sympy.Expr:
    """An arithmetic or algebraic expression as an exact sympy expression, or Unchecked."""
    side = _strip_unbalanced(side)
    if not side or len(side) > MAX_SIDE or side.count("^") > MAX_POWERS:
        raise Unchecked(side)
    text = _TIMES_X_RE.sub("*", side).replace("×", "*").replace("·", "*").replace("÷", "/")
    text = _PERCENT_RE.sub(r"(\1/100)", text).replace("{", "(").replace("}", ")").replace("^", "**")
    text = _IMPLICIT_RE.sub("*", _ROOT_RE.sub(r"√(\1)", text)).replace("√", "sqrt")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise Unchecked(side) from None
    value = _convert(tree.body)
    if value.has(sympy.zoo, sympy.nan, sympy.oo):
        raise Unchecked(side)
    return value


_OPERATIONS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
               ast.Div: lambda a, b: a / b}


def _convert(node: ast.AST) -> sympy.Expr:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        digits = str(node.value)
        if len(digits) > MAX_DIGITS or "e" in digits:
            raise Unchecked(digits)
        return sympy.Rational(digits)
    if isinstance(node, ast.Name) and len(node.id) == 1:
        return sympy.Symbol(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _convert(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS:
        return _OPERATIONS[type(node.op)](_convert(node.left), _convert(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = _convert(node.right)
        if not exponent.is_Rational or abs(exponent) > MAX_EXPONENT or (not exponent.is_Integer and exponent.q > 3):
            raise Unchecked("exponent")
        return _convert(node.left) ** exponent
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "sqrt" and len(node.args) == 1:
        return sympy.sqrt(_convert(node.args[0]))
    raise Unchecked(type(node).__name__)


def _is_bare_number(side: str) -> bool:
    return _BARE_NUMBER_RE.fullmatch(_strip_unbalanced(side)) is not None


def _decimals(side: str) -> int | None:
    """Places after the point when a side is one decimal number (`3.33`), else None."""
    match = re.fullmatch(r"\s*-?\d*\.(\d+)\s*(%?)\s*", _strip_unbalanced(side).replace("$", ""))
    return len(match[1]) + 2 * bool(match[2]) if match else None


def _differs(left: sympy.Expr, right: sympy.Expr, left_text: str, right_text: str) -> bool:
    """Whether two numbers differ by more than the rounding of a side written as a decimal allows."""
    if _PERCENT_END_RE.search(right_text) and "%" not in left_text and left == right * 100:  # `100/4 = 25%`
        return False
    off = abs(left - right)
    places = [p for p in (_decimals(left_text), _decimals(right_text)) if p is not None]
    return off != 0 and (not places or off >= sympy.Rational(1, 10 ** max(places)))


def _show(value: sympy.Expr) -> str:
    return f"{value} ({float(value):.6g})" if value.is_Rational and not value.is_Integer else str(value)


# ---------------------------------------------------------------- equations in one unknown

def _real_roots(equation: sympy.Expr, unknown: sympy.Symbol) -> set[float] | None:
    """Real roots (to 9 places) of `equation = 0`; None when it is an identity or not a small polynomial."""
    numerator, denominator = sympy.fraction(sympy.together(equation))
    try:
        poly = sympy.Poly(sympy.expand(numerator), unknown)
    except sympy.PolynomialError:
        return None
    if poly.is_zero or poly.degree() > MAX_DEGREE or poly.free_symbols - {unknown}:
        return None
    roots = poly.nroots(n=15) if poly.degree() > 0 else []
    return {round(float(sympy.re(r)), 9) for r in roots
            if abs(sympy.im(r)) < 1e-9 and abs(denominator.subs(unknown, sympy.re(r)).evalf()) > 1e-12}


def _holds_at(equation: sympy.Expr, unknown: sympy.Symbol, root: float) -> bool:
    value = sympy.N(equation.subs(unknown, sympy.nsimplify(root, rational=True)), 15)
    return value.is_number and value.is_finite and abs(value) < 1e-6 * max(1.0, abs(root))


def _roots_text(unknown, roots: set[float]) -> str:
    shown = ", ".join(f"{unknown} = {r:g}" for r in sorted(roots))
    return shown or "no real solution"


# ---------------------------------------------------------------- one step

@dataclass
class _State:
    roots: dict  # unknown -> (its real roots, the equation that fixed them)
    sources: set  # numbers seen so far (problem, earlier steps, constants)
    given: bool = True  # whether the problem has numbers (else where a number comes from is not checked)


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER_RE.findall(_THOUSANDS_RE.sub("", text))}


def _problem_sources(problem: str) -> set[Fraction]:
    numbers = _numbers(problem) | {Fraction(n) for n in COMMON_NUMBERS}
    words = {Fraction(WORD_NUMBERS[w]) for w in _WORD_RE.findall(problem.lower()) if w in WORD_NUMBERS}
    numbers |= words | {a * b for a in words for b in words}  # "two weeks": 14
    fractions = {Fraction(p, q) for q in range(2, 13) for p in range(1, q)}  # half, a third, three quarters...
    fractions |= {Fraction(k, 4) for k in range(41)} | {Fraction(k, 3) for k in range(31)}  # 2.5 times, 1 1/3
    percents = {100 - n for n in numbers if 0 < n < 100} | {100 + n for n in numbers if 0 < n < 100}
    return numbers | fractions | {1 + f for f in fractions} | percents | {n / 100 for n in numbers | percents}


def _calculations(text: str) -> tuple[list[list[str]], list[tuple[str, str]], str]:
    """(chains `a = b = ...` in the text, calculator notes (expression, result), the words outside both)."""
    notes = [(m[1], m[2]) for m in _NOTE_RE.finditer(text)]
    text = plain_math(_NOTE_RE.sub(" ", text))
    chains, words = [], text
    for run in _RUN_RE.finditer(text):
        if "=" in run[0]:
            chain = run[0].split("=")
            if _CUT_AFTER_RE.match(text, run.end()):  # `6W / 6 = 30 feet / 6`: the last side goes on after a word
                chain = chain[:-1]
            if (_CUT_BEFORE_RE.match(chain[0]) and _WORD_BEFORE_RE.search(text, 0, run.start())  # `5 apples + 3 = 8`
                    or _is_bare_number(chain[0]) and _OF_BEFORE_RE.search(text, 0, run.start())):  # `10% of 150 = 15`
                chain = chain[1:]
            chains.append(chain)
            words = words.replace(run[0], " ", 1)
    return chains, notes, words


def _check_numbers(sides: list[str], state: _State, here: set[Fraction]) -> str | None:
    """Why a calculation starts from a number found nowhere before (nor `here`, in this step), or None."""
    known = state.sources | here
    for side in sides:
        for number in sorted(_numbers(side.replace("$", "")) - known):
            return (f"{number} is not in the problem and no earlier step found it: a number copied wrong, or the "
                    f"result of a step that is missing")
    return None


def check_step(step: str, state: _State) -> StepCheck:
    """Check one step against what came before; `state` learns its equations and numbers."""
    step = _LIST_MARK_RE.sub("", step)
    if _ANSWER_LINE_RE.match(step):
        return StepCheck("unchecked")
    chains, notes, words = _calculations(step)
    checked, starts, results = 0, [], set()  # results: what this step computes, which it may go on from
    for expression, result in notes:
        try:
            left, right = to_sympy(expression), to_sympy(result)
        except Unchecked:
            continue
        if left.free_symbols or right.free_symbols:
            continue
        checked += 1
        if _differs(left, right, expression, result):
            return StepCheck("wrong", f"{expression.strip()} = {_show(left)}, not {result.strip()}.")
        if not _is_bare_number(expression):  # `<<55=55>>` calculates nothing
            starts.append(expression)
        results |= _numbers(result)
    equations: dict = {}  # unknown -> [(equation, is `unknown = number`)]
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            try:
                left, right = to_sympy(a), to_sympy(b)
            except Unchecked:
                continue
            unknowns = left.free_symbols | right.free_symbols
            if not unknowns:
                if _is_bare_number(a) and _is_bare_number(b):  # `1 hour = 60 minutes`, `of 60 = 45`: not a sum
                    continue
                checked += 1
                if _differs(left, right, a, b):
                    return StepCheck("wrong", f"{_strip_unbalanced(a)} = {_show(left)}, not {_strip_unbalanced(b)}.")
                starts.append(b if _is_bare_number(a) else a)
                results |= _numbers(b)
            elif len(unknowns) == 1:
                (unknown,) = unknowns
                is_value = bool(_DISJUNCTION_RE.match(_strip_unbalanced(a))) and not right.free_symbols  # `x = 2`
                equations.setdefault(unknown, []).append((left - right, is_value, f"{a.strip()} = {b.strip()}"))
    for unknown, found in equations.items():
        verdict = _check_equations(unknown, found, state)
        checked += verdict is not None
        if verdict:
            return StepCheck("wrong", verdict)
    if starts and state.given:
        reason = _check_numbers(starts, state, _numbers(words) | results)
        if reason:
            return StepCheck("wrong", reason)
    state.sources |= _numbers(plain_math(step))
    return StepCheck("right" if checked else "unchecked")


def _check_equations(unknown, found: list, state: _State) -> str | bool | None:
    """Why this step's equations in `unknown` are wrong; False when they hold; None when nothing was checked."""
    if all(is_value for _, is_value, _ in found) and len(found) > 1:  # `x = 2 or x = 3`: one set of roots
        found = [(sympy.Mul(*[e for e, _, _ in found]), True, " or ".join(text for _, _, text in found))]
    verdict = None
    for equation, _, text in found:
        if unknown not in state.roots:
            roots = _real_roots(equation, unknown)
            if roots is not None:
                state.roots[unknown] = (roots, text)
            continue
        roots, origin = state.roots[unknown]
        for root in sorted(roots):
            if not _holds_at(equation, unknown, root):
                own = _real_roots(equation, unknown)
                gives = "" if own is None else f"; it gives {_roots_text(unknown, own)}"
                solutions = "solutions are" if len(roots) > 1 else "solution is"
                return (f"{text} does not follow from {origin}, whose {solutions} {_roots_text(unknown, roots)}"
                        f" ({unknown} = {root:g} does not satisfy it{gives}).")
        verdict = False
    return verdict


# ---------------------------------------------------------------- the whole solution

def new_state(problem: str) -> _State:
    """What the checker knows before the first step: the problem's numbers and its equations' roots."""
    state = _State(roots={}, sources=_problem_sources(problem or ""), given=bool(_numbers(problem or "")))
    chains, _, _ = _calculations(problem or "")
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            try:
                equation = to_sympy(a) - to_sympy(b)
            except Unchecked:
                continue
            if len(equation.free_symbols) == 1:
                (unknown,) = equation.free_symbols
                roots = _real_roots(equation, unknown)
                if roots is not None and unknown not in state.roots:
                    state.roots[unknown] = (roots, f"{a.strip()} = {b.strip()} (the problem)")
    return state


def equation_roots(problem: str) -> dict[str, tuple[set[float], str]]:
    """unknown -> (the real roots, the equation) for each equation in one unknown that the problem states."""
    return {str(unknown): found for unknown, found in new_state(problem).roots.items()}


def expressions(text: str) -> list[str]:
    """The arithmetic in text that is not an equation (`12*7+5` in "What is 12*7+5?"), as written."""
    runs = (run[0].strip() for run in _RUN_RE.finditer(plain_math(_NOTE_RE.sub(" ", text))))
    return [run for run in runs if "=" not in run and _NUMBER_RE.search(run) and _OPERATOR_RE.search(run.lstrip("-"))]


def check_steps(problem: str, steps: list[str]) -> list[StepCheck]:
    """One StepCheck per step, up to and including the first wrong one."""
    state, checks = new_state(problem), []
    for step in steps:
        checks.append(check_step(step, state))
        if checks[-1].status == "wrong":
            break
    return checks


def find_mistake(problem: str, solution: str, judge: Judge | None = None) -> Mistake:
    """The first wrong step and why: exact checks first; `judge` (a model) only for the steps they cannot check."""
    if len(solution or "") > MAX_SOLUTION_CHARS:
        raise ValueError(f"The solution has {len(solution):,} characters; at most {MAX_SOLUTION_CHARS:,} are checked.")
    steps = split_steps(solution)
    if not steps:
        raise ValueError("Paste a worked solution, one step per line.")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"The solution has {len(steps)} steps; at most {MAX_STEPS} are checked.")
    checks = check_steps(problem, steps)
    if judge is not None:
        for number, (step, check) in enumerate(zip(steps, checks), start=1):
            if check.status != "unchecked" or _ANSWER_LINE_RE.match(step):
                continue
            wrong, why = judge(problem, steps[:number - 1], step)
            if wrong:
                return Mistake(number, f"Step {number} (judged by the model, not checked exactly): {why}")
    if checks[-1].status == "wrong":
        return Mistake(len(checks), f"Step {len(checks)}: {checks[-1].why}")
    exact = sum(c.status == "right" for c in checks)
    rest = ("" if exact == len(steps) else "; the model found no mistake in the others" if judge
            else "; the others have no arithmetic or equation to check")
    return Mistake(None, f"No wrong step found: {exact} of {len(steps)} steps were checked exactly and hold{rest}.")


# ---------------------------------------------------------------- the model as judge of the other steps

JUDGE_PROMPT = ("You check one step of a student's solution. Reply with one word, CORRECT or WRONG, then at most one "
                "sentence saying why.")


def model_judge(choice: str, max_new_tokens: int = 32) -> Judge:
    """A Judge that asks the chat model `choice` (greedy) whether a step is right."""
    from tutor.chat import ChatSettings, complete_reply

    settings = ChatSettings(temperature=0, max_new_tokens=max_new_tokens, system_prompt=JUDGE_PROMPT)

    def judge(problem: str, earlier: list[str], step: str) -> tuple[bool, str]:
        shown = "\n".join(earlier) or "(none)"
        question = f"Problem: {problem}\n\nSteps so far:\n{shown}\n\nStep to check: {step}\n\nCORRECT or WRONG?"
        verdict = complete_reply(choice, [{"role": "user", "content": question}], settings).strip()
        return verdict.upper().startswith(("WRONG", "INCORRECT")), verdict

    return judge
