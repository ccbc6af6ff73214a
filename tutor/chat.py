"""Streamed tutor replies: history through the model's own chat template, token by token, stoppable.

`stream_reply` is the single entry point for chatting (the UI and the `/chat` API): it generates here with
`generate()`, in a batch with other replies (tutor/serving.py), or on the tutor server (tutor/remote.py).
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainer.config import TUTOR_PROMPT
from trainer.models import Kind, ModelChoice
from tutor.models import Loaded, load_model


THINK_OPEN = "<think>\n"


# Bounds on what one request may ask for: beyond them a student gets a message instead of a stuck server.
MAX_QUESTION_CHARS = 20_000  # about 5,000 tokens: more than the embedded model's context leaves for a question
MAX_CONVERSATION_CHARS = 200_000  # all earlier turns sent with a question
MAX_CONVERSATION_TURNS = 400  # messages (200 exchanges): empty turns cost no characters but tokens and time
MAX_NEW_TOKENS = 2048


class ChatInputError(ValueError):
    """A question, conversation or setting the tutor refuses, with what to change."""


class PromptTooLongError(ValueError):
    """The latest question alone does not fit the model's context."""


@dataclass
class ChatSettings:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    max_new_tokens: int = 512
    system_prompt: str = TUTOR_PROMPT
    think_first: bool = False  # open the reply with <think>, as this app's adapters were trained to

    @property
    def greedy(self) -> bool:
        """Temperature 0 means greedy decoding (the one place that rule is written)."""
        return self.temperature <= 0


class StopOnEvent:
    """A StoppingCriteria that ends generation once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def checked_question(message) -> str:
    if not isinstance(message, str) or not message.strip():
        raise ChatInputError("Type a question first.")
    if len(message) > MAX_QUESTION_CHARS:
        raise ChatInputError(f"The question has {len(message):,} characters; at most {MAX_QUESTION_CHARS:,} fit. "
                       "Shorten it.")
    return message


def checked_turns(history) -> list[dict]:
    """The conversation so far as role/content dicts, or a ChatInputError saying what is wrong with it."""
    turns = history or []
    if not isinstance(turns, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in turns):
        raise ChatInputError('history must be a list of {"role": "user" or "assistant", "content": text} messages.')
    if len(turns) > MAX_CONVERSATION_TURNS or sum(len(m["content"]) for m in turns) > MAX_CONVERSATION_CHARS:
        raise ChatInputError("This conversation is too long to go on: start a new chat.")
    return [{"role": m["role"], "content": m["content"]} for m in turns]


def checked_settings(temperature, top_p, max_new_tokens, system_prompt, think_first) -> ChatSettings:
    try:
        settings = ChatSettings(float(temperature), float(top_p), int(max_new_tokens), system_prompt or TUTOR_PROMPT,
                                bool(think_first))
    except (TypeError, ValueError, OverflowError):
        raise ChatInputError("temperature and top_p must be numbers, and max_new_tokens a whole number.") from None
    temperature, top_p, max_new_tokens = settings.temperature, settings.top_p, settings.max_new_tokens
    if not (0 <= temperature <= 2 and 0 < top_p <= 1 and 1 <= max_new_tokens <= MAX_NEW_TOKENS):
        raise ChatInputError(f"Use a temperature from 0 to 2, a top_p above 0 and up to 1, and max_new_tokens from 1 to "
                       f"{MAX_NEW_TOKENS}.")
    if not isinstance(settings.system_prompt, str) or len(settings.system_prompt) > MAX_QUESTION_CHARS:
        raise ChatInputError(f"The system prompt must be text of at most {MAX_QUESTION_CHARS:,} characters.")
    return settings


def stream_reply(
    choice: "str | ModelChoice", history: list[dict], settings: ChatSettings | None = None, stop: threading.Event | None = None
) -> Iterator[str]:
    """Yield the reply so far (cumulative text) to the conversation `history`, whose last message is the student's.

    Setting `stop` (or closing this generator) ends generation; the text so far is what was yielded last.
    """
    choice = ModelChoice.parse(choice)
    if choice.kind is Kind.REMOTE:  # a model of the OpenAI-compatible tutor server: see tutor/remote.py
        from tutor.remote import stream_remote

        settings = settings or ChatSettings()
        opening = [{"role": "assistant", "content": THINK_OPEN}] if settings.think_first else []  # vLLM continues it
        yield from stream_remote(choice.ref, build_messages(history, settings.system_prompt)
                                 + opening, settings, stop or threading.Event())
        return
    from transformers import TextIteratorStreamer

    settings = settings or ChatSettings()
    stop = stop or threading.Event()
    loaded = load_model(choice)
    prompt_ids = fit_prompt(loaded, build_messages(history, settings.system_prompt), settings.max_new_tokens)
    opening = THINK_OPEN if settings.think_first else ""
    prompt_ids += loaded.tokenizer(opening, add_special_tokens=False)["input_ids"] if opening else []
    from tutor.serving import batching_enabled, stream_batched

    if batching_enabled():  # in one batch with the other students' replies on this model: see tutor/serving.py
        yield from stream_batched(loaded, prompt_ids, settings, stop, opening)
        return
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            with loaded.activated() as model:
                if stop.is_set():  # stopped while waiting for another student's reply on this base
                    streamer.end()
                    return
                input_ids = torch.tensor([prompt_ids], device=model.device)
                model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                    stopping_criteria=[StopOnEvent(stop)], **sampling_kwargs(loaded, settings),
                )
        except BaseException as exc:  # handed to the reader below, which raises it
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=generate, name="stream_reply", daemon=True)
    thread.start()
    reply = opening
    try:
        for piece in streamer:
            if piece:
                reply += piece
                yield reply
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]


def complete_reply(choice: str, history: list[dict], settings: ChatSettings | None = None) -> str:
    """The whole reply at once: stream_reply run to its end."""
    reply = ""
    for reply in stream_reply(choice, history, settings):
        pass
    return reply


def sampling_kwargs(loaded: Loaded, settings: ChatSettings) -> dict:
    """generate() arguments for the settings."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": loaded.tokenizer.pad_token_id}
    if not settings.greedy:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(do_sample=False)
    return kwargs


