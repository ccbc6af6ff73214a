"""tutor.serving: concurrent replies batched through transformers' continuous batching, against one reply at a time."""

import threading
import time

import pytest
import torch

from tests.test_tutor_models import make_adapter
from tutor import models, serving
from tutor.chat import ChatSettings, stream_reply

pytestmark = pytest.mark.usefixtures("empty_model_cache")

GREEDY = ChatSettings(temperature=0, max_new_tokens=24)
QUESTIONS = ["If 3x + 7 = 22, what is x?", "What is 15% of 80?", "Simplify 3/4 + 1/6.", "What is 7 * 8?"]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def alone(monkeypatch, choice: str, question: str, settings=GREEDY) -> list[str]:
    """What today's path (one generate() per reply) streams."""
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "off")
    chunks = list(stream_reply(choice, ask(question), settings))
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    return chunks


def at_once(jobs: list[tuple], stopping: tuple | None = None) -> list:
    """Run stream_reply(*job) for every job in its own thread, all at once: each one's chunks, or its exception.
    `stopping` is one more (choice, history, settings) whose student presses Stop after the first chunk; its
    chunks come last."""
    results: list = [None] * (len(jobs) + bool(stopping))
    start = threading.Barrier(len(results))

    def student(i):
        start.wait()
        try:
            results[i] = list(stream_reply(*jobs[i]))
        except Exception as exc:  # noqa: BLE001 - the assertions look at it
            results[i] = exc

    def stopping_student():
        stop = threading.Event()
        replies = stream_reply(*stopping, stop)
        start.wait()
        results[-1] = [next(replies)]
        stop.set()
        results[-1] += list(replies)  # the rest, to its end

    threads = [threading.Thread(target=student, args=(i,)) for i in range(len(jobs))]
    threads += [threading.Thread(target=stopping_student)] if stopping else []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def serving_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "batcher" or "_run_generation_loop" in t.name]


def test_batching_mode_comes_from_the_environment(monkeypatch):
    for mode, expected in [("on", True), ("off", False), ("auto", torch.cuda.is_available()), (" ON ", True)]:
        monkeypatch.setenv("MATH_STUDIO_BATCHING", mode)
        assert serving.batching_enabled() is expected
    monkeypatch.setattr(serving.torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "auto")
    assert serving.batching_enabled() is True
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # a GPU lent per call: the batching thread would run outside one
    assert serving.batching_enabled() is False
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "yes")
    with pytest.raises(ValueError, match="auto, on or off"):
        serving.batching_enabled()


