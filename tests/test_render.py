"""tutor.render: reasoning split, LaTeX and currency, HTML escaping, the Chatbot messages."""

import json
import re

import pytest

from tests.conftest import SHARED_DATA, needs_shared_data

from tutor.render import (
    LATEX_DELIMITERS,
    final_answer_markdown,
    normalize_latex,
    reply_messages,
    split_reasoning,
)

# ---------------------------------------------------------------- split_reasoning


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>add them</think>The sum is 5.", ("add them", "The sum is 5.", True)),
        ("<THINK>\n  add them \n</Think>\n\n  The sum is 5.  ", ("add them", "The sum is 5.", True)),
        ("< think >add</ think >5", ("add", "5", True)),
        # the chat template opened <think>: everything before the lone closing tag is reasoning
        ("add them first\n</think>\nThe sum is 5.", ("add them first", "The sum is 5.", True)),
        # still streaming the reasoning
        ("<think>add them, then", ("add them, then", "", False)),
        ("<think>", ("", "", False)),
        ("<think>\n", ("", "", False)),
        # no reasoning at all
        ("The sum is 5.", (None, "The sum is 5.", True)),
        ("  \n", (None, "", True)),
        ("", (None, "", True)),
        (None, (None, "", True)),
        # an empty think block (thinking switched off) is no reasoning
        ("<think>\n\n</think>\n\nThe sum is 5.", (None, "The sum is 5.", True)),
        ("</think>The sum is 5.", (None, "The sum is 5.", True)),
        # text before the think block stays in the answer; stray tags after it are dropped
        ("Sure. <think>add</think>It is 5.", ("add", "Sure. It is 5.", True)),
        ("add</think>It is 5.</think>", ("add", "It is 5.", True)),
        ("<think>a</think>b<think>c</think>", ("a", "bc", True)),
    ],
)
def test_split_reasoning(text, expected):
    assert split_reasoning(text) == expected


def test_split_reasoning_closing_tag_before_an_opening_one():
    # "</think>" came first, so the template opened the block; a later "<think>" does not restart thinking
    assert split_reasoning("r</think>answer <think>") == ("r", "answer", True)


# ---------------------------------------------------------------- LaTeX and currency


def test_latex_delimiters_have_no_single_dollar():
    lefts = [d["left"] for d in LATEX_DELIMITERS]
    assert "$" not in lefts
    assert {"$$", "\\[", "\\("} <= set(lefts)
    assert all(set(d) == {"left", "right", "display"} for d in LATEX_DELIMITERS)
    assert {d["left"]: d["display"] for d in LATEX_DELIMITERS} == {"$$": True, "\\[": True, "\\(": False}


CURRENCY = [
    ("I have $5 and $10.", r"I have \$5 and \$10."),
    ("It costs $3.50 each.", r"It costs \$3.50 each."),
    ("He paid $5, she paid $10.", r"He paid \$5, she paid \$10."),
    ("between $5-$10", r"between \$5-\$10"),
    ("Total $20/hour*3=$60", r"Total \$20/hour*3=\$60"),
    ("$5 + $3 = $8", r"\$5 + \$3 = \$8"),
    ("costs $2.50 each, or $20 per dozen", r"costs \$2.50 each, or \$20 per dozen"),
    ("He earned $1,200 in May and $1,500 in June.", r"He earned \$1,200 in May and \$1,500 in June."),
    ("spent ($5) and ($3) today", r"spent (\$5) and (\$3) today"),
    ("Price: $5\n\nTax: $1", "Price: \\$5\n\nTax: \\$1"),
    ("$5 each$", r"\$5 each\$"),  # digit first, then prose: a price, not math
    ("only one $ sign", r"only one \$ sign"),
    ("$$5 and more", r"\$\$5 and more"),  # an unpaired $$ cannot open display math
    (r"already \$5 escaped", r"already \$5 escaped"),
    ("a loaf for $.50 and $x$ more", r"a loaf for \$.50 and \(x\) more"),
    ("The gum cost $1.5/2=$.75 per pack", r"The gum cost \$1.5/2=\$.75 per pack"),
    ("he made 350$.  The next month he made 50$ more", r"he made 350\$.  The next month he made 50\$ more"),
    # GSM8K's calculator notes are dropped: the result follows them
    ("She pays 2*3 = $<<2*3=6>>6 in total", r"She pays 2*3 = \$6 in total"),
    ("So 48+24 = <<48+24=72>>72 clips", "So 48+24 = 72 clips"),
]


@pytest.mark.parametrize("text, expected", CURRENCY)
def test_currency_is_escaped(text, expected):
    assert normalize_latex(text) == expected