def build_messages(history: list[dict], system_prompt: str) -> list[dict]:
    """Chat-template messages: the system prompt (when given) and each turn's role and text."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    for message in history:
        messages.append({"role": message["role"], "content": message_text(message["content"])})
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with the student's message.")
    return messages


def message_text(content) -> str:
    """A message's text, whether it is a string or a list of parts such as {"type": "text", "text": ...}."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "")
    return "".join(message_text(part) for part in content)


def encode(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the conversation through the model's chat template, ready for the assistant's turn."""
    if not tokenizer.chat_template:
        raise ValueError("This model has no chat template: pick an instruction-tuned (chat) model.")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def context_length(model) -> int:
    config = model.config.get_text_config()
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def fit_prompt(loaded: Loaded, messages: list[dict], max_new_tokens: int) -> list[int]:
    """The prompt's token ids, dropping the oldest turns until it leaves room for `max_new_tokens`.

    Linear in the conversation: each turn's text is tokenized once, and the turns to drop are counted from those
    sizes; only prompts about the size of the context are encoded again (once or twice), never the whole one per turn.
    """
    budget = context_length(loaded.model) - max_new_tokens
    if budget <= 0:
        raise PromptTooLongError(
            f"max_new_tokens = {max_new_tokens} leaves no room for the question in this model's "
            f"{context_length(loaded.model)}-token context; lower it."
        )
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    ids = encode(loaded.tokenizer, system + turns)
    if len(ids) <= budget:
        return ids
    sizes = turn_sizes(loaded.tokenizer, system, turns, len(ids))
    start = 0
    while len(ids) > budget:
        if start == len(turns) - 1:
            raise PromptTooLongError(
                f"The question is too long for this model: {len(ids)} tokens with the system prompt, but only "
                f"{budget} fit ({context_length(loaded.model)}-token context minus {max_new_tokens} for the reply). "
                "Shorten the question or lower max new tokens."
            )
        start = drop_oldest_turns(turns, sizes, start, len(ids) - budget)
        ids = encode(loaded.tokenizer, system + turns[start:])
    return ids


def turn_sizes(tokenizer, system: list[dict], turns: list[dict], total: int) -> list[float]:
    """About how many of the conversation's `total` tokens each turn takes: its text's tokens, plus the template's
    tokens around a message (the conversation less its last turn and the text of the others, shared out)."""
    texts = tokenizer([message_text(m["content"]) for m in turns], add_special_tokens=False)["input_ids"]
    sizes = [len(ids) for ids in texts]
    if len(turns) < 2:
        return sizes
    last_alone = len(encode(tokenizer, system + turns[-1:]))
    around = max(0.0, (total - last_alone - sum(sizes[:-1])) / (len(turns) - 1))
    return [size + around for size in sizes]


def drop_oldest_turns(turns: list[dict], sizes: list[float], start: int, excess: int) -> int:
    """Where the conversation starts once the oldest turns from `start` on covering `excess` tokens (at least one
    turn) are dropped; it still starts with a student's message, and keeps the last one."""
    dropped = 0
    while start < len(turns) - 1 and (dropped < excess or turns[start]["role"] != "user"):
        dropped += sizes[start]
        start += 1
    return start
