"""The tutor on an OpenAI-compatible server (vLLM or TGI serving a base model and its LoRA adapters), by URL.

Set MATH_STUDIO_OPENAI_URL (e.g. `http://gpu-box:8000/v1`) and, when the server wants one, MATH_STUDIO_OPENAI_KEY:
the key is sent only as `Authorization: Bearer ...` and never logged, shown or put in a message. The server's models
are the choices `remote:<model id>`; `tutor.chat.stream_reply` hands those to `stream_remote`.
"""

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator

import httpx

from trainer.models import Kind, ModelChoice, ModelError

URL_VAR = "MATH_STUDIO_OPENAI_URL"
KEY_VAR = "MATH_STUDIO_OPENAI_KEY"
MODELS_CACHE_S = 10.0  # the picker and every student's checked choice read the list; the server is asked this often
LIST_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
CHAT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)  # read: the longest wait for the next piece (a busy server queues)
SSE_OTHER_RE = re.compile(r"(:|event:|id:|retry:)")  # SSE lines besides data: a comment (keep-alive), fields
CONTEXT_RE = re.compile(r"context length|context window|maximum context|too long|must be <=", re.I)  # vLLM's, TGI's
log = logging.getLogger(__name__)


class RemoteError(ModelError):
    """The tutor server cannot list its models or give a reply, in words a user can act on.

    Its message never carries the key, even where it quotes a server that echoes it."""

    def __init__(self, message: str):
        super().__init__(message.replace(api_key(), "[key]") if api_key() else message)


def server_url() -> str:
    """The configured server's base URL (ending in /v1), or "" when none is set."""
    return os.environ.get(URL_VAR, "").strip().rstrip("/")


def shown_url() -> str:
    """The server's URL as messages show it: without any user:password@ part."""
    return str(httpx.URL(server_url()).copy_with(userinfo=b""))


def api_key() -> str:
    return os.environ.get(KEY_VAR, "").strip()


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key()}"} if api_key() else {}


def required_url() -> str:
    url = server_url()
    if not url:
        raise RemoteError(f"No tutor server is set: set {URL_VAR} to its OpenAI-compatible URL, e.g. "
                          "http://gpu-box:8000/v1, and restart the app.")
    return url


# ---- listing models ----

_models_lock = threading.Lock()
_models: dict[tuple[str, str], tuple[float, list[str] | RemoteError]] = {}  # (url, key) -> (when, ids or failure)


def remote_models() -> list[str]:
    """The model ids the server lists at GET /models (vLLM: the base and every --lora-modules adapter).

    Cached for MODELS_CACHE_S, a failure too, so a server that is down slows no one twice. Raises RemoteError."""
    url = required_url()
    with _models_lock:
        fetched, result = _models.get((url, api_key()), (float("-inf"), None))
        if time.monotonic() - fetched > MODELS_CACHE_S:
            try:
                result = fetch_models(url)
            except RemoteError as exc:
                result = exc
            _models[(url, api_key())] = (time.monotonic(), result)
    if isinstance(result, RemoteError):
        raise RemoteError(str(result))
    return list(result)


def fetch_models(url: str) -> list[str]:
    try:
        response = httpx.get(f"{url}/models", headers=auth_headers(), timeout=LIST_TIMEOUT)
    except httpx.TransportError as exc:
        raise transport_error(exc) from None
    if response.status_code != 200:
        raise status_error(response)
    try:
        return [str(model["id"]) for model in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f"The tutor server at {shown_url()} answered GET /models with something other than an "
                          f"OpenAI model list: check that {URL_VAR} is the server's URL ending in /v1.") from None


def remote_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the model picker: the server's models, when a server is set.

    A server that cannot list them adds none, so the picker still offers the local models; the reason goes to the
    app's log, and a student who picks one of its models anyway is told it."""
    if not server_url():
        return []
    try:
        return [(f"{model} (tutor server)", str(ModelChoice(Kind.REMOTE, model))) for model in remote_models()]
    except RemoteError as exc:
        log.warning("The model picker lists no tutor-server models: %s", exc)
        return []


# ---- streaming a reply ----


def stream_remote(model_id: str, messages: list[dict], settings, stop: threading.Event) -> Iterator[str]:
    """Yield the reply so far (cumulative text) of `model_id` on the server to chat `messages`, through
    POST /chat/completions with stream: true. `settings` is a tutor.chat.ChatSettings (its system prompt is already
    in `messages`). A last message of the assistant's is continued: the reply starts with its text.

    Setting `stop` (or closing this generator) closes the connection, which ends the generation on the server."""
    url = required_url()
    model_id = model_id.strip()
    if not model_id:
        raise RemoteError(f"Name one of the tutor server's models: {Kind.REMOTE}:<model id>.")
    reply = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    try:
        with httpx.Client(timeout=CHAT_TIMEOUT) as client, client.stream(
                "POST", f"{url}/chat/completions", json=request_body(model_id, messages, settings),
                headers=auth_headers()) as response:
            if response.status_code != 200:
                response.read()
                raise status_error(response, model_id)
            for piece in reply_pieces(response.iter_lines()):
                if stop.is_set():
                    return
                if piece:
                    reply += piece
                    yield reply
    except httpx.TransportError as exc:
        raise transport_error(exc) from None


