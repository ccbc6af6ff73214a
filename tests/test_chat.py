"""tutor.chat: streamed replies, stopping, history through the chat template, over-long prompts."""

import threading

import pytest
import torch

from tutor import models
from tutor.chat import ChatSettings, PromptTooLongError, build_messages, encode, fit_prompt, stream_reply
from tutor.models import load_model

GREEDY = ChatSettings(temperature=0, max_new_tokens=24)


@pytest.fixture(autouse=True)
def empty_cache():
    models.clear_cache()
    yield
    models.clear_cache()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def reply_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stream_reply"]


def test_stream_yields_growing_text_equal_to_plain_greedy_generation(tiny_model_dir):
    choice = str(tiny_model_dir)
    chunks = list(stream_reply(choice, ask("If 3x + 7 = 22, what is x?"), GREEDY))
    assert len(chunks) >= 3
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(chunks, chunks[1:]))

    loaded = load_model(choice)
    messages = build_messages(ask("If 3x + 7 = 22, what is x?"), GREEDY.system_prompt)
    ids = encode(loaded.tokenizer, messages)
    with loaded.activated() as model:
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    assert chunks[-1] == loaded.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_sampling_settings_stream_too(tiny_model_dir):
    settings = ChatSettings(temperature=0.8, top_p=0.9, max_new_tokens=8, system_prompt="")
    chunks = list(stream_reply(str(tiny_model_dir), ask("Hi"), settings))
    assert chunks and chunks[-1]


def test_setting_stop_ends_generation_and_its_thread(tiny_model_dir):
    stop = threading.Event()
    replies = stream_reply(str(tiny_model_dir), ask("Count to a million."), ChatSettings(temperature=0, max_new_tokens=1500), stop)
    first = next(replies)
    stop.set()
    rest = list(replies)
    final = (rest or [first])[-1]
    full = list(stream_reply(str(tiny_model_dir), ask("Count to a million."), ChatSettings(temperature=0, max_new_tokens=1500)))[-1]
    assert len(final) < len(full) / 4
    assert not reply_threads()


def test_closing_the_stream_stops_generation(tiny_model_dir):
    replies = stream_reply(str(tiny_model_dir), ask("Count to a million."), ChatSettings(temperature=0, max_new_tokens=1500))
    next(replies)
    replies.close()  # what a web framework does when the user cancels
    assert not reply_threads()


def test_errors_in_generation_reach_the_reader(tiny_model_dir, monkeypatch):
    loaded = load_model(str(tiny_model_dir))

    def broken_generate(**kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(loaded.base.model, "generate", broken_generate)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(stream_reply(str(tiny_model_dir), ask("Hi"), GREEDY))
    assert not reply_threads()


def test_history_goes_through_the_chat_template_in_order(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    history = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 4."}]},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    text = loaded.tokenizer.decode(fit_prompt(loaded, build_messages(history, "Be brief."), 64))
    order = [text.index(part) for part in ("Be brief.", "What is 2 + 2?", "It is 4.", "And 3 + 3?")]
    assert order == sorted(order)
    assert text.rstrip().endswith("assistant")  # the generation prompt opens the tutor's turn
    with pytest.raises(ValueError, match="end with the student"):
        build_messages(history[:2], "")


def test_long_history_drops_the_oldest_turns_to_fit(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))  # a 2048-token context
    history = []
    for turn in range(12):
        history += [{"role": "user", "content": f"Question {turn}: " + "seven " * 150},
                    {"role": "assistant", "content": f"Answer {turn}: " + "eight " * 150}]
    history.append({"role": "user", "content": "Final question: what is 6 * 7?"})
    ids = fit_prompt(loaded, build_messages(history, "SYSTEM PROMPT"), max_new_tokens=512)
    text = loaded.tokenizer.decode(ids)
    assert len(ids) <= 2048 - 512
    assert "SYSTEM PROMPT" in text and "Final question" in text and "Answer 11:" in text
    assert "Question 0:" not in text and "Answer 0:" not in text
    kept = [turn for turn in range(12) if f"Question {turn}:" in text]
    assert kept == list(range(kept[0], 12)) and all(f"Answer {t}:" in text for t in kept)  # whole, latest turns


def test_a_question_longer_than_the_context_is_refused_clearly(tiny_model_dir):
    huge = "Add up these numbers: " + "12345 " * 16_700  # about 100,000 characters
    with pytest.raises(PromptTooLongError, match="too long for this model.*Shorten"):
        next(stream_reply(str(tiny_model_dir), ask(huge), GREEDY))
    assert not reply_threads()


def test_fitting_a_long_history_encodes_each_turn_about_once(tiny_model_dir):
    """2,000 empty exchanges: the oldest are dropped by counting, not by encoding the conversation again per drop
    (which took minutes: the cost grew with the square of the turns)."""
    loaded = load_model(str(tiny_model_dir))
    history = [m for _ in range(2000) for m in ({"role": "user", "content": ""}, {"role": "assistant", "content": ""})]
    messages = build_messages([*history, {"role": "user", "content": "What is 6 * 7?"}], "SYSTEM PROMPT")
    rendered = []
    template = loaded.tokenizer.apply_chat_template
    loaded.tokenizer.apply_chat_template = lambda conversation, **kwargs: (
        rendered.append(len(conversation)) or template(conversation, **kwargs))
    try:
        ids = fit_prompt(loaded, messages, max_new_tokens=512)
    finally:
        del loaded.tokenizer.apply_chat_template
    assert len(ids) <= 2048 - 512 and len(ids) > 2048 - 512 - 40  # as many turns as fit are kept
    assert "What is 6 * 7?" in loaded.tokenizer.decode(ids)
    assert sum(rendered) <= 2 * len(messages)  # messages put through the chat template, over all encodes
