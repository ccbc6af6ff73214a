"""Turn a model reply into the messages the Gradio Chatbot shows: reasoning apart, LaTeX that renders, no markup.

How Gradio 6's Chatbot renders a message (gradio 6.31 frontend, markdown-code): for each of the Chatbot's
`latex_delimiters`, in order, it cuts `left...right` spans out of the text, renders the rest as Markdown (marked),
puts the spans back HTML-escaped, sanitizes, then runs KaTeX auto-render with the same delimiters on the result.
Gradio's default is only `$$...$$`. We pass LATEX_DELIMITERS, which has no single `$`: KaTeX would pair any two
dollar signs of a word problem ("$5 and $10"), and Markdown's `\\$` escape happens before KaTeX sees the text, so
it cannot protect them. normalize_latex therefore rewrites real inline math `$x+1$` to `\\(x+1\\)` and escapes
currency as `\\$5` (shown as "$5").

Everything model-made is escaped: `<` and `>` become `&lt;` and `&gt;` everywhere, math included (Gradio puts math
back with an escape that leaves entities alone, so KaTeX still receives `x < 3`), so a reply cannot write HTML; the
cost is that `<` inside a code block shows as `&lt;`. Markdown images become plain links. Markdown links stay, and
their URLs (`javascript:`) are left to Gradio's sanitizer: keep the Chatbot's `sanitize_html=True`.
GSM8K's calculator notes (`<<48/2=24>>`) are dropped from the display.
"""

import re

from trainer.answers import brace_pairs, extract_answer, last_boxed
from trainer.data import CALCULATOR_RE

LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]

# ---------------------------------------------------------------- reasoning

_OPEN_THINK_RE = re.compile(r"<\s*think\s*>", re.I)
_CLOSE_THINK_RE = re.compile(r"<\s*/\s*think\s*>", re.I)


def split_reasoning(text: str) -> tuple[str | None, str, bool]:
    """(reasoning, answer, thinking_done) of a reply, complete or still streaming.

    `<think>R</think>A` gives R and A. Without the opening tag (the chat template opened it) the text before
    `</think>` is the reasoning. Without the closing tag the model is still thinking: everything after `<think>`
    is reasoning and thinking_done is False. No tags, or an empty think block, give reasoning None.
    """
    text = text or ""
    closing = _CLOSE_THINK_RE.search(text)
    opening = _OPEN_THINK_RE.search(text, 0, closing.start() if closing else len(text))
    if closing is None and opening is None:
        return None, text.strip(), True
    if closing is None:
        return text[opening.end():].strip(), text[: opening.start()].strip(), False
    start, prefix = (opening.end(), text[: opening.start()]) if opening else (0, "")
    reasoning = text[start: closing.start()].strip()
    answer = _OPEN_THINK_RE.sub("", _CLOSE_THINK_RE.sub("", prefix + text[closing.end():]))  # stray tags
    return reasoning or None, answer.strip(), True


# ---------------------------------------------------------------- LaTeX

# Spans left alone by the passes below: code, and math already in one of LATEX_DELIMITERS.
_KEEP_RE = re.compile(
    r"(?m:^[ \t]*```[^\n]*\n[\s\S]*?(?:^[ \t]*```[ \t]*$|\Z))"  # fenced code block
    r"|`[^`\n]+`"  # inline code
    r"|(?<!\\)\$\$[\s\S]+?\$\$"  # $$ display $$
    r"|\\\[(?:(?!\\\[)[\s\S])+?\\\]"  # \[ display \], not across another \[ (linear on a run of unclosed ones)
    r"|\\\((?:(?!\\\()[\s\S])+?\\\)"  # \( inline \), likewise
)
_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
_LATEX_WORDS_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_PROSE_RE = re.compile(r"(?<![\\A-Za-z])[a-z]{3,}|\s[a-z]{2,}")  # "each", "and", " in": not `\\cdot`, `ABC`, `2x`
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_ENVIRONMENT_RE = re.compile(
    r"\\begin\{(aligned|align\*?|equation\*?|gather\*?|cases|split|array|[pbvBV]?matrix)\}"
    r"(?:(?!\\begin\{\1\})[\s\S])*?\\end\{\1\}"  # not across another \begin of it: linear on unclosed ones
)
_COMMAND_RE = re.compile(r"\\(boxed|[dt]?frac|sqrt)(?![A-Za-z])")
_SQRT_INDEX_RE = re.compile(r"\s*\[[^\[\]\n]*\]")  # no `[` inside: linear on a run of unclosed `\sqrt[`
_SPACES_RE = re.compile(r"[ \t]*")
_STRAY_DELIMITER_RE = re.compile(r"\\([()\[\]])")
_IMAGE_RE = re.compile(r"!\[")
_PRICE_START_RE = re.compile(r"\.?\d")


def _map_text(text: str, change) -> str:
    """Apply change() to the parts of text outside code and math spans."""
    parts, last = [], 0
    for span in _KEEP_RE.finditer(text):
        parts += [change(text[last: span.start()]), span.group()]
        last = span.end()
    parts.append(change(text[last:]))
    return "".join(parts)


def _is_inline_math(before: str, content: str, after: str) -> bool:
    """Whether `$content$` is math rather than the prose between two prices (`$5 and $`, `$3.50 each, $`).

    A dollar sign after a digit ends a price (`350$`), one before a number starts a price (`$5`, `$.50`). So math
    must not open right after a digit nor close right before a number, and math that starts with a number must
    look like math: no space just inside the dollars, no lowercase words (Pandoc's rules, plus the words).
    """
    stripped = content.strip()
    if not stripped or before.isdigit() or _PRICE_START_RE.match(after):
        return False
    if not _PRICE_START_RE.match(stripped):
        return True
    return content == stripped and not _PROSE_RE.search(_LATEX_WORDS_RE.sub("", content))


