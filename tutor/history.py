"""The Tutor's two histories kept in step: `turns` (what the model sees, one user and one assistant message per
exchange) and `shown` (what the chat displays: the question, then one or more reply messages and a notice).

Retry, undo and edit all start from the same cut: back to the user message of an exchange, dropping it and
everything after it from both histories."""

from tutor.render import split_reasoning


def rewind(turns: list[dict], shown: list[dict], index: int) -> tuple[str, list[dict], list[dict]]:
    """The question of the exchange holding displayed message `index`, and both histories from before it.

    An exchange whose reply failed is in `shown` but not in `turns`: its question then comes from the display."""
    start = max((i for i, m in enumerate(shown[:index + 1]) if m["role"] == "user"), default=0)
    exchange = sum(m["role"] == "user" for m in shown[:start])
    kept = turns[:2 * exchange]
    question = turns[2 * exchange]["content"] if len(turns) > 2 * exchange else shown[start]["content"] if shown else ""
    return question, kept, shown[:start]


def conversation_markdown(turns: list[dict]) -> str:
    """The conversation as Markdown: each question, the tutor's reasoning (if any) quoted, then its reply."""
    parts = ["# Math tutor conversation"]
    for message in turns:
        if message["role"] == "user":
            parts.append(f"## Student\n\n{message['content']}")
            continue
        reasoning, answer, _ = split_reasoning(message["content"])
        quoted = "\n".join(f"> {line}" for line in (reasoning or "").strip().splitlines())
        parts.append("## Tutor\n\n" + (f"{quoted}\n\n" if quoted else "") + answer.strip())
    return "\n\n".join(parts) + "\n"
