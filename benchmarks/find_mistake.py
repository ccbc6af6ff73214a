"""First-wrong-step accuracy of tutor/steps.py on GSM8K train solutions with one planted error each.

    python benchmarks/find_mistake.py --per-kind 300 --out benchmarks/results/find_mistake-cpu.json

GSM8K solutions compute in calculator notes (`48/2 = <<48/2=24>>24`). From problems drawn at random (`--seed`),
each kind of error is planted in one calculation line k:
- arithmetic: the result of line k is changed (24 -> 26, or a digit changed, or x10);
- operation: one operator of line k is swapped (+ and -, * and /) and its result recomputed: line k is consistent
  arithmetic with the wrong operation;
- number: one operand of line k that the problem gives is replaced by a number the problem does not give, and
  the result recomputed;
- dropped: line k is removed; the first wrong step is then the first later line that uses its result (results
  also found in the problem or earlier lines are not planted).
The changed result is carried into the later lines (their notes recomputed), as a student would carry it: only
line k is wrong. Solutions the checker already flags unchanged are left out (their count is reported: GSM8K has a
few genuine errors), so each planted solution has one error. A planted solution counts as found when
`find_mistake` returns exactly the expected step (1-based, non-empty lines). `--judge MODEL` adds the model's
verdict on the steps the exact checks cannot read (slow on a CPU; `--limit` a few per kind).
"""

import argparse
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tutor.steps import Unchecked, check_steps, find_mistake, model_judge, split_steps, to_sympy  # noqa: E402

NOTE_RE = re.compile(r"<<([^<>=\n]*)=([^<>\n]*)>>")
TOKEN_RE = r"(?<![\d.]){}(?![\d]|\.\d)"
OPERATOR_RE = re.compile(r"[-+*/]")
SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*"}
KINDS = ("arithmetic", "operation", "number", "dropped")


def number_text(value) -> str | None:
    """A sympy number as GSM8K writes it (`24`, `0.2`, `12.5`), or None when it has no short decimal."""
    if value.is_Integer:
        return str(int(value))
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text if abs(float(text) - float(value)) < 1e-9 and len(text.split(".")[-1]) <= 2 else None


def evaluate(expression: str):
    try:
        value = to_sympy(expression)
    except Unchecked:
        return None
    return value if value.is_Number else None


def with_result(line: str, note: re.Match, expression: str, result: str) -> str:
    """The line with this note's expression and result replaced, and the result shown after the note too."""
    after = line[note.end():]
    shown = re.match(r"\s*-?\d*\.?\d+", after)
    after = result + after[shown.end():] if shown else after
    return line[:note.start()] + f"<<{expression}={result}>>" + after


def carry(lines: list[str], start: int, old: str, new: str) -> list[str]:
    """Lines after `start` with the number `old` replaced by `new`, their notes recomputed and carried on."""
    lines = list(lines)
    changes = [(old, new)]
    for i in range(start + 1, len(lines)):
        for before, after in changes:
            lines[i] = re.sub(TOKEN_RE.format(re.escape(before)), after, lines[i])
        note = NOTE_RE.search(lines[i])
        if note is None:
            continue
        value = evaluate(note[1])
        result = number_text(value) if value is not None else None
        if result is not None and result != note[2].strip():
            changes.append((note[2].strip(), result))
            lines[i] = with_result(lines[i], note, note[1], result)
    return lines


def calculation_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if (note := NOTE_RE.search(line)) and OPERATOR_RE.search(note[1])
            and evaluate(note[1]) is not None and number_text(evaluate(note[1])) == note[2].strip()]


def visible_expression(line: str, note: re.Match) -> re.Match | None:
    """The expression as written before the note (`48 / 2 = `), matched token by token."""
    parts = re.findall(r"\d*\.?\d+|[-+*/]", note[1].replace(" ", ""))
    pattern = r"\s*".join(r"[*x×]" if p == "*" else re.escape(p) for p in parts)
    matches = list(re.finditer(pattern, line[:note.start()]))
    return matches[-1] if matches else None