def _convert_dollars(text: str) -> str:
    """`$x+1$` becomes `\\(x+1\\)`; every other unescaped `$` (a price) becomes `\\$`."""
    parts, i = [], 0
    while (opening := _DOLLAR_RE.search(text, i)) is not None:
        parts.append(text[i: opening.start()])
        closing = _DOLLAR_RE.search(text, opening.end())
        if closing is not None and not _BLANK_LINE_RE.search(text, opening.end(), closing.start()):
            before = text[opening.start() - 1: opening.start()]
            content, after = text[opening.end(): closing.start()], text[closing.end(): closing.end() + 2]
            if _is_inline_math(before, content, after):
                parts.append(f"\\({content}\\)")
                i = closing.end()
                continue
        parts.append("\\$")
        i = opening.end()
    parts.append(text[i:])
    return "".join(parts)


def _command_end(text: str, i: int, name: str, pairs: dict[int, int]) -> int | None:
    """Where the arguments of \\name end (i is just after the name), or None while they are incomplete.
    `pairs` is brace_pairs(text)."""
    if name == "sqrt" and (index := _SQRT_INDEX_RE.match(text, i)):
        i = index.end()
    for _ in range(2 if name.endswith("frac") else 1):
        i = _SPACES_RE.match(text, i).end()
        if not text.startswith("{", i) or (close := pairs.get(i)) is None:
            return None
        i = close + 1
    return i


def _wrap_commands(text: str) -> str:
    """Bare `\\frac{1}{2}`, `\\sqrt{2}`, `\\boxed{5}` in prose become `\\(\\frac{1}{2}\\)` ..."""
    parts, i, pairs = [], 0, brace_pairs(text)
    while (command := _COMMAND_RE.search(text, i)) is not None:
        end = _command_end(text, command.end(), command[1], pairs)
        if end is None:
            parts.append(text[i: command.end()])
            i = command.end()
            continue
        parts += [text[i: command.start()], f"\\({text[command.start(): end]}\\)"]
        i = end
    parts.append(text[i:])
    return "".join(parts)


def _tidy_text(text: str) -> str:
    """Drop GSM8K calculator notes (`= $<<4*2=8>>8`: the result follows them); lone `\\(`, `\\)`, `\\[`, `\\]`
    lose their backslash (Markdown shows them so anyway) so that they cannot pair up with math delimiters;
    Markdown images become plain links (no remote images from a reply)."""
    text = CALCULATOR_RE.sub("", text)
    return _IMAGE_RE.sub("&#33;[", _STRAY_DELIMITER_RE.sub(r"\1", text))


def escape_html(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def normalize_latex(text: str) -> str:
    """Reply text as Markdown whose math renders with LATEX_DELIMITERS and which holds no raw HTML."""
    text = _map_text(text, _tidy_text)  # first: the passes below add delimiters that strays could pair with
    text = _map_text(text, _convert_dollars)
    text = _map_text(text, lambda part: _ENVIRONMENT_RE.sub(lambda env: f"$${env.group()}$$", part))
    text = _map_text(text, _wrap_commands)
    return escape_html(text)


# ---------------------------------------------------------------- chat messages

def _looks_like_math(answer: str) -> bool:
    return "$" not in answer and not _WORD_RE.search(_LATEX_WORDS_RE.sub("", answer))


def final_answer_markdown(answer: str) -> str | None:
    """A `**Final answer:** ...` line when the answer has a \\boxed{} or an explicit final answer, else None."""
    boxed = last_boxed(answer)
    value = boxed if boxed is not None else extract_answer(answer, strict=True)
    if not value:
        return None
    if boxed is not None or _looks_like_math(value):
        return normalize_latex(f"**Final answer:** \\(\\boxed{{{value}}}\\)")
    return normalize_latex(f"**Final answer:** {value}")


def answer_markdown(answer: str) -> str:
    """The answer part of a reply as the chat shows it, with the final answer line appended when there is one."""
    final = final_answer_markdown(answer)
    return normalize_latex(answer) + (f"\n\n{final}" if final else "")


def _thought_title(thinking_done: bool, thinking_seconds: float | None) -> str:
    if not thinking_done:
        return "Thinking..."
    if thinking_seconds is None:
        return "Thoughts"
    return f"Thought for {thinking_seconds:.1f} s" if thinking_seconds < 10 else f"Thought for {thinking_seconds:.0f} s"


def reply_messages(text: str, thinking_seconds: float | None = None) -> list[dict]:
    """A reply (complete or streaming) as Gradio 6 Chatbot messages (plain dicts).

    With reasoning: first a collapsible thought, `metadata={"title": "Thinking..." | "Thought for N s",
    "status": "pending" | "done"}` (pending shows a spinner and stays open, done starts closed), then the answer.
    The answer message is left out while it is still empty.
    """
    reasoning, answer, thinking_done = split_reasoning(text)
    messages = []
    if reasoning is not None:
        messages.append({
            "role": "assistant",
            "content": normalize_latex(reasoning),
            "metadata": {"title": _thought_title(thinking_done, thinking_seconds),
                         "status": "done" if thinking_done else "pending"},
        })
    if answer:
        messages.append({"role": "assistant", "content": answer_markdown(answer)})
    return messages
