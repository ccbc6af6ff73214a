"""Bad input, table-driven, through the app's own handlers and through the real API.

Every case must end in a clear message (a gr.Error's text, or what the handler returns), within a generous
deadline (a hang is a failure), with nothing written outside the data root and an earlier job left byte for byte
as it was. Names that try to escape carry the marker PWNED, so an escape would leave a PWNED path to find.
"""

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gradio as gr
import pytest

import app
from tests.browser import ROOT, app_env, app_server
from trainer import jobs
from trainer.config import JobConfig
from trainer.store import write_json
from tutor.render import normalize_latex, reply_messages

MARKER = "PWNED"
EARLIER = "20250101-120000-earlier-ab12"
DEADLINE_S = 120  # a handler that has not answered by then is stuck; each answers within seconds, even under load
PASSWORD = "teach-42"


# ---------------------------------------------------------------- a stand-in for the Hub's model info

class ModelInfoStandin:
    """Answers GET /api/models/<id> as the Hub does without a token: a gated model's info says it is gated;
    any other id is not found (or private)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if re.fullmatch(r"/api/models/acme/gated-model(/revision/[^/]+)?", self.path.split("?")[0]):
                    status, body, headers = 200, {"id": "acme/gated-model", "gated": "manual", "private": False}, {}
                else:
                    status, body = 404, {"error": "Repository not found"}
                    headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                   **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def model_hub():
    standin = ModelInfoStandin()
    yield standin
    standin.close()


# ---------------------------------------------------------------- the world each case runs in

@dataclass
class World:
    root: Path  # the data root
    files: Path  # bad input files (inputs, outside the data root on purpose)
    tiny: str  # the tiny model's folder


def make_earlier_job(root: Path, tiny: str) -> Path:
    """A completed job with an adapter and a checkpoint: what bad input must never touch."""
    path = root / "jobs" / EARLIER
    (path / "adapter").mkdir(parents=True)
    (path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    JobConfig(base_model=tiny, quantization="none", max_steps=2).save(path / "config.yaml")
    write_json(path / "status.json", {"id": EARLIER, "name": "earlier", "state": "completed", "step": 2,
                                      "total_steps": 2, "created": "2025-01-01T12:00:00+00:00", "reason": ""})
    write_json(path / "adapter" / "adapter_config.json", {"base_model_name_or_path": tiny, "r": 4})
    (path / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (path / "progress.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    return path


def make_bad_files(folder: Path) -> None:
    folder.mkdir()
    (folder / "no_columns.jsonl").write_text(json.dumps({"title": "x", "body": "y"}) + "\n")
    (folder / "empty.jsonl").write_text("")
    (folder / "blank.jsonl").write_text("\n\n  \n")
    (folder / "latin1.jsonl").write_bytes('{"question": "Réponse ?", "answer": "4"}\n'.encode("latin-1"))
    (folder / "cut.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+')
    (folder / "cut.json").write_text('[{"question": "1+1?", "answer": "2"}, {"quest')
    (folder / "header_only.csv").write_text("question,answer\n")
    (folder / "quiz.csv").write_text("Q,A\n1+1?,2\n")
    (folder / "broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (folder / "notes.txt").write_text("question: 1+1\n")
    (folder / "bad_messages.jsonl").write_text(json.dumps({"messages": "not a list"}) + "\n")
    for name in ("huge.jsonl", "huge.json", "huge.csv"):  # 2 GiB each, sparse: they take no disk space
        with open(folder / name, "wb") as handle:
            handle.truncate(2 << 30)


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}  # the lock file: bookkeeping


def escaped(root: Path) -> list[Path]:
    """PWNED paths outside the data root: anywhere under the test's folder, the repository, or the top of / and /tmp."""
    found = [p for p in root.parent.rglob(f"*{MARKER}*") if not p.is_relative_to(root)]
    for folder, folders, names in os.walk(ROOT):
        folders[:] = [f for f in folders if not f.startswith(".")]  # not .venv, .git or the test data cache
        found += [Path(folder) / n for n in names + folders if MARKER in n]
    found += [p for top in (Path("/"), Path("/tmp"), root.parent.parent) for p in top.iterdir() if MARKER in p.name]
    return found