def request_body(model_id: str, messages: list[dict], settings) -> dict:
    body = {"model": model_id, "messages": messages, "stream": True, "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature, "top_p": settings.top_p}  # temperature 0 is greedy here too
    if messages[-1]["role"] == "assistant":
        # Continuing the reply begun (think_first's "<think>\n") is vLLM's extension of the OpenAI API; other
        # servers (TGI, say) may ignore these fields and start a new reply after it.
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def reply_pieces(lines: Iterable[str]) -> Iterator[str]:
    """The text pieces of a streamed chat completion, from its server-sent-event lines, up to `data: [DONE]`.

    Raises RemoteError for a line this app cannot read, an error the server reports mid-stream, or a stream that
    stops before the reply is finished."""
    finished = False
    for line in lines:
        if not line.startswith("data:"):
            if line and not SSE_OTHER_RE.match(line):
                raise RemoteError(f"The tutor server at {shown_url()} sent a reply this app cannot read (not "
                                  f"server-sent events): {brief(line)!r}")
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return
        piece, done = event_piece(data)
        finished = finished or done
        yield piece
    if not finished:
        raise RemoteError(f"The tutor server at {shown_url()} broke off the reply before it finished: ask again; if it "
                          "goes on, the server's log says why.")


def event_piece(data: str) -> tuple[str, bool]:
    """(text, finished) of one `data:` event: choices[0].delta.content and whether choices[0].finish_reason is set."""
    try:
        event = json.loads(data)
    except json.JSONDecodeError:
        event = None
    if isinstance(event, dict) and ("error" in event or event.get("object") == "error"):
        raise RemoteError(f"The tutor server at {shown_url()} failed during the reply: {brief(error_text(event))}")
    try:
        choice = event["choices"][0] if event["choices"] else {}  # a closing usage event has no choices
        content = choice.get("delta", {}).get("content") or ""
        if not isinstance(content, str):
            raise TypeError
        return content, bool(choice.get("finish_reason"))
    except (TypeError, KeyError, AttributeError):
        raise RemoteError(f"The tutor server at {shown_url()} sent a reply this app cannot read (not an OpenAI chat "
                          f"completion chunk): {brief(data)!r}") from None


# ---- errors in words a user can act on ----


def transport_error(exc: httpx.TransportError) -> RemoteError:
    where, reason = f"The tutor server at {shown_url()}", str(exc) or type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return RemoteError(f"{where} cannot be reached ({reason}): check {URL_VAR} and that the server is running.")
    if isinstance(exc, httpx.TimeoutException):
        return RemoteError(f"{where} cannot be reached: it stopped answering ({reason}; busy or stuck). Ask again in "
                           "a moment.")
    return RemoteError(f"The connection to the tutor server at {shown_url()} failed ({reason}): ask again; if it "
                       "goes on, check the server.")


def status_error(response: httpx.Response, model_id: str = "") -> RemoteError:
    """What an HTTP error from the server means, with its own explanation where it gives one."""
    where = f"The tutor server at {shown_url()}"
    status, detail = response.status_code, response_detail(response)
    if status in (401, 403) and not api_key():
        return RemoteError(f"{where} needs a key (HTTP {status}): set {KEY_VAR} to the key it was started with "
                           "(vLLM's --api-key).")
    if status in (401, 403):
        return RemoteError(f"{where} refused the key (HTTP {status}): the key is wrong. Set {KEY_VAR} to the key it "
                           "was started with (vLLM's --api-key).")
    if status == 404 and model_id:
        served = remote_models()  # raises its own reason when the server cannot list them (a wrong URL: 404 too)
        if model_id not in served:
            return RemoteError(f"{where} has no model {model_id!r}; it serves: {', '.join(served) or 'nothing'}. "
                               "Pick one of those.")
    if status == 404:
        return RemoteError(f"{where} has no {response.request.url.path} (HTTP 404: {detail}): {URL_VAR} should be "
                           "the server's URL ending in /v1, e.g. http://gpu-box:8000/v1.")
    if status in (400, 413, 422) and CONTEXT_RE.search(detail):
        return RemoteError(f"The conversation is too long for {model_id} on the tutor server ({detail}): start a new "
                           "chat, shorten the question or lower max new tokens.")
    if status >= 500:
        return RemoteError(f"{where} failed (HTTP {status}: {detail}). Ask again in a moment; if it goes on, the "
                           "server's log says why.")
    return RemoteError(f"{where} refused the request (HTTP {status}: {detail}).")


def response_detail(response: httpx.Response) -> str:
    """The server's own explanation of an error response, briefly."""
    try:
        detail = error_text(response.json())
    except ValueError:
        detail = response.text
    return brief(detail) or response.reason_phrase


def brief(text: str) -> str:
    return " ".join(text.split())[:300]


def error_text(body) -> str:
    """The message in an error body: OpenAI's and newer vLLM's {"error": {"message"}}, TGI's {"error": "..."},
    older vLLM's {"object": "error", "message"}."""
    if not isinstance(body, dict):
        return str(body)
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body.get("message") or body)
