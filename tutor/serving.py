"""Continuous batching of concurrent replies: the students on one model choice share every forward pass.

Each loaded base gets one `Batcher`, whose loop thread runs while replies wait. It serves one turn at a time: a choice
(the base alone, or one of its adapters) and a sampling mode (greedy or sampled: transformers' `do_sample` is
manager-wide). For a turn it holds the base's lock with the right adapter switched on (`Loaded.activated()`), runs a
transformers ContinuousBatchingManager, hands each reply's tokens to its reader, and once idle for IDLE_S stops the
manager and lets go of the lock. While another turn's replies (or anyone else) wait for the base, it takes no new
replies: it finishes those it has and lets them go first, as one reply at a time did.

MATH_STUDIO_BATCHING: `auto` (the default: on with CUDA but not on ZeroGPU, off on a CPU, where one student alone gets a reply a
little later through it), `on` or `off`. MATH_STUDIO_BATCH_TOKENS: the size of a manager's KV cache, in tokens.
MATH_STUDIO_BATCH_IDLE_S: how long an idle manager waits for the next reply before it stops (2 s).
MATH_STUDIO_BATCH_GRAPHS: CUDA graphs in a manager, `auto` (transformers decides), `on` or `off`.
"""

import copy
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import ceil

import torch
from transformers import ContinuousBatchingConfig, TextStreamer

from tutor.chat import ChatSettings
from tutor.models import Base, Loaded

CACHE_TOKENS = int(os.environ.get("MATH_STUDIO_BATCH_TOKENS", str(32 * 2048)))  # 32 replies of 2,048 tokens at once
PAGE_TOKENS = 256  # transformers' default page of the KV cache
BATCH_TOKENS = 2048  # tokens in one forward pass at most: longer prompts prefill over several
POLL_S = 0.05  # how soon the loop sees a new or stopped reply while no token arrives
IDLE_S = float(os.environ.get("MATH_STUDIO_BATCH_IDLE_S", "2"))  # an idle manager waits this long for the next reply
SAMPLING = {"temperature": ChatSettings.temperature, "top_p": ChatSettings.top_p}  # a sampling manager's own: not 1, or replies could not pass their own
GRAPHS = {"auto": None, "on": True, "off": False}  # MATH_STUDIO_BATCH_GRAPHS: CUDA graphs (auto: transformers decides)
STOPPED = object()  # what the loop hands the reader of a reply it cancelled


def batching_enabled() -> bool:
    """Whether replies go through a Batcher (MATH_STUDIO_BATCHING) rather than one generate() each."""
    mode = os.environ.get("MATH_STUDIO_BATCHING", "auto").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"MATH_STUDIO_BATCHING is {mode!r}: set it to auto, on or off.")
    return mode == "on" or (mode == "auto" and torch.cuda.is_available() and not on_zero_gpu())