def plant(kind: str, problem: str, lines: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    """(the solution's lines with one error of `kind`, the 1-based first wrong step), or None where none fits."""
    candidates = calculation_lines(lines)
    if not candidates:
        return None
    k = rng.choice(candidates)
    note = NOTE_RE.search(lines[k])
    result = note[2].strip()
    if kind == "arithmetic":
        value = float(result)
        new = rng.choice([value + rng.choice([-2, -1, 1, 2, 3]), value * 10, value + 10])
        new_text = number_text(to_sympy(repr(new))) or result
        if new_text == result:
            return None
        changed = lines[:k] + [with_result(lines[k], note, note[1], new_text)] + lines[k + 1:]
        return carry(changed, k, result, new_text), k + 1
    if kind in ("operation", "number"):
        shown = visible_expression(lines[k], note)
        if not shown:
            return None
        expression = note[1].replace(" ", "")
        if kind == "operation":
            spots = [m.start() for m in OPERATOR_RE.finditer(expression) if m.start() > 0]
            spot = rng.choice(spots)
            new_expression = expression[:spot] + SWAPS[expression[spot]] + expression[spot + 1:]
        else:
            given = {n for n in re.findall(r"\d*\.?\d+", problem.replace(",", ""))}
            operands = [m for m in re.finditer(r"\d*\.?\d+", expression) if m[0] in given and m[0] not in ("1", "2")]
            if not operands:
                return None
            operand = rng.choice(operands)
            replacement = str(int(float(operand[0])) + rng.choice([1, 2, 3, 4, 6, 7])) if "." not in operand[0] else None
            if replacement is None or replacement in given:
                return None
            new_expression = expression[:operand.start()] + replacement + expression[operand.end():]
        value = evaluate(new_expression)
        new_text = number_text(value) if value is not None else None
        if new_text is None or new_text == result or value < 0:
            return None
        shown_new = re.sub(r"\s+", " ", new_expression.replace("*", " * ").replace("/", " / ").replace("+", " + ")
                           .replace("-", " - ")).strip()
        line = lines[k][:shown.start()] + shown_new + lines[k][shown.end():]
        line = with_result(line, NOTE_RE.search(line), new_expression, new_text)
        return carry(lines[:k] + [line] + lines[k + 1:], k, result, new_text), k + 1
    if kind == "dropped":
        token = re.compile(TOKEN_RE.format(re.escape(result)))
        earlier = problem.replace(",", "") + "\n" + "\n".join(lines[:k])
        users = [i for i in range(k + 1, len(lines) - 1) if token.search(lines[i])]
        if token.search(earlier) or not users or lines[k].lstrip().startswith("####"):
            return None
        return lines[:k] + lines[k + 1:], users[0]  # the user moves up one line: its 1-based number is its old index
    raise ValueError(kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"))
    parser.add_argument("--per-kind", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default="", help="a model choice that judges the steps the exact checks cannot")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(args.data)]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    judge = model_judge(args.judge) if args.judge else None
    started, flagged_clean, seen = time.time(), 0, 0
    results = {kind: Counter() for kind in KINDS}
    examples = {kind: [] for kind in KINDS}
    for row in rows:
        if all(results[kind]["planted"] >= args.per_kind for kind in KINDS):
            break
        lines = split_steps(row["answer"])
        seen += 1
        if check_steps(row["question"], lines)[-1].status == "wrong":
            flagged_clean += 1
            continue
        for kind in KINDS:
            if results[kind]["planted"] >= args.per_kind:
                continue
            planted = plant(kind, row["question"], lines, rng)
            if planted is None:
                continue
            solution, expected = planted
            found = find_mistake(row["question"], "\n".join(solution), judge)
            outcome = ("right step" if found.step == expected else "no step" if found.step is None
                       else "earlier step" if found.step < expected else "later step")
            results[kind]["planted"] += 1
            results[kind][outcome] += 1
            if outcome != "right step" and len(examples[kind]) < 5:
                examples[kind].append({"question": row["question"], "solution": solution, "expected": expected,
                                       "found": found.as_json()})
    summary = {kind: {"planted": c["planted"], "found": c["right step"],
                      "accuracy": round(c["right step"] / max(1, c["planted"]), 4),
                      "outcomes": {k: v for k, v in c.items() if k != "planted"}} for kind, c in results.items()}
    report = {
        "command": "python " + " ".join(sys.argv), "judge": args.judge or None, "seed": args.seed,
        "clean_solutions_checked": seen, "clean_solutions_flagged": flagged_clean,
        "by_kind": summary, "misses": examples, "seconds": round(time.time() - started, 1),
        "device_env": {"machine": platform.machine(), "python": platform.python_version()},
    }
    for kind, row in summary.items():
        print(f"{kind:11s} {row['found']:4d}/{row['planted']:<4d} {row['accuracy']:.1%}  {row['outcomes']}")
    print(f"clean solutions flagged: {flagged_clean}/{seen}; {report['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