@pytest.fixture
def world(data_root, tiny_model_dir, tmp_path, monkeypatch, model_hub):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the stand-in is local
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", model_hub.url)  # what HfApi() reads, at call time
    for name in ("HF_TOKEN", "INSTRUCTOR_PASSWORD", "SPACE_ID", "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jobs, "schedule", lambda: None)  # accepted launches are only queued: no training here
    make_bad_files(tmp_path / "files")
    return World(data_root, tmp_path / "files", str(tiny_model_dir))


# ---------------------------------------------------------------- the cases

def form(w: World, **changes) -> list:
    """The Train form's values for a small job on the tiny model, with `changes`."""
    values = {**JobConfig(base_model=w.tiny, quantization="none", max_samples=8).to_dict(), **changes}
    return [", ".join(v) if isinstance(v, list) else v for v in (values[f.name] for f in app.CONFIG_FIELDS)]


def launch(w, name="bad input", **changes):
    return app.launch_job, ("", name, *form(w, **changes))


def preview(w, dataset):
    return app.preview_data, ("", *form(w, dataset=dataset))


def chat(message, history=None, model=None, **settings):
    values = {"temperature": 0, "top_p": 0.9, "max_new_tokens": 4, "system_prompt": "", "think_first": False,
              **settings}
    return app.chat, (message, history or [], model, *values.values())


def respond(w, message, **settings):
    values = {"temperature": 0, "top_p": 0.9, "max_new_tokens": 4, "system_prompt": "", "think_first": False,
              **settings}
    return app.respond, (message, [], [], w.tiny, *values.values())


def evaluation(model="", adapter="", benchmark="gsm8k", limit=2, batch_size=2, max_new_tokens=8):
    return app.queue_evaluation, ("", model, adapter, benchmark, "", limit, batch_size, max_new_tokens)


LATEX_BOMBS = {  # sized so that the quadratic code they once hit took minutes here (now: a fraction of a second)
    "unclosed fractions": "\\frac{" * 40_000,
    "unclosed boxes": "\\boxed{" * 40_000,
    "unclosed inline math": "\\(" * 100_000,
    "unclosed environments": "\\begin{aligned}" * 35_000,
    "unclosed root indices": "\\sqrt[" * 80_000,
    "a run of blank lines before ####": "\n" * 300_000 + "####",
}

CASES = {  # id: (World -> (handler, args), what the message must say)
    # ---- models
    "unknown Hub model": (lambda w: launch(w, base_model="nobody/no-such-model"), r"No model nobody/no-such-model"),
    "gated model without a token": (lambda w: launch(w, base_model="acme/gated-model"), r"is gated.*HF_TOKEN"),
    "unreachable Hub": (lambda w: ("unreachable", launch(w, base_model="acme/anything")), r"Cannot reach the Hugging"),
    "model id escaping with ../": (lambda w: launch(w, base_model=f"../../{MARKER}"), r"neither a local folder"),
    "folder that is not a model": (lambda w: launch(w, base_model=str(w.files)), r"without config\.json"),
    "unknown embedded model": (lambda w: launch(w, base_model="embedded:gpt-5"), r"Unknown embedded model"),
    "model id with control characters": (lambda w: launch(w, base_model="\x00\x1b[2J"), r"neither a local folder"),
    # ---- hyperparameters
    "learning rate of 5": (lambda w: launch(w, learning_rate=5), r"learning_rate = 5.*below 1"),
    "LoRA rank 0": (lambda w: launch(w, lora_r=0), r"lora_r = 0 is not possible"),
    "LoRA rank of a trillion": (lambda w: launch(w, lora_r=10**12), r"lora_r = 1000000000000.*up to 1024"),
    "infinite max_steps": (lambda w: launch(w, max_steps=float("inf")), r"max_steps = inf is not a valid int"),
    "NaN epochs": (lambda w: launch(w, num_epochs=float("nan")), r"num_epochs = nan is not possible"),
    "infinite epochs": (lambda w: launch(w, num_epochs=float("inf"), max_steps=5), r"num_epochs = inf.*at most 1000"),
    "empty batch size": (lambda w: launch(w, per_device_batch_size=None), r"per_device_batch_size = None"),
    "a billion-token sequence": (lambda w: launch(w, max_seq_length=10**9), r"max_seq_length = 1000000000"),
    "shell in target modules": (lambda w: launch(w, target_modules="q_proj; rm -rf /"),
                                r"target_modules \[.*'rm', '-rf', '/'\] are not in"),
    # ---- job names
    "job name of 100,000 characters": (lambda w: launch(w, name="x" * 100_000), r"at most 100 characters"),
    "job name with control characters": (lambda w: launch(w, name="a\x00b\x1b[31m\n"), r"no control characters"),
    # ---- datasets
    "dataset spec escaping with ../": (lambda w: preview(w, f"../../{MARKER}"), r"does not say where the data"),
    "unknown dataset source": (lambda w: preview(w, "ftp:example.org/x"), r"Unknown dataset source 'ftp:'"),
    "file without the needed columns": (lambda w: preview(w, f"file:{w.files}/no_columns.jsonl"),
                                        r"columns \['body', 'title'\].*no known math schema"),
    "empty file": (lambda w: preview(w, f"file:{w.files}/empty.jsonl"), r"holds no examples"),
    "file of blank lines": (lambda w: preview(w, f"file:{w.files}/blank.jsonl"), r"holds no examples"),
    "CSV with only a header": (lambda w: preview(w, f"file:{w.files}/header_only.csv"), r"holds no examples"),
    "non-UTF-8 file": (lambda w: preview(w, f"file:{w.files}/latin1.jsonl"), r"line 1 is not UTF-8"),
    "truncated JSON Lines": (lambda w: preview(w, f"file:{w.files}/cut.jsonl"), r"line 2 is not valid JSON.*cut-off"),
    "truncated JSON": (lambda w: preview(w, f"file:{w.files}/cut.json"), r"is not valid JSON.*cut-off"),
    "broken Parquet": (lambda w: preview(w, f"file:{w.files}/broken.parquet"), r"not a readable Parquet file"),
    "unknown extension": (lambda w: preview(w, f"file:{w.files}/notes.txt"), r"extension the trainer cannot read"),
    "a folder as the file": (lambda w: preview(w, f"file:{w.files}"), r"is a folder"),
    "messages that are not a list": (lambda w: preview(w, f"file:{w.files}/bad_messages.jsonl"),
                                     r"messages column holds text that is not a JSON list"),
    "mapping a missing column": (lambda w: preview(w, f"file:{w.files}/quiz.csv?problem=Question&answer=A"),
                                 r"has no column 'Question'.*\['A', 'Q'\]"),
    "a 2 GiB JSON Lines upload": (lambda w: preview(w, f"file:{w.files}/huge.jsonl"), r"line 1 is longer than 16 MiB"),
    "a 2 GiB JSON upload": (lambda w: preview(w, f"file:{w.files}/huge.json"), r"2\.0 GiB.*read whole"),
    "a 2 GiB CSV upload": (lambda w: preview(w, f"file:{w.files}/huge.csv"), r"2\.0 GiB.*read whole"),
    "file path escaping with ../": (lambda w: preview(w, f"file:../../../{MARKER}.jsonl"), r"does not exist"),
    # ---- job actions
    "job id escaping with ../": (lambda w: (app.job_action, ("", "cancel", f"../{MARKER}")), r"is not a job id"),
    "job id with shell characters": (lambda w: (app.job_action, ("", "delete", "x; rm -rf ~")), r"is not a job id"),
    "unknown job": (lambda w: (app.job_action, ("", "resume", "20990101-000000-none-0000")), r"No job"),
    "cancelling a completed job": (lambda w: (app.job_action, ("", "cancel", EARLIER)), r"is completed: only queued"),
    "resuming a completed job": (lambda w: (app.job_action, ("", "resume", EARLIER)), r"only cancelled, failed"),
    "an unknown action": (lambda w: (app.job_action, ("", "explode", EARLIER)), r"Unknown job action 'explode'"),
    # ---- the tutor
    "a 100,000-character question": (lambda w: chat("12345 " * 16_667, model=w.tiny), r"at most 20,000 fit"),
    "a 100,000-character question in the chat box": (lambda w: respond(w, "x" * 100_000), r"at most 20,000 fit"),
    "history that is not a list": (lambda w: chat("hi", history="hello", model=w.tiny), r"history must be a list"),
    "history with a tool role": (lambda w: chat("hi", history=[{"role": "tool", "content": "x"}], model=w.tiny),
                                 r"history must be a list"),
    "a conversation of a million characters": (
        lambda w: chat("hi", history=[{"role": "user", "content": "y" * 20_000}] * 50, model=w.tiny),
        r"too long to go on: start a new chat"),
    "a billion new tokens": (lambda w: chat("hi", model=w.tiny, max_new_tokens=10**9), r"max_new_tokens from 1 to"),
    "a temperature that is not a number": (lambda w: chat("hi", model=w.tiny, temperature="hot"), r"must be numbers"),
    "model name escaping with ../": (lambda w: chat("hi", model=f"../../{MARKER}"), r"neither a local folder"),
    "adapter name escaping with ../": (lambda w: chat("hi", model=f"adapter:../../{MARKER}"), r"No adapter"),
    "merged name escaping with ../": (lambda w: chat("hi", model=f"merged:../../{MARKER}"), r"No merged model"),
    "control characters in a question": (lambda w: respond(w, "\x00\x07\x1b[2J what is 2+2?\x7f"),
                                         r"what is 2\+2\?"),
    "a <think> never closed": (lambda w: respond(w, "What is 2+2?", think_first=True),
                               r"No final answer in this reply"),
    "script in a question": (lambda w: respond(w, "<script>window.x=1</script><img src=x onerror=alert(1)>"),
                             r"&lt;script&gt;window\.x=1&lt;/script&gt;&lt;img src=x onerror=alert\(1\)&gt;"),
    "an answer of 140,000 characters": (lambda w: (app.check_answer, ("\\boxed{" * 20_000, [], {"answer": "5"})),
                                        r"too long for an answer"),
    "control characters as an answer": (lambda w: (app.check_answer, ("\x00\x1b", [], {"answer": "5"})),
                                        r"Not correct yet"),
    # ---- the renderer, on what a model might reply
    **{f"LaTeX bomb: {name}": (lambda w, text=text: (reply_messages, (text,)), r"'role': 'assistant'")
       for name, text in LATEX_BOMBS.items()},
    "LaTeX bomb in a question": (lambda w: (normalize_latex, ("\\frac{\\sqrt[" * 10_000,)), r"frac"),
    # ---- evaluation
    "evaluation with no max new tokens": (lambda w: evaluation(max_new_tokens=None), r"must be 1 or more"),
    "unknown benchmark": (lambda w: evaluation(benchmark=f"../{MARKER}"), r"Unknown benchmark"),
    "evaluation model escaping with ../": (lambda w: evaluation(model=f"../../{MARKER}"), r"neither a local folder"),
    "evaluation adapter escaping with ../": (lambda w: evaluation(adapter=f"../../{MARKER}"), r"No adapter"),
    # ---- publishing
    "merged name escaping with ../ ": (lambda w: (app.merge_model, ("", EARLIER, f"../../{MARKER}")),
                                       r"is not a usable name"),
    "merged name with shell characters": (lambda w: (app.merge_model, ("", EARLIER, "$(touch PWNED)")),
                                          r"is not a usable name"),
    "repo id escaping with ../": (lambda w: (app.push_model, ("", EARLIER, f"../../{MARKER}", True, False, "hf_x")),
                                  r"is not a Hub repo id"),
    "repo id with shell characters": (lambda w: (app.push_model, ("", EARLIER, "a/b; rm -rf ~", True, False, "hf_x")),
                                      r"is not a Hub repo id"),
    "push without a token": (lambda w: (app.push_model, ("", EARLIER, "alice/tutor", True, False, "")),
                             r"No Hugging Face token"),
    "model card of a job escaping with ../": (lambda w: (app.card_preview, ("", f"../{MARKER}", "a/b", False)),
                                              r"is not a job id"),
}


def outcome(handler, args) -> str:
    """What the user is shown: a gr.Error's message, or the handler's (last streamed) result as text."""
    try:
        result = handler(*args)
        if hasattr(result, "__next__"):  # a streaming handler: what it showed last
            streamed = list(result)
            result = streamed[-1] if streamed else ""
        return str(result)
    except gr.Error as exc:
        return exc.message


def run_with_deadline(handler, args) -> str:
    done: list = []
    thread = threading.Thread(target=lambda: done.append(run_safely(handler, args)), daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    assert done, f"{handler.__name__} did not answer within {DEADLINE_S} s"
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def run_safely(handler, args):
    try:
        return outcome(handler, args)
    except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
        return exc


def test_the_table_has_enough_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_message_and_harms_nothing(case, world, monkeypatch):
    make, expected = CASES[case]
    before = fingerprint(make_earlier_job(world.root, world.tiny))
    made = make(world)
    if made[0] == "unreachable":  # the Hub's address is a port where nothing listens
        import huggingface_hub.constants

        from tests.test_publish import closed_port

        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        made = made[1]
    shown = run_with_deadline(*made)
    assert re.search(expected, shown, re.S), f"{case}: {shown[:500]!r}"
    assert "Traceback" not in shown
    assert fingerprint(world.root / "jobs" / EARLIER) == before  # the earlier job, byte for byte
    assert [p.name for p in (world.root / "jobs").iterdir() if p.is_dir()] == [EARLIER]  # no job for bad input
    assert not escaped(world.root)


@pytest.mark.parametrize("name", [f"../../{MARKER}", f"$(touch {MARKER}); rm -rf ~ `id` | {MARKER} > /tmp/x"])
def test_job_names_with_paths_or_shell_are_kept_as_names(name, world):
    earlier = make_earlier_job(world.root, world.tiny)
    before = fingerprint(earlier)
    dropdown = app.launch_job("", name, *form(world))
    path = jobs.job_dir(dropdown.value)  # a valid id: letters, digits, '.', '_' and '-'
    assert path.parent == world.root / "jobs" and jobs.read_status(path)["name"] == name.strip()
    assert jobs.read_status(path)["state"] == "queued"
    assert fingerprint(earlier) == before
    assert not escaped(world.root)


# ---------------------------------------------------------------- through the real server and its API

@pytest.fixture(scope="module")
def server(tmp_path_factory, embedded_dir):
    root = tmp_path_factory.mktemp("api") / "studio"
    (root / "models" / "embedded").mkdir(parents=True)
    (root / "models" / "embedded" / embedded_dir.name).symlink_to(embedded_dir)
    gradio_tmp = root.parent / "gradio"
    env = app_env(MATH_STUDIO_HOME=str(root), INSTRUCTOR_PASSWORD=PASSWORD, GRADIO_TEMP_DIR=str(gradio_tmp))
    log = root.parent / "app.log"
    with app_server(env, log) as url:
        yield url, root, gradio_tmp, log


@pytest.mark.slow
def test_bad_input_through_the_api(server, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, root, _, log = server
    client = Client(url, verbose=False)
    refused = [  # (arguments of /chat, what the client is told)
        (["x" * 100_000], "at most 20,000 fit"),
        (["hi", "not a list"], "history must be a list"),
        (["hi", [], "/etc"], "is not one of this class's models"),
        (["hi", [], f"adapter:../../{MARKER}"], "is not one of this class's models"),
        (["hi", [], "embedded:smollm2-135m-instruct", 0.7, 0.9, 10**9], "max_new_tokens from 1 to"),
    ]
    for args, message in refused:
        with pytest.raises(AppError, match=re.escape(message)):
            client.predict(*args, api_name="/chat")
    bad_file = tmp_path / "latin1.jsonl"
    bad_file.write_bytes('{"question": "Réponse ?", "answer": "4"}\n'.encode("latin-1"))
    embedded = World(root, tmp_path, "embedded:smollm2-135m-instruct")
    values = dict(zip([f.name for f in app.CONFIG_FIELDS], form(embedded)))
    with pytest.raises(AppError, match="learning_rate = 5.0 is not possible"):
        client.predict(PASSWORD, f"../../{MARKER}", *{**values, "learning_rate": 5}.values(), api_name="/launch_job")
    with pytest.raises(AppError, match="is not UTF-8"):
        client.predict(PASSWORD, *{**values, "dataset": f"file:{bad_file}"}.values(), api_name="/preview_data")
    # ...and the app still serves a student
    reply = client.predict("What is 2 + 2?", [], "embedded:smollm2-135m-instruct", 0, 0.9, 8, "", False,
                           api_name="/chat")
    assert isinstance(reply, str) and reply
    assert not [p for p in (root / "jobs").iterdir() if p.is_dir()]
    assert not escaped(root)
    assert not unexpected_errors(log.read_text())
    assert "Traceback" not in log.read_text()  # an expected refusal is one line ("refused: ..."), not 25


def unexpected_errors(log: str) -> list[str]:
    """The last line of every traceback in an app log that is not a gr.Error (which Gradio logs as it sends it)."""
    return re.findall(r"^(?!gradio\.exceptions\.Error)[A-Za-z_][\w.]*(?:Error|Exception)\b.*$", log, re.M)


@pytest.mark.slow
def test_uploads_are_refused_without_reading_them(server, tmp_path):
    """No component takes a file: Gradio's upload route, open to anyone, once stored 99 MB files for good."""
    import httpx

    url, _, gradio_tmp, _ = server
    big = tmp_path / f"{MARKER}.jsonl"
    with open(big, "wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB, sparse
    with open(big, "rb") as handle:
        try:
            response = httpx.post(f"{url}/gradio_api/upload", files={"files": (f"../../{MARKER}.jsonl", handle)},
                                  timeout=300)
            status, text = response.status_code, response.text
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            status, text = None, str(exc)  # the server answered and closed before reading it all
    assert status in (403, None), (status, text[:300])
    for name in [f"../../{MARKER}.jsonl", "", "quiz.jsonl"]:  # an empty name was an HTTP 500
        small = httpx.post(f"{url}/gradio_api/upload", files={"files": (name, b'{"q": 1}\n')}, timeout=120)
        assert small.status_code == 403 and "takes no file uploads" in small.text, (name, small.status_code)
    kept = [p for p in gradio_tmp.rglob("*") if p.is_file()] if gradio_tmp.exists() else []
    assert not [p for p in kept if p.suffix == ".jsonl" or p.stat().st_size > 1 << 20], kept  # nothing was kept