def on_zero_gpu() -> bool:
    """True on ZeroGPU hardware, which sets SPACES_ZERO_GPU (read as Hugging Face's `spaces` package reads it). There
    a GPU is lent per `spaces.GPU` call, and the batching loop's thread runs outside any call: batching stays off."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


@dataclass(eq=False)
class Request:
    """One reply to generate, and the queue its reader takes the outputs (or an exception, or STOPPED) from."""

    loaded: Loaded
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: dict  # this reply's temperature and top_p; empty for greedy
    stop: threading.Event
    outputs: queue.Queue = field(default_factory=queue.Queue)

    @property
    def turn(self) -> tuple[str | None, bool]:
        """Replies that can share a manager: the same adapter (None: the base alone) and the same mode."""
        return self.loaded.adapter, bool(self.sampling)


def stream_batched(loaded: Loaded, prompt_ids: list[int], settings, stop: threading.Event,
                   opening: str = "") -> Iterator[str]:
    """Yield `opening` plus the reply so far to `prompt_ids`, generated in a batch with the other students' replies.

    `settings` is a tutor.chat.ChatSettings (temperature 0 is greedy). Setting `stop` or closing this generator
    cancels the reply; an error in generation is raised here.
    """
    if len(prompt_ids) + settings.max_new_tokens > CACHE_TOKENS:  # it could never fit, and would fail the batch
        raise ValueError(f"This conversation and its reply need {len(prompt_ids) + settings.max_new_tokens:,} tokens, "
                         f"more than the batching cache holds ({CACHE_TOKENS:,}, MATH_STUDIO_BATCH_TOKENS): start a "
                         "new chat or lower max new tokens.")
    sampling = {"temperature": float(settings.temperature), "top_p": float(settings.top_p)}
    request = Request(loaded, list(prompt_ids), settings.max_new_tokens,
                      sampling if not settings.greedy else {}, stop)
    batcher(loaded.base).submit(request)
    text = ReplyText(loaded.tokenizer)
    try:
        while True:
            output = request.outputs.get()
            if isinstance(output, BaseException):
                raise output
            if output is not STOPPED:
                if output.error is not None:
                    raise RuntimeError(f"Generating the reply failed: {output.error}")
                yield from text.add(output.generated_tokens, opening)
            if output is STOPPED or output.is_finished():
                yield from text.finish(opening)
                return
    finally:
        stop.set()  # the loop cancels the reply if it is still running


class ReplyText(TextStreamer):
    """A reply's text, decoded as TextIteratorStreamer does: a word at a time, multi-byte characters once whole."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_special_tokens=True)
        self.text, self.tokens = "", 0

    def add(self, generated: list[int], opening: str) -> Iterator[str]:
        """Take the reply's tokens so far one at a time, as generate() hands them to its streamer; yield `opening`
        plus the text so far whenever it grows."""
        for token in generated[self.tokens:]:
            before, self.tokens = self.text, self.tokens + 1
            self.put(torch.tensor([token]))
            if self.text != before:
                yield opening + self.text

    def finish(self, opening: str) -> Iterator[str]:
        """The last word, held back until now."""
        before = self.text
        self.end()
        if self.text != before:
            yield opening + self.text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text


_lock = threading.Lock()  # guards giving a base its batcher


def batcher(base: Base) -> "Batcher":
    with _lock:
        if base.batcher is None:
            base.batcher = Batcher(base)
        return base.batcher