def test_cuda_graphs_of_a_batch_come_from_the_environment(monkeypatch):
    for mode, graphs in [("auto", None), ("on", True), ("OFF", False)]:
        monkeypatch.setenv("MATH_STUDIO_BATCH_GRAPHS", mode)
        assert serving.cache_config().use_cuda_graph is graphs
    monkeypatch.setenv("MATH_STUDIO_BATCH_GRAPHS", "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        serving.cache_config()


def test_concurrent_greedy_replies_are_the_same_batched_as_alone(sharp_model_dir, monkeypatch):
    choice = str(sharp_model_dir)
    expected = [alone(monkeypatch, choice, question) for question in QUESTIONS]
    assert len({chunks[-1] for chunks in expected}) == len(QUESTIONS)  # four different replies of several words
    assert all(len(chunks) >= 3 for chunks in expected)

    batched = at_once([(choice, ask(question), GREEDY) for question in QUESTIONS])
    assert batched == expected  # the same text, streamed in the same pieces


def test_a_stopped_reply_ends_while_the_others_complete(sharp_model_dir, monkeypatch):
    from transformers.generation.continuous_batching import ContinuousBatchingManager

    choice = str(sharp_model_dir)
    full = alone(monkeypatch, choice, QUESTIONS[0], ChatSettings(temperature=0, max_new_tokens=100))[-1]
    expected = [alone(monkeypatch, choice, question) for question in QUESTIONS[1:]]
    cancelled, cancel = [], ContinuousBatchingManager.cancel_request
    monkeypatch.setattr(ContinuousBatchingManager, "cancel_request",
                        lambda self, request_id: cancelled.append(request_id) or cancel(self, request_id))

    *others, stopped = at_once([(choice, ask(question), GREEDY) for question in QUESTIONS[1:]],
                               stopping=(choice, ask(QUESTIONS[0]), ChatSettings(temperature=0, max_new_tokens=1500)))
    assert others == expected
    assert len(stopped[-1]) < len(full)  # it ended long before its 1,500 tokens (before the first 100, even)
    assert full.startswith(stopped[-1].rstrip("\ufffd"))  # what it said so far (a character cut short apart)
    assert len(cancelled) == 1  # the manager no longer generates it


def test_an_adapter_and_its_base_served_in_turns_give_what_they_give_alone(sharp_model_dir, tmp_path, monkeypatch):
    base = str(sharp_model_dir)
    adapter = str(make_adapter(sharp_model_dir, tmp_path / "adapter", seed=1))
    jobs = [(choice, question) for question in QUESTIONS[:3] for choice in (base, adapter)]
    expected = {job: alone(monkeypatch, *job) for job in jobs}
    assert all(expected[(base, q)][-1] != expected[(adapter, q)][-1] for q in QUESTIONS[:3])  # the adapter matters

    sampled = ChatSettings(temperature=0.8, top_p=0.9, max_new_tokens=12)  # a turn of its own, in between
    results = at_once([(choice, ask(question), GREEDY) for choice, question in jobs]
                      + [(adapter, ask("Hi"), sampled), (base, ask("Hi"), sampled)])
    assert results[:len(jobs)] == [expected[job] for job in jobs]
    assert all(isinstance(chunks, list) and chunks for chunks in results[len(jobs):])
    assert models.load_model(adapter).base is models.load_model(base).base  # one base: the turns shared its lock


def test_a_batch_takes_no_new_replies_while_someone_waits_for_its_base(sharp_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    base = str(sharp_model_dir)
    adapter = str(make_adapter(sharp_model_dir, tmp_path / "adapter", seed=1))
    long_stop, order = threading.Event(), []
    long_reply = stream_reply(base, ask(QUESTIONS[0]), ChatSettings(temperature=0, max_new_tokens=1500), long_stop)
    next(long_reply)  # a batch is running on the base, holding its lock
    loaded = models.load_model(base)
    attaching = threading.Thread(target=lambda: order.append(("attached", models.load_model(adapter).adapter)))
    attaching.start()  # loading an adapter onto the base waits for its lock
    while not loaded.base.lock.waiting:
        time.sleep(0.01)
    newcomer = threading.Thread(target=lambda: order.append(("reply", next(stream_reply(base, ask("Hi"), GREEDY)))))
    newcomer.start()  # the same choice and mode as the running batch: it could join it, but someone waits
    while not loaded.base.batcher._waiting:  # handed in, not taken
        time.sleep(0.01)
    long_stop.set()
    list(long_reply)
    attaching.join()
    newcomer.join()
    assert [what for what, _ in order] == ["attached", "reply"]  # the adapter went first, then the next batch


def test_no_threads_are_left_after_replies_end_and_the_cache_is_cleared(sharp_model_dir, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    choice = str(sharp_model_dir)
    replies = stream_reply(choice, ask(QUESTIONS[0]), ChatSettings(temperature=0, max_new_tokens=1500))
    next(replies)
    assert serving_threads()  # the batching loop and transformers' generation thread
    replies.close()  # what the web framework does when the student presses Stop
    assert list(stream_reply(choice, ask(QUESTIONS[1]), GREEDY))
    models.clear_cache()
    assert not serving_threads()


def test_a_reply_soon_after_another_reuses_the_running_manager(sharp_model_dir, monkeypatch):
    from transformers.generation.continuous_batching import ContinuousBatchingManager

    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    monkeypatch.setattr(serving, "IDLE_S", 30.0)
    started = []
    start = ContinuousBatchingManager.start
    monkeypatch.setattr(ContinuousBatchingManager, "start", lambda self: started.append(self) or start(self))
    choice = str(sharp_model_dir)
    first = list(stream_reply(choice, ask(QUESTIONS[0]), GREEDY))
    second = list(stream_reply(choice, ask(QUESTIONS[1]), GREEDY))
    assert first and second and len(started) == 1  # the second reply came while the first one's manager idled
    assert serving_threads()  # still idling, 30 s
    models.clear_cache()  # joins the batcher: an idle manager stops at once
    assert not serving_threads()


def test_a_refused_request_is_an_error_not_a_silence(sharp_model_dir, monkeypatch):
    from transformers.generation.continuous_batching import ContinuousBatchingManager

    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    monkeypatch.setattr(ContinuousBatchingManager, "add_request", lambda self, *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="refused this reply"):
        list(stream_reply(str(sharp_model_dir), ask("Hi"), GREEDY))


def test_an_error_in_generation_reaches_every_reader(sharp_model_dir, monkeypatch):
    loaded = models.load_model(str(sharp_model_dir))

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    monkeypatch.setattr(loaded.model.model, "forward", out_of_memory)
    results = at_once([(str(sharp_model_dir), ask(question), GREEDY) for question in QUESTIONS[:2]])
    assert all(isinstance(result, RuntimeError) and "out of memory" in str(result) for result in results)
    monkeypatch.undo()
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    assert list(stream_reply(str(sharp_model_dir), ask("Hi"), GREEDY))  # a fresh manager serves the next one


def test_a_reply_that_could_never_fit_the_cache_is_refused_clearly(sharp_model_dir, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_BATCHING", "on")
    monkeypatch.setattr(serving, "CACHE_TOKENS", 64)  # less than the tutor's system prompt alone
    with pytest.raises(ValueError, match="more than the batching cache holds.*start a new chat"):
        list(stream_reply(str(sharp_model_dir), ask("Hi"), GREEDY))
    assert not serving_threads()


@pytest.mark.slow
def test_the_embedded_model_gives_the_same_replies_batched_as_alone(data_root, monkeypatch):
    choice = "embedded:smollm2-135m-instruct"
    settings = ChatSettings(temperature=0, max_new_tokens=32)
    expected = [alone(monkeypatch, choice, question, settings) for question in QUESTIONS[:3]]
    assert all(chunks[-1].strip() for chunks in expected)
    assert at_once([(choice, ask(question), settings) for question in QUESTIONS[:3]]) == expected
