"""The Tutor's retry, undo and edit keep what the model sees (`turns`) and what the chat shows in step; a
conversation exports as Markdown."""

from pathlib import Path

import gradio as gr
import pytest

import app
from tutor.history import conversation_markdown, rewind

GREEDY = dict(temperature=0, top_p=1, max_new_tokens=8, system_prompt="You are a math tutor.", think_first=False)


def two_exchanges():
    """Two finished exchanges as `respond` leaves them: the second reply has reasoning, so it shows as two messages."""
    turns = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "It is 2."},
             {"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "<think>2 and 3</think>It is 5."}]
    shown = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "It is 2."},
             {"role": "assistant", "content": "notice 1"},
             {"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "2 and 3"},
             {"role": "assistant", "content": "It is 5."}, {"role": "assistant", "content": "notice 2"}]
    return turns, shown


def final(generator):
    """The last message, turns and chat a streamed reply set, and the Send button it left."""
    updates = list(generator)
    *_, (message, turns, shown, _) = [u for u in updates if isinstance(u[1], list)]
    return message, turns, shown, updates[-1][-1]


def test_undo_drops_the_exchange_and_what_follows_and_gives_the_question_back():
    turns, shown = two_exchanges()
    question, kept, displayed = app.undo(turns, shown, gr.UndoData(None, {"index": 3, "value": "2 + 3?"}))
    assert (question, kept, displayed) == ("2 + 3?", turns[:2], shown[:3])
    question, kept, displayed = app.undo(turns, shown, gr.UndoData(None, {"index": 0, "value": "1 + 1?"}))
    assert (question, kept, displayed) == ("1 + 1?", [], [])


def test_rewind_from_a_reply_message_goes_back_to_its_question_and_survives_a_failed_reply():
    turns, shown = two_exchanges()
    assert rewind(turns, shown, 5) == ("2 + 3?", turns[:2], shown[:3])
    failed = [*shown[:3], {"role": "user", "content": "3 + 4?"}]  # the reply raised: the model never saw it
    assert rewind(turns[:2], failed, 3) == ("3 + 4?", turns[:2], shown[:3])


@pytest.mark.slow
def test_retry_replaces_the_last_reply_and_keeps_one_exchange(data_root, tiny_model_dir):
    turns = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "an old reply"}]
    shown = [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "an old reply"},
             {"role": "assistant", "content": "notice"}]
    data = gr.RetryData(None, {"index": 0, "value": "1 + 1?"})
    message, turns, shown, send = final(app.retry(turns, shown, str(tiny_model_dir), *GREEDY.values(), data))
    assert [m["role"] for m in turns] == ["user", "assistant"] and turns[0]["content"] == "1 + 1?"
    assert turns[1]["content"] != "an old reply"
    assert sum(m["role"] == "user" for m in shown) == 1 and "an old reply" not in str(shown)
    assert send.interactive


@pytest.mark.slow
def test_edit_asks_the_edited_question_in_place_of_the_old_one(data_root, tiny_model_dir):
    turns, shown = two_exchanges()
    data = gr.EditData(None, {"index": 0, "value": "7 + 8?", "previous_value": "1 + 1?"})
    message, turns, shown, _ = final(app.edit(turns, shown, str(tiny_model_dir), *GREEDY.values(), data))
    assert [m["content"] for m in turns if m["role"] == "user"] == ["7 + 8?"] and len(turns) == 2
    assert [m["content"] for m in shown if m["role"] == "user"] == ["7 + 8?"]


def test_markdown_export_holds_questions_reasoning_and_replies_in_order():
    turns, _ = two_exchanges()
    text = conversation_markdown(turns)
    assert text.index("## Student\n\n1 + 1?") < text.index("It is 2.") < text.index("2 + 3?") < text.index("It is 5.")
    assert "> 2 and 3" in text and "<think>" not in text
    path = Path(app.export_markdown(turns))
    assert path.suffix == ".md" and path.read_text(encoding="utf-8") == text
    assert path.is_relative_to(Path(app.tempfile.gettempdir()))


@pytest.mark.slow
def test_a_compare_column_streams_one_models_reply_under_the_question(data_root):
    updates = list(app.compare_column("What is 2 + 2?", app.EMBEDDED, *GREEDY.values()))  # a model that answers
    assert len(updates) >= 2 and updates[-1][0] == {"role": "user", "content": "What is 2 + 2?"}
    assert updates[-1][1]["role"] == "assistant" and updates[-1][1]["content"]