class Batcher:
    """The batched replies of one base: a loop thread while any wait, serving one turn (choice and mode) at a time."""

    def __init__(self, base: Base):
        self.base = base
        self._lock = threading.Lock()  # guards the two below
        self._waiting: list[Request] = []
        self._loop: threading.Thread | None = None
        self._closing = threading.Event()  # join() is waiting: an idle manager stops at once

    def submit(self, request: Request) -> None:
        with self._lock:
            self._waiting.append(request)
            if self._loop is None:
                self._loop = threading.Thread(target=self._run, name="batcher", daemon=True)
                self._loop.start()

    def join(self) -> None:
        """Wait until the replies handed in so far have ended and the loop has stopped its manager and ended."""
        with self._lock:
            loop = self._loop
        if loop is not None:
            self._closing.set()
            loop.join()
            self._closing.clear()

    def _run(self) -> None:
        last = None
        while True:
            while self.base.lock.waiting:  # someone else (an evaluation, an adapter loading) has the base first
                time.sleep(POLL_S)
            with self._lock:
                if not self._waiting:
                    self._loop = None
                    return
                turns = [request.turn for request in self._waiting]
            last = next((turn for turn in turns if turn != last), turns[0])  # the oldest other turn goes next
            running: dict[str, Request] = {}
            try:
                self._serve(last, running)
            except BaseException as exc:  # this turn's replies get it, and their readers raise it
                for request in [*running.values(), *self._take(last)]:
                    request.outputs.put(exc)

    def _serve(self, turn: tuple[str | None, bool], running: dict[str, "Request"]) -> None:
        """One turn: a manager for it, fed its replies until others wait for the base, stopped once idle."""
        with self._lock:
            loaded = next(request.loaded for request in self._waiting if request.turn == turn)
        with loaded.activated() as model:
            manager = model.init_continuous_batching(generation_config=generation_config(model, sampled=turn[1]),
                                                     continuous_batching_config=cache_config())
            manager.start()
            try:
                self._admit(manager, turn, running)  # the turn's replies waiting now
                idle_since = None
                while True:
                    self._cancel_stopped(manager, running)
                    if not running:  # keep the manager a while: the class asks again soon, a new one starts slowly
                        idle_since = idle_since or time.monotonic()
                        if (time.monotonic() - idle_since >= IDLE_S or self._closing.is_set()
                                or not manager.is_running() or self._others_wait(turn)):
                            return
                        time.sleep(POLL_S)
                        self._admit(manager, turn, running)
                        continue
                    idle_since = None
                    self._route(manager.get_result(timeout=POLL_S), manager, running)
                    if manager.is_running() and not self._others_wait(turn):  # else it drains (or it failed)
                        self._admit(manager, turn, running)  # replies that came meanwhile
            finally:
                manager.stop(block=True)

    def _take(self, turn) -> list[Request]:
        with self._lock:
            taken = [request for request in self._waiting if request.turn == turn]
            self._waiting = [request for request in self._waiting if request.turn != turn]
        return taken

    def _others_wait(self, turn) -> bool:
        """Whether another turn's replies, or anyone else, wait for the base."""
        with self._lock:
            return bool(self.base.lock.waiting) or any(request.turn != turn for request in self._waiting)

    def _admit(self, manager, turn, running: dict[str, Request]) -> None:
        """Hand this turn's waiting replies to the manager. Each stays in the waiting list until it is handed over,
        so an error on the way reaches it (see _run)."""
        with self._lock:
            waiting = [request for request in self._waiting if request.turn == turn]
        for request in waiting:
            if request.stop.is_set():  # stopped while it waited for its turn
                request.outputs.put(STOPPED)
            else:
                request_id = manager.add_request(request.prompt_ids, max_new_tokens=request.max_new_tokens,
                                                 streaming=True, **request.sampling)
                if request_id is None:
                    request.outputs.put(RuntimeError("The batching server refused this reply: its generation loop "
                                                     "is stopping or has failed. Ask again."))
                else:
                    running[request_id] = request
            with self._lock:
                self._waiting.remove(request)

    @staticmethod
    def _cancel_stopped(manager, running: dict[str, Request]) -> None:
        for request_id, request in list(running.items()):
            if request.stop.is_set():
                manager.cancel_request(request_id)
                del running[request_id]
                request.outputs.put(STOPPED)

    @staticmethod
    def _route(output, manager, running: dict[str, Request]) -> None:
        """Hand one output to its reader; a reply cancelled meanwhile has none."""
        if output is None:
            if not manager.is_running():
                raise RuntimeError("The batching loop ended before its replies did.")
            return
        request = running.get(output.request_id)
        if request is None:
            return
        request.outputs.put(output)
        if output.is_finished():
            del running[output.request_id]


def generation_config(model, sampled: bool):
    """The model's own generation settings, greedy or sampling as generate() would use them."""
    config = copy.deepcopy(model.generation_config)
    if sampled:  # top_k: generate()'s default when the model sets none
        config.update(do_sample=True, top_k=50 if config.top_k is None else config.top_k, **SAMPLING)
    else:
        config.update(do_sample=False)
    return config


def cache_config() -> ContinuousBatchingConfig:
    """A KV cache of CACHE_TOKENS: transformers would otherwise take most of the free memory (60% of the RAM on a
    CPU), leaving none to another base, an evaluation or a training job."""
    graphs = os.environ.get("MATH_STUDIO_BATCH_GRAPHS", "auto").strip().lower()
    if graphs not in GRAPHS:
        raise ValueError(f"MATH_STUDIO_BATCH_GRAPHS is {graphs!r}: set it to auto, on or off.")
    return ContinuousBatchingConfig(page_size=PAGE_TOKENS, num_blocks=ceil(CACHE_TOKENS / PAGE_TOKENS),
                                    max_batch_tokens=BATCH_TOKENS, per_request_processors=True,
                                    use_cuda_graph=GRAPHS[graphs])