MATH = [
    ("Solve $x+1=3$.", r"Solve \(x+1=3\)."),
    ("$2x+3$ and $3:2$", r"\(2x+3\) and \(3:2\)"),
    ("so $5$ apples", r"so \(5\) apples"),
    ("$10 \\text{ dollars}$", r"\(10 \text{ dollars}\)"),
    ("$2xy$", r"\(2xy\)"),
    ("I paid $5 and got $\\frac{1}{2}$ back", r"I paid \$5 and got \(\frac{1}{2}\) back"),
    ("He has $5 and $x$ is unknown", r"He has \$5 and \(x\) is unknown"),
    # shapes from MATH solutions: spaces inside the dollars, point names, environments inside $...$
    ("yields $ x = \\boxed{83}$.", r"yields \( x = \boxed{83}\)."),
    ("$360^\\circ - 2 \\cdot \\angle ABC = 140^\\circ.$", r"\(360^\circ - 2 \cdot \angle ABC = 140^\circ.\)"),
    ("In fact, $\\triangle ACD $ is", r"In fact, \(\triangle ACD \) is"),
    ("is $2 \\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}$", r"is \(2 \begin{pmatrix} 1 \\ 2 \end{pmatrix}\)"),
    ("If we let $x = $ the side length", r"If we let \(x = \) the side length"),
    ("costs $ 5 and $ 10", r"costs \$ 5 and \$ 10"),
    ("$$\\frac{1}{2}$$", r"$$\frac{1}{2}$$"),
    ("\\[x^2\\] and \\(y\\)", r"\[x^2\] and \(y\)"),
    ("so x = \\frac{1}{2} here", r"so x = \(\frac{1}{2}\) here"),
    ("\\dfrac{a}{b} and \\sqrt{2} and \\sqrt[3]{8}", r"\(\dfrac{a}{b}\) and \(\sqrt{2}\) and \(\sqrt[3]{8}\)"),
    ("is \\boxed{\\frac{\\sqrt{2}}{2}}.", r"is \(\boxed{\frac{\sqrt{2}}{2}}\)."),
    ("$\\frac{1}{2}$", r"\(\frac{1}{2}\)"),  # already math: wrapped once, not twice
    ("$$\\boxed{5}$$", r"$$\boxed{5}$$"),
    ("\\boxed{4", r"\boxed{4"),  # still streaming: left as it is
    ("\\frac{1}{", r"\frac{1}{"),
    (
        "\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}",
        r"$$\begin{aligned} a &= b \\ c &= d \end{aligned}$$",
    ),
    ("$$\\begin{aligned} a &= b \\end{aligned}$$", r"$$\begin{aligned} a &= b \end{aligned}$$"),
    ("\\begin{cases} 1 & x>0 \\end{cases}", r"$$\begin{cases} 1 & x&gt;0 \end{cases}$$"),
    # a lone \( cannot pair with the \) that a converted $x$ gets
    ("oops \\( here $x$", r"oops ( here \(x\)"),
    # code is left alone
    ("`$5` and\n```\ncost = '$5'\n```\n", "`$5` and\n```\ncost = '$5'\n```\n"),
]


@pytest.mark.parametrize("text, expected", MATH)
def test_math_renders(text, expected):
    assert normalize_latex(text) == expected


@pytest.mark.parametrize("text", [case[0] for case in CURRENCY + MATH])
def test_normalize_latex_is_idempotent(text):
    once = normalize_latex(text)
    assert normalize_latex(once) == once


@pytest.mark.parametrize("text", [case[0] for case in CURRENCY + MATH])
def test_no_single_dollar_is_left_for_katex(text):
    out = normalize_latex(text)
    out = re.sub(r"`[^`]*`|```[\s\S]*?```", "", out)  # code
    out = re.sub(r"(?<!\\)\$\$[\s\S]+?\$\$", "", out)  # display math
    assert not re.search(r"(?<!\\)\$", out), out


@needs_shared_data()
def test_real_word_problems_and_solutions():
    # GSM8K questions are full of prices: none may turn into math
    questions = [json.loads(line)["question"] for line in (SHARED_DATA / "gsm8k" / "test.jsonl").open()]
    priced = [q for q in questions if "$" in q]
    assert len(priced) > 50
    assert [q for q in priced if "\\(" in normalize_latex(q)] == []
    # MATH solutions are full of inline math: none of it may be taken for a price
    solutions = [json.loads(line)["solution"] for line in (SHARED_DATA / "math500" / "test.jsonl").open()]
    assert [s for s in solutions if normalize_latex(s).count("\\$") != s.count("\\$")] == []


