"""The tutor on an OpenAI-compatible server: a real HTTP server on 127.0.0.1 stands in for vLLM, serving /v1/models
and streaming /v1/chat/completions as server-sent events, and records every request it receives."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.browser import app_env, app_server, free_port
from trainer.config import TUTOR_PROMPT
from tutor import remote
from tutor.chat import ChatSettings, stream_reply
from tutor.models import EMBEDDED, list_choices

KEY = "sk-tutor-secret-4711"
MODELS = ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "algebra-lora"]
CHUNKS = ["Let ", "x = ", "5", ", since 3·5 + 7 = 22."]
QUESTION = [{"role": "user", "content": "If 3x + 7 = 22, what is x?"}]


def chunk(content: str | None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


class StandIn(ThreadingHTTPServer):
    """An OpenAI-compatible server, as vLLM answers: set `chat_status`/`chat_error` to fail, `lines` to send exactly
    those lines, `endless` to go on streaming until the client hangs up (then `hung_up` is set), `stalled` to fall
    silent after the lines."""

    daemon_threads = True

    def __init__(self, key: str = ""):
        super().__init__(("127.0.0.1", 0), Handler)
        self.key, self.models, self.chunks = key, list(MODELS), list(CHUNKS)
        self.chat_status, self.chat_error = 200, {}
        self.lines: list[str] | None = None
        self.endless = False
        self.hung_up = threading.Event()
        self.stalled = False  # send the reply lines, then nothing until `release` is set
        self.release = threading.Event()
        self.requests: list[dict] = []  # {"method", "path", "headers", "body"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply_lines(self) -> list[str]:
        if self.lines is not None:
            return self.lines
        first = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"},
                                                    "finish_reason": None}]})
        if self.endless:  # the first piece, then more for 30 s unless the client hangs up, and no end
            return [first, chunk(self.chunks[0])]
        return [first, *[chunk(c) for c in self.chunks], chunk(None, "stop"), "data: [DONE]"]


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, *args):
        pass

    def record(self, body=None) -> None:
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": body})

    def refused(self) -> bool:
        """Answer 401, quoting the key it got as a careless server might, unless the right key came."""
        got = self.headers.get("Authorization", "")
        if not self.server.key or got == f"Bearer {self.server.key}":
            return False
        self.send_json(401, {"error": {"message": f"Invalid API key {got!r}", "type": "Unauthorized", "code": 401}})
        return True

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.record()
        if self.refused():
            return
        if self.path != "/v1/models":
            return self.send_json(404, {"detail": "Not Found"})
        self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.record(body)
        if self.refused():
            return
        if self.server.chat_status != 200:
            return self.send_json(self.server.chat_status, self.server.chat_error)
        if body["model"] not in self.server.models:  # older vLLM's error shape
            return self.send_json(404, {"object": "error", "message": f"The model `{body['model']}` does not exist.",
                                        "type": "NotFoundError", "code": 404})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        try:
            for line in self.server.reply_lines():
                self.send_line(line)
            for _ in range(3000 if self.server.endless else 0):
                self.send_line(chunk("and so on "))
                time.sleep(0.01)
            if self.server.stalled:
                self.server.release.wait(60)
        except (BrokenPipeError, ConnectionResetError):
            self.server.hung_up.set()

    def send_line(self, line: str) -> None:
        self.wfile.write(f"{line}\n\n".encode())
        self.wfile.flush()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A stand-in server the tutor is pointed at (with a key), and an empty data root."""
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setattr(remote, "_models", {})  # no model list cached by another test
    stand_in = StandIn(key=KEY)
    threading.Thread(target=stand_in.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv(remote.URL_VAR, stand_in.url)
    monkeypatch.setenv(remote.KEY_VAR, KEY)
    yield stand_in
    stand_in.release.set()
    stand_in.shutdown()
    stand_in.server_close()


def chats(server: StandIn) -> list[dict]:
    return [r for r in server.requests if r["path"] == "/v1/chat/completions"]


def error_of(choice: str, settings: ChatSettings | None = None) -> str:
    with pytest.raises(remote.RemoteError) as failure:
        list(stream_reply(choice, QUESTION, settings))
    return str(failure.value)


def test_the_picker_lists_the_server_models_after_the_local_ones(server):
    choices = list_choices()
    assert choices[0][1] == EMBEDDED
    assert [value for _, value in choices[1:]] == [f"remote:{m}" for m in MODELS]
    assert "algebra-lora (tutor server)" in [label for label, _ in choices]
    list_choices()
    assert len([r for r in server.requests if r["path"] == "/v1/models"]) == 1  # the list is cached briefly


def test_no_url_no_remote_choices(server, monkeypatch):
    monkeypatch.delenv(remote.URL_VAR)
    assert [value for _, value in list_choices()] == [EMBEDDED]
    assert server.requests == []
    assert "MATH_STUDIO_OPENAI_URL" in error_of("remote:algebra-lora")


def test_a_reply_streams_as_growing_text_with_the_prompt_and_settings(server):
    settings = ChatSettings(temperature=0.3, top_p=0.8, max_new_tokens=77, system_prompt="Be a kind tutor.")
    replies = list(stream_reply("remote:algebra-lora", QUESTION, settings))
    assert replies == ["".join(CHUNKS[:i]) for i in range(1, len(CHUNKS) + 1)]
    (request,) = chats(server)
    body = request["body"]
    assert body["model"] == "algebra-lora" and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Be a kind tutor."}, *QUESTION]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.8, 77)
    assert "continue_final_message" not in body


def test_the_default_settings_send_the_tutor_prompt(server):
    assert list(stream_reply("remote:algebra-lora", QUESTION))[-1] == "".join(CHUNKS)
    (request,) = chats(server)
    assert request["body"]["messages"][0] == {"role": "system", "content": TUTOR_PROMPT}
    assert request["body"]["max_tokens"] == ChatSettings().max_new_tokens


def test_think_first_asks_the_server_to_continue_an_opened_thought(server):
    replies = list(stream_reply("remote:algebra-lora", QUESTION, ChatSettings(think_first=True)))
    assert replies[-1] == "<think>\n" + "".join(CHUNKS)
    body = chats(server)[0]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_the_key_goes_only_in_the_authorization_header(server, caplog):
    caplog.set_level(logging.DEBUG)
    replies = list(stream_reply("remote:algebra-lora", QUESTION))
    list_choices()
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions", "/v1/models"}
    for request in server.requests:
        assert request["headers"]["Authorization"] == f"Bearer {KEY}"
        others = {k: v for k, v in request["headers"].items() if k != "Authorization"}
        assert KEY not in json.dumps([request["path"], others, request["body"]])
    assert not [r for r in replies if KEY in r]
    assert KEY not in caplog.text


def test_a_wrong_key_says_so_without_showing_either_key(server, monkeypatch, caplog):
    monkeypatch.setenv(remote.KEY_VAR, "sk-wrong-key-1234")
    message = error_of("remote:algebra-lora")
    assert "the key is wrong" in message and "HTTP 401" in message
    assert "sk-wrong-key-1234" not in message and KEY not in message
    assert [value for _, value in list_choices()] == [EMBEDDED]  # the picker still lists the local models
    assert "the key is wrong" in caplog.text and "sk-wrong-key-1234" not in caplog.text
    monkeypatch.delenv(remote.KEY_VAR)
    assert f"needs a key (HTTP 401): set {remote.KEY_VAR}" in error_of("remote:algebra-lora")  # no key at all


def test_a_server_quoting_the_key_is_not_repeated(server):
    server.chat_status, server.chat_error = 500, {"error": {"message": f"failed for Bearer {KEY}"}}
    message = error_of("remote:algebra-lora")
    assert "failed for Bearer [key]" in message and KEY not in message


def test_an_unknown_model_lists_what_the_server_has(server):
    message = error_of("remote:geometry-lora")
    assert "no model 'geometry-lora'" in message
    assert all(model in message for model in MODELS)


def test_a_conversation_too_long_for_the_server_says_what_to_do(server):
    server.chat_status, server.chat_error = 400, {"object": "error", "type": "BadRequestError", "code": 400, "message":
        "This model's maximum context length is 2048 tokens. However, you requested 2600 tokens."}
    message = error_of("remote:algebra-lora")
    assert "too long" in message and "2048 tokens" in message and "lower max new tokens" in message


def test_a_failing_server_says_it_failed(server):
    server.chat_status, server.chat_error = 500, {"error": {"message": "CUDA error: an illegal memory access"}}
    message = error_of("remote:algebra-lora")
    assert "failed (HTTP 500: CUDA error: an illegal memory access)" in message and "Ask again" in message


@pytest.mark.parametrize("lines, words", [
    (["data: {not json"], "cannot read"),
    ([chunk("Let "), "data: {\"choices\": [{\"delta\": {\"content\": 5}}]}"], "cannot read"),
    (["<html>Bad gateway</html>"], "not server-sent events"),
    ([chunk("Let "), 'data: {"error": {"message": "engine died"}}'], "failed during the reply: engine died"),
    ([chunk("Let ")], "broke off"),  # the stream ended before finishing
])
def test_a_malformed_or_cut_stream_says_so(server, lines, words):
    server.lines = lines
    assert words in error_of("remote:algebra-lora")


def test_an_unreachable_server_says_so_and_the_picker_keeps_the_local_models(server, monkeypatch, caplog):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    monkeypatch.setenv(remote.URL_VAR, url)
    message = error_of("remote:algebra-lora")
    assert f"The tutor server at {url} cannot be reached" in message and remote.URL_VAR in message
    with pytest.raises(remote.RemoteError, match="cannot be reached"):
        remote.remote_models()
    assert [value for _, value in list_choices()] == [EMBEDDED]
    (record,) = [r for r in caplog.records if r.name == "tutor.remote"]
    assert "cannot be reached" in record.getMessage() and record.exc_info is None  # a message, not a stack trace


def test_a_server_that_falls_silent_mid_reply_says_so(server, monkeypatch):
    monkeypatch.setattr(remote, "CHAT_TIMEOUT", httpx.Timeout(0.5, connect=5.0))
    server.lines, server.stalled = [chunk("Let ")], True
    assert "cannot be reached: it stopped answering" in error_of("remote:algebra-lora")


def test_a_wrong_path_says_where_the_url_should_end(server, monkeypatch):
    monkeypatch.setenv(remote.URL_VAR, server.url.removesuffix("/v1"))
    with pytest.raises(remote.RemoteError, match="ending in /v1"):
        remote.remote_models()


def test_stop_mid_stream_ends_the_reply_and_closes_the_connection(server):
    server.endless = True
    stop = threading.Event()
    replies = stream_reply("remote:algebra-lora", QUESTION, stop=stop)
    first = next(replies)
    stop.set()
    assert list(replies) == []  # nothing more once stopped
    assert first == CHUNKS[0]
    assert server.hung_up.wait(60)  # the server saw the connection closed while it was still streaming


def test_closing_the_generator_closes_the_connection(server):
    server.endless = True
    replies = stream_reply("remote:algebra-lora", QUESTION)
    assert next(replies) == CHUNKS[0]
    replies.close()
    assert server.hung_up.wait(60)


def test_students_may_pick_listed_server_models_only(server, monkeypatch):
    import gradio as gr

    from app import checked_model

    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "teach")
    assert checked_model("remote:algebra-lora") == "remote:algebra-lora"
    with pytest.raises(gr.Error, match="not one of this class's models"):
        checked_model("remote:some-other-model")


