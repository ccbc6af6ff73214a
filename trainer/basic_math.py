"""A small math dataset the project makes itself: every answer computed exactly, deterministic by seed.

`generate(n, seed)` returns rows in the MathX-5M schema:
    {"problem": str, "generated_solution": "<think>\\n...steps...\\n</think>\\n\\nThe answer is \\boxed{a}.",
     "expected_answer": str}
Problems: linear equations, shopping and sharing word problems, percentages, areas and perimeters, fractions
(exact `Fraction` arithmetic, answers as `\\frac{p}{q}` in lowest terms), unit rates and order of operations.
The steps are short and real so that a tiny model can learn the format in a few minutes on a CPU.
"""

import random
from fractions import Fraction
from math import lcm

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kemi", "Leo", "Maya",
         "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
ITEMS = [("notebook", "notebooks"), ("pencil", "pencils"), ("apple", "apples"), ("ticket", "tickets"),
         ("sandwich", "sandwiches"), ("marker", "markers"), ("candle", "candles"), ("book", "books")]
THINGS = ["stickers", "marbles", "cards", "shells", "stamps", "beads"]
GOODS = ["jacket", "bike", "lamp", "backpack", "chair", "watch"]


def show(q: Fraction) -> str:
    """An exact number as text: 12, 2.5, or \\frac{7}{12} when the decimal would not end."""
    q = Fraction(q)
    if q.denominator == 1:
        return str(q.numerator)
    d = q.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        digits = 0
        while (q * 10**digits).denominator != 1:
            digits += 1
        return f"{float(q):.{digits}f}"
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def money(q: Fraction) -> str:
    """Dollars: 12 or 12.50."""
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else f"{float(q):.2f}"


def frac(q: Fraction) -> str:
    """A fraction written inline in steps: 7/12, or 3 when whole."""
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


# Each generator takes a Random and returns (problem, steps, answer). Every answer is computed, never typed.

def linear(rng):
    a, x, b = rng.randint(2, 12), rng.randint(1, 20), rng.randint(1, 30)
    if rng.random() < 0.5:
        c = a * x + b
        return (f"Solve for x: {a}x + {b} = {c}.",
                [f"Subtract {b} from both sides: {a}x = {c} - {b} = {c - b}.",
                 f"Divide both sides by {a}: x = {c - b} ÷ {a} = {x}.",
                 f"Check: {a} × {x} = {a * x}, and {a * x} + {b} = {c}."], str(x))
    c = a * x - b
    return (f"Solve for x: {a}x - {b} = {c}.",
            [f"Add {b} to both sides: {a}x = {c} + {b} = {c + b}.",
             f"Divide both sides by {a}: x = {c + b} ÷ {a} = {x}.",
             f"Check: {a} × {x} = {a * x}, and {a * x} - {b} = {c}."], str(x))


def linear_both_sides(rng):
    a2 = rng.randint(1, 8)
    a1 = a2 + rng.randint(1, 6)
    x, b1 = rng.randint(1, 15), rng.randint(1, 20)
    b2 = (a1 - a2) * x + b1
    d = a1 - a2
    return (f"Solve for x: {a1}x + {b1} = {a2}x + {b2}.",
            [f"Subtract {a2}x from both sides: {d}x + {b1} = {b2}.",
             f"Subtract {b1} from both sides: {d}x = {b2} - {b1} = {b2 - b1}.",
             f"Divide by {d}: x = {b2 - b1} ÷ {d} = {x}."], str(x))


def change(rng):
    name, (one, many) = rng.choice(NAMES), rng.choice(ITEMS)
    n, p = rng.randint(2, 8), rng.randint(2, 9)
    cost = n * p
    bill = next(b for b in (20, 50, 100) if b > cost)
    return (f"{name} buys {n} {many} at ${p} each and pays with a ${bill} bill. "
            f"How much change, in dollars, does {name} get?",
            [f"Cost of the {many}: {n} × ${p} = ${cost}.",
             f"Change: ${bill} - ${cost} = ${bill - cost}."], str(bill - cost))