# ---------------------------------------------------------------- HTML safety

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="fetch(\'//evil\')">',
    "<svg onload=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    "$<script>alert(1)</script>$",
    "$$<img src=x onerror=alert(1)>$$",
    "\\(<script>alert(1)</script>\\)",
    "`<script>alert(1)</script>`",
    "```\n<script>alert(1)</script>\n```",
    "\\boxed{<img src=x onerror=alert(1)>}",
    "<think>",  # a stray tag in an answer is shown, never markup
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_is_escaped(payload):
    out = normalize_latex(f"Here: {payload} done")
    assert "<" not in out and ">" not in out
    assert "&lt;" in out


def test_math_keeps_its_comparison_signs_as_entities():
    # Gradio puts math back with an escape that keeps entities, so KaTeX receives "x < 3"
    assert normalize_latex("$x < 3$ and $y>2$") == r"\(x &lt; 3\) and \(y&gt;2\)"


def test_markdown_images_become_links():
    out = normalize_latex("![cat](http://example.com/cat.png)")
    assert "![" not in out
    assert out == "&#33;[cat](http://example.com/cat.png)"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_reply_messages_are_escaped_in_reasoning_and_answer(payload):
    messages = reply_messages(f"<think>look {payload}</think>Answer {payload}", 1.0)
    assert len(messages) == 2
    for message in messages:
        assert "<" not in message["content"] and ">" not in message["content"]


# ---------------------------------------------------------------- messages


def test_reply_messages_with_finished_reasoning():
    messages = reply_messages("<think>Add $2+3$.</think>It costs $5 in total, so \\boxed{5}", 3.24)
    assert messages == [
        {"role": "assistant", "content": r"Add \(2+3\).",
         "metadata": {"title": "Thought for 3.2 s", "status": "done"}},
        {"role": "assistant",
         "content": "It costs \\$5 in total, so \\(\\boxed{5}\\)\n\n**Final answer:** \\(\\boxed{5}\\)"},
    ]


def test_reply_messages_while_thinking():
    messages = reply_messages("<think>First add $2+3$", None)
    assert messages == [
        {"role": "assistant", "content": r"First add \(2+3\)",
         "metadata": {"title": "Thinking...", "status": "pending"}},
    ]
    assert reply_messages("<think>", 0.1)[0]["metadata"]["status"] == "pending"


def test_reply_messages_without_reasoning():
    assert reply_messages("Hello! What shall we solve?", 2.0) == [
        {"role": "assistant", "content": "Hello! What shall we solve?"}
    ]
    assert reply_messages("", None) == []


@pytest.mark.parametrize("seconds, title", [
    (None, "Thoughts"), (0.04, "Thought for 0.0 s"), (9.94, "Thought for 9.9 s"), (12.4, "Thought for 12 s"),
    (125.6, "Thought for 126 s"),
])
def test_thought_title(seconds, title):
    assert reply_messages("<think>r</think>a", seconds)[0]["metadata"]["title"] == title


def test_reply_messages_are_accepted_by_gradio_chatbot():
    import gradio as gr

    chatbot = gr.Chatbot(latex_delimiters=LATEX_DELIMITERS)
    history = [{"role": "user", "content": "2+3?"}] + reply_messages("<think>r</think>\\boxed{5}", 1.5)
    data = chatbot.postprocess(history).model_dump()
    assert [m["role"] for m in data] == ["user", "assistant", "assistant"]
    assert data[1]["metadata"] == {"title": "Thought for 1.5 s", "status": "done"}
    assert chatbot.latex_delimiters == LATEX_DELIMITERS


# ---------------------------------------------------------------- final answer line


@pytest.mark.parametrize(
    "answer, line",
    [
        ("So \\boxed{\\frac{1}{\\sqrt{2}}} is it.", r"**Final answer:** \(\boxed{\frac{1}{\sqrt{2}}}\)"),
        ("\\boxed{1} then \\boxed{\\{1, 2\\}}", r"**Final answer:** \(\boxed{\{1, 2\}}\)"),
        ("Steps...\n#### 72", r"**Final answer:** \(\boxed{72}\)"),
        ("The answer is $x = 2$.", r"**Final answer:** \(\boxed{x = 2}\)"),
        ("The answer is 42 apples.", "**Final answer:** 42 apples"),
        ("The answer is Evelyn.", "**Final answer:** Evelyn"),
        ("The answer is (C).", r"**Final answer:** \(\boxed{(C)}\)"),
        ("Final answer: $18", r"**Final answer:** \$18"),
        ("I have 3 cats.", None),  # the last-number fallback is not a stated answer
        ("Therefore x = 3.", None),
        ("Hello!", None),
        ("\\boxed{}", None),
    ],
)
def test_final_answer_markdown(answer, line):
    assert final_answer_markdown(answer) == line


def test_final_answer_markdown_is_escaped():
    line = final_answer_markdown("The answer is <img src=x onerror=alert(1)>.")
    assert line.startswith("**Final answer:**")
    assert "<" not in line and "&lt;img" in line