def test_the_chat_function_streams_a_server_reply(server):
    from app import chat

    replies = list(chat("If 3x + 7 = 22, what is x?", [], "remote:algebra-lora", 0.0, 0.9, 64))
    assert replies[-1] == "".join(CHUNKS) and len(replies) == len(CHUNKS)
    assert chats(server)[0]["body"]["temperature"] == 0.0


def test_the_chat_function_turns_server_errors_into_messages(server):
    import gradio as gr

    from app import chat

    server.chat_status, server.chat_error = 503, {"error": "Model is overloaded"}
    with pytest.raises(gr.Error, match="HTTP 503: Model is overloaded"):
        list(chat("What is 2 + 2?", [], "remote:algebra-lora"))


@pytest.mark.slow
def test_the_real_apps_chat_api_streams_a_server_reply(server, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    env = app_env(MATH_STUDIO_HOME=str(tmp_path / "studio"), INSTRUCTOR_PASSWORD="teach",
                  **{remote.URL_VAR: server.url, remote.KEY_VAR: KEY})
    with app_server(env, tmp_path / "app.log") as url:
        client = Client(url, verbose=False)
        job = client.submit("If 3x + 7 = 22, what is x?", [], "remote:algebra-lora", api_name="/chat")
        assert job.result() == "".join(CHUNKS)
        growing = ["".join(CHUNKS[:i]) for i in range(1, len(CHUNKS) + 1)]
        assert set(job.outputs()) <= set(growing)  # each output a reply so far
        with pytest.raises(AppError, match="not one of this class's models"):
            client.predict("What is 2 + 2?", [], "remote:unlisted", api_name="/chat")
        server.endless = True  # cancelling a reply (what Stop does) closes the connection to the server
        job = client.submit("If 3x + 7 = 22, what is x?", [], "remote:algebra-lora", api_name="/chat")
        assert next(iter(job)) == CHUNKS[0]
        assert job.cancel()
        assert server.hung_up.wait(60)
    request = chats(server)[-1]
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"]["messages"][0]["role"] == "system" and request["body"]["messages"][-1]["role"] == "user"
    assert KEY not in (tmp_path / "app.log").read_text()