def sharing(rng):
    name, things = rng.choice(NAMES), rng.choice(THINGS)
    k, each = rng.randint(2, 9), rng.randint(3, 15)
    a = rng.randint(5, k * each - 1)
    b = k * each - a
    return (f"{name} has {a} {things} and gets {b} more. {name} then shares them equally among {k} friends. "
            f"How many {things} does each friend get?",
            [f"Total {things}: {a} + {b} = {a + b}.",
             f"Each friend gets {a + b} ÷ {k} = {each}."], str(each))


def reading(rng):
    name = rng.choice(NAMES)
    p, d, q = rng.randint(5, 40), rng.randint(2, 9), rng.randint(1, 30)
    return (f"{name} reads {p} pages a day for {d} days, then {q} pages on the next day. "
            f"How many pages does {name} read in total?",
            [f"Pages in the first {d} days: {p} × {d} = {p * d}.",
             f"Add the last day: {p * d} + {q} = {p * d + q}."], str(p * d + q))


def percent_of(rng):
    p = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75])
    n = 20 * rng.randint(1, 20)
    value = Fraction(p * n, 100)
    return (f"What is {p}% of {n}?",
            [f"{p}% means {p}/100.",
             f"Multiply: {p} × {n} = {p * n}.",
             f"Divide by 100: {p * n} ÷ 100 = {show(value)}."], show(value))


def discount(rng):
    item = rng.choice(GOODS)
    price, p = 10 * rng.randint(2, 20), rng.choice([10, 20, 25, 30, 40, 50])
    cut = Fraction(price * p, 100)
    return (f"A {item} costs ${price}. It is on sale for {p}% off. What is the sale price in dollars?",
            [f"Discount: {p}% of ${price} is {p} × {price} ÷ 100 = ${money(cut)}.",
             f"Sale price: ${price} - ${money(cut)} = ${money(price - cut)}."], money(price - cut))


def growth(rng):
    n, p = 100 * rng.randint(5, 80), rng.choice([2, 5, 10, 15, 20, 25])
    inc = n * p // 100
    return (f"A town has {n} people. Its population grows by {p}%. How many people live there now?",
            [f"Increase: {p}% of {n} is {n} × {p} ÷ 100 = {inc}.",
             f"New population: {n} + {inc} = {n + inc}."], str(n + inc))


def rectangle(rng):
    l = rng.randint(3, 25)
    w = rng.randint(2, l - 1)
    if rng.random() < 0.5:
        return (f"A rectangle is {l} cm long and {w} cm wide. What is its area in square centimeters?",
                ["The area of a rectangle is length × width.",
                 f"Area: {l} × {w} = {l * w} square centimeters."], str(l * w))
    return (f"A rectangle is {l} cm long and {w} cm wide. What is its perimeter in centimeters?",
            ["The perimeter is twice the sum of length and width.",
             f"Length plus width: {l} + {w} = {l + w}.",
             f"Perimeter: 2 × {l + w} = {2 * (l + w)} centimeters."], str(2 * (l + w)))


def triangle(rng):
    b, h = rng.randint(2, 24), rng.randint(2, 20)
    area = Fraction(b * h, 2)
    return (f"A triangle has a base of {b} m and a height of {h} m. What is its area in square meters?",
            ["The area of a triangle is base × height ÷ 2.",
             f"Base times height: {b} × {h} = {b * h}.",
             f"Half of it: {b * h} ÷ 2 = {show(area)} square meters."], show(area))


def square(rng):
    s = rng.randint(2, 20)
    return (f"A square has a perimeter of {4 * s} cm. What is its area in square centimeters?",
            [f"A square has 4 equal sides, so each side is {4 * s} ÷ 4 = {s} cm.",
             f"Area: {s} × {s} = {s * s} square centimeters."], str(s * s))


def fraction_sum(rng):
    while True:
        b, d = rng.randint(2, 12), rng.randint(2, 12)
        a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
        x, y, sign = Fraction(a, b), Fraction(c, d), rng.choice("+-")
        if sign == "-" and x < y:
            x, y, a, b, c, d = y, x, c, d, a, b
        result = x + y if sign == "+" else x - y
        if b != d and result.denominator != 1 and result != 0:
            break
    L = lcm(b, d)
    top = a * L // b + c * L // d if sign == "+" else a * L // b - c * L // d
    steps = [f"The common denominator of {b} and {d} is {L}.",
             f"Rewrite: {a}/{b} = {a * L // b}/{L} and {c}/{d} = {c * L // d}/{L}.",
             f"{'Add' if sign == '+' else 'Subtract'} the numerators: {a * L // b} {sign} {c * L // d} = {top}, "
             f"so the result is {top}/{L}."]
    if Fraction(top, L).denominator != L:
        steps.append(f"Simplify: {top}/{L} = {frac(result)}.")
    return (f"Compute {a}/{b} {sign} {c}/{d}. Write the answer as a fraction in lowest terms.", steps, show(result))


def fraction_product(rng):
    while True:
        a, b, c, d = rng.randint(1, 9), rng.randint(2, 12), rng.randint(1, 9), rng.randint(2, 12)
        result = Fraction(a, b) * Fraction(c, d)
        if a < b and c < d and result.denominator != 1:
            break
    steps = [f"Multiply the numerators: {a} × {c} = {a * c}.",
             f"Multiply the denominators: {b} × {d} = {b * d}.",
             f"The product is {a * c}/{b * d}."]
    if result.denominator != b * d:
        steps.append(f"Simplify: {a * c}/{b * d} = {frac(result)}.")
    return (f"Compute {a}/{b} × {c}/{d}. Write the answer as a fraction in lowest terms.", steps, show(result))


def unit_price(rng):
    one, many = rng.choice(ITEMS)
    n, m = rng.randint(2, 9), rng.randint(2, 12)
    unit = Fraction(5 * rng.randint(5, 60), 100)
    while m == n:
        m = rng.randint(2, 12)
    return (f"{n} {many} cost ${money(n * unit)}. At the same price, how much do {m} {many} cost, in dollars?",
            [f"One {one} costs ${money(n * unit)} ÷ {n} = ${money(unit)}.",
             f"{m} {many} cost {m} × ${money(unit)} = ${money(m * unit)}."], money(m * unit))


def speed(rng):
    v, t, t2 = 10 * rng.randint(3, 12), rng.randint(2, 6), rng.randint(2, 9)
    return (f"A train travels {v * t} km in {t} hours at a steady speed. How far does it travel in {t2} hours, in km?",
            [f"Speed: {v * t} ÷ {t} = {v} km per hour.",
             f"Distance in {t2} hours: {v} × {t2} = {v * t2} km."], str(v * t2))


def order_of_operations(rng):
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12)
    d = rng.randint(1, a + b * c - 1)
    return (f"Compute {a} + {b} × {c} - {d}.",
            [f"Multiplication comes first: {b} × {c} = {b * c}.",
             f"Then add and subtract from left to right: {a} + {b * c} = {a + b * c}.",
             f"Finally {a + b * c} - {d} = {a + b * c - d}."], str(a + b * c - d))


GENERATORS = [linear, linear_both_sides, change, sharing, reading, percent_of, discount, growth, rectangle, triangle,
              square, fraction_sum, fraction_product, unit_price, speed, order_of_operations]


def generate(n: int, seed: int = 0) -> list[dict]:
    """`n` distinct problems, the same ones for the same seed, in the MathX-5M schema."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for _ in range(50 * n + 100):
        if len(rows) == n:
            break
        problem, steps, answer = rng.choice(GENERATORS)(rng)
        if problem in seen:
            continue
        seen.add(problem)
        solution = "<think>\n" + "\n".join(steps) + f"\n</think>\n\nThe answer is \\boxed{{{answer}}}."
        rows.append({"problem": problem, "generated_solution": solution, "expected_answer": answer})
    return rows
