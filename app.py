"""Math Agent Studio: instructors fine-tune small chat models on math, students chat with them.

One small build_<tab>() per tab; callbacks turn component values into one object, call one function of
tutor/ or trainer/, and return what the UI shows. Training runs in its own process (see trainer/jobs.py).
"""

import dataclasses
import hashlib
import hmac
import html
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote

# Before torch loads OpenMP: its threads sleep at a barrier instead of spinning, as in `python -m tutor` (see there).
# On this shared 2-core CPU one student's first token went from 2.4 s (p50, spinning) to 0.57 s (benchmarks/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr
import pandas as pd
import yaml
from starlette.middleware import Middleware

from trainer import basic_math, estimate, jobs, publish, store
from trainer.config import GROUPS, PRESETS, TUTOR_PROMPT, ConfigError, JobConfig
from trainer.data import check_files
from trainer.answers import check_student_answer, extract_answer
from trainer.models import EMBEDDED, OUT_OF_MEMORY_RE, Kind, ModelChoice, ModelError, check_model_fit, resolve_model
from trainer.store import State, storage_warning
from tutor import eval_job, eval_view, runs_view
from tutor.chat import (
    MAX_NEW_TOKENS, ChatSettings, checked_question, checked_settings, checked_turns, stream_reply,
)
from tutor.evaluate import BENCHMARKS, EvalConfig, summary_lines
from tutor.history import conversation_markdown, rewind
from tutor.models import list_choices
from tutor.render import LATEX_DELIMITERS, normalize_latex, reply_messages, split_reasoning
from tutor.serving import batching_enabled, on_zero_gpu
from tutor.steps import find_mistake as find_first_mistake, model_judge, split_steps
from tutor.verify import badge, grade, known_answer, sample_answers, sample_count, sampled_known
from tutor.hints import RUNGS, model_generate, next_hint

log = logging.getLogger("app")

try:
    from spaces import GPU as gpu  # Hugging Face's ZeroGPU package: lends a GPU for each call (a no-op elsewhere)
except ImportError:  # not installed; our own spaces/ folder is a plain folder and has no GPU
    def gpu(task=None, **kwargs):
        """Stands in for `spaces.GPU`: `@gpu` and `@gpu(duration=120)` leave the function as it is."""
        return task if task is not None else (lambda fn: fn)

CONFIG_FIELDS = [f for f in dataclasses.fields(JobConfig)]
OPEN_GROUPS = ("Model", "Data")  # the essentials: the Train form's other groups start closed
JOB_COLUMNS = ["id", "name", "state", "step", "base model", "created"]
MONITOR_SIZE = 10  # what job_view returns: facts, progress, two plots, log, four buttons, the next steps row
DATASET_TYPES = [".jsonl", ".json", ".csv", ".parquet"]  # what trainer/data.py reads from a file: spec
MAX_DATASET_MB = 50  # an uploaded dataset; bigger ones belong on the Hub
# Bounds on what one request may ask for; beyond them a student gets a message instead of a stuck server.
QUEUE_SIZE = int(os.environ.get("MATH_STUDIO_QUEUE_SIZE", "64"))  # requests waiting; beyond: "busy, try again"
MAX_UPLOAD = "100mb"  # a second bound on uploads, which RefuseUploads lets through from instructors only
PASSWORD_TRIES = 10  # different wrong instructor passwords from one client; then each further one waits, doubling
PASSWORD_WAIT_MAX_S = 300


class UserError(gr.Error):
    """An expected refusal (bad input, a wrong password): shown to the user, one line in the server log, no
    traceback (Gradio prints one for every other exception)."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message, print_exception=False)
        if not quiet:
            log.warning("refused: %s", message[:300].replace("\n", " "))


class PasswordThrottle:
    """Wrong instructor passwords per client address: after `tries` different ones, that client is refused without a
    check for 1 s, then 2, 4, ... up to `wait_max_s` after each further one; the right one clears the count. The same
    wrong password sent again (the page's timer re-sends what is typed) is no new guess."""

    def __init__(self, tries: int, wait_max_s: float):
        self.tries, self.wait_max_s = tries, wait_max_s
        self.wrong: dict[str, tuple[set[bytes], float]] = {}  # client -> (wrong passwords' digests, refused until)
        self.lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        return max(0.0, self.wrong.get(client, (set(), 0.0))[1] - time.monotonic())

    def failed(self, client: str, password: str) -> None:
        digest = hashlib.sha256(password.encode()).digest()
        with self.lock:
            tried = self.wrong.setdefault(client, (set(), 0.0))[0]
            if digest in tried:
                return
            tried.add(digest)
            wait = min(2.0 ** (len(tried) - self.tries), self.wait_max_s) if len(tried) >= self.tries else 0.0
            self.wrong[client] = (tried, time.monotonic() + wait)
        log.warning("wrong instructor password from %s (%d different since the last right one%s)", client,
                    len(tried), f"; refused for {wait:.0f} s" if wait else "")

    def succeeded(self, client: str) -> None:
        with self.lock:
            self.wrong.pop(client, None)


password_throttle = PasswordThrottle(PASSWORD_TRIES, PASSWORD_WAIT_MAX_S)


def client_address() -> str | None:
    """The address of the client whose request this handler serves; None outside a request (a direct call)."""
    request = gr.context.LocalContext.request.get(None)
    return getattr(getattr(request, "client", None), "host", None) if request is not None else None


def instructor_required() -> bool:
    """On a Space, or wherever INSTRUCTOR_PASSWORD is set, the instructor side needs the password."""
    return bool(os.environ.get("INSTRUCTOR_PASSWORD") or os.environ.get("SPACE_ID"))


def instructor_refusal(password: str) -> str:
    """Why `password` does not open the instructor side, or "" when it does (or when none is needed)."""
    if not instructor_required():
        return ""
    expected = os.environ.get("INSTRUCTOR_PASSWORD", "")
    if not expected:
        return "The instructor side is closed: set the INSTRUCTOR_PASSWORD secret of this Space to open it."
    client = client_address()
    wait = password_throttle.wait_s(client) if client else 0
    if wait:
        return f"Instructor login needed: too many wrong passwords from {client}; try again in {wait:.0f} s."
    if not hmac.compare_digest(str(password or "").encode(), expected.encode()):
        if client and password:  # an empty password is a student, not a guess
            password_throttle.failed(client, str(password))
        return "Instructor login needed: enter the instructor password at the top of the page."
    if client:
        password_throttle.succeeded(client)
    return ""


def oauth_enabled() -> bool:
    """A Space with `hf_oauth: true` in its README (spaces/README.md): Hugging Face sets OAUTH_CLIENT_ID there."""
    return bool(os.environ.get("OAUTH_CLIENT_ID"))


def check_instructor(password: str) -> None:
    """Called first in every instructor event handler, so the API cannot skip what the page hides."""
    refusal = instructor_refusal(password)
    if refusal:
        raise UserError(refusal, quiet=True)  # a wrong password is logged once, by the throttle


ZERO_GPU_NOTE = ("This Space runs on ZeroGPU hardware, which lends a GPU for one short call at a time: training needs "
                 "dedicated GPU hardware (t4-small or larger, in the Space's settings). The Tutor works here, and "
                 "adapters trained elsewhere can be published and used.")


def train_notes() -> str:
    """What the Train tab says about where it runs: ZeroGPU hardware, a data root lost on restart."""
    return "\n\n".join(f"> {note}" for note in [ZERO_GPU_NOTE if on_zero_gpu() else "", storage_warning()] if note)


def config_input(f: dataclasses.Field, default):
    """A form component for one JobConfig field: label, help, default and choices all taken from the dataclass."""
    label, info = f"{f.metadata['label']} ({f.name})", f.metadata["help"]
    if f.metadata.get("choices"):
        return gr.Dropdown(f.metadata["choices"], value=default, label=label, info=info)
    if f.type is bool:
        return gr.Checkbox(value=default, label=label, info=info)
    if f.type in (int, float):
        return gr.Number(value=default, label=label, info=info, precision=0 if f.type is int else None)
    if f.type == list[str]:
        return gr.Textbox(value=", ".join(default), label=label, info=info)
    return gr.Textbox(value=default, label=label, info=info, lines=3 if f.name == "system_prompt" else 1)


def form_config(values) -> JobConfig:
    return JobConfig.from_dict(dict(zip([f.name for f in CONFIG_FIELDS], values))).validate()


def form_values(config: JobConfig) -> list:
    return [", ".join(v) if isinstance(v, list) else v for v in config.to_dict().values()]


def preset_values(name: str) -> list:
    return form_values(PRESETS[name])


def checked_form(values) -> JobConfig:
    try:
        return form_config(values)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def cli_command(name, *values) -> str:
    """The command line that runs the form's job: `python -m trainer train` with what differs from the defaults."""
    named = ["--name", name.strip()] if (name or "").strip() else []
    return shlex.join(["python", "-m", "trainer", "train", *named,
                       *[word for pair in checked_form(values).overrides() for word in ("--set", pair)]])


def save_config(password, name, *values) -> str:
    """The form's config as a YAML file to download (the keys of config.yaml and of `trainer train --config`)."""
    check_instructor(password)
    config = checked_form(values)
    path = Path(tempfile.mkdtemp(prefix="job-config-")) / f"{re.sub(r'[^A-Za-z0-9_-]+', '-', name or '') or 'job'}.yaml"
    config.save(path)
    return str(path)


def load_config(password, file) -> list:
    """A YAML config file (saved from here, or a job's config.yaml) into the form."""
    check_instructor(password)
    try:
        return form_values(JobConfig.load(file).validate())
    except (ConfigError, OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"Cannot load {Path(file).name} as a job config: {exc}") from None


def job_config_values(password, job_id) -> list:
    """The monitored job's config into the form, to change it and launch a new job."""
    check_instructor(password)
    try:
        return form_values(store.read_config(jobs.job_dir(job_id or "")))
    except (jobs.JobError, ConfigError, OSError) as exc:
        raise UserError(str(exc)) from None


def upload_dataset(password, file) -> str:
    """Keep an uploaded dataset file under the data root and answer its `file:` spec, once it reads as math data."""
    check_instructor(password)
    source = Path(file)
    if source.suffix.lower() not in DATASET_TYPES:
        raise UserError(f"{source.name}: upload a {', '.join(DATASET_TYPES)} file.")
    if source.stat().st_size > MAX_DATASET_MB * 2**20:
        raise UserError(f"{source.name} has {source.stat().st_size / 2**20:,.0f} MB; at most {MAX_DATASET_MB} MB "
                        "can be uploaded: put a bigger set on the Hub and use hub:owner/name.")
    target = store.upload_file(source.name)
    shutil.copyfile(source, target)
    spec = f"file:{target}"
    try:
        check_files(spec)
    except ValueError as exc:
        target.unlink()
        raise UserError(str(exc)) from None
    gr.Info(f"Uploaded {source.name}: the dataset is now {spec}")
    return spec


def preview_data(password, *values):
    """Render a few examples through the chat template, show the token-length histogram, and estimate the job's
    steps, tokens, time and peak memory on this machine from those token counts (trainer/estimate.py)."""
    check_instructor(password)
    from transformers import AutoTokenizer

    from trainer.data import preview

    try:
        config = form_config(values)
        model_path = resolve_model(config.base_model)
        result = preview(config, AutoTokenizer.from_pretrained(model_path), n=3)
        guess = (estimate.summary(estimate.estimate_job(config, model_path, result)) if config.method == "sft"
                 else "No estimate for grpo jobs: their time goes to sampling replies.")
    except (ConfigError, ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    shown = "\n\n".join(f"### Example {i + 1}\n```text\n{text}\n```" for i, text in enumerate(result["examples"]))
    lengths = pd.Series(result["lengths"])
    width = max(8, int(lengths.max() // 20) + 1)
    bins = (lengths // width * width).value_counts().sort_index()
    histogram = pd.DataFrame({"tokens": bins.index.astype(int), "examples": bins.values})
    summary = (f"{len(lengths)} examples, median {int(lengths.median())} tokens, longest {int(lengths.max())}; "
               f"**{result['truncated_share']:.1%}** would be truncated at max_seq_length {config.max_seq_length}.")
    return shown, histogram, summary, guess


def launch_job(password, name, *values):
    check_instructor(password)
    if on_zero_gpu():
        raise UserError(ZERO_GPU_NOTE)
    try:
        config = form_config(values)
        check_files(config.dataset)  # and the spec parses
        check_model_fit(config, resolve_model(config.base_model))  # refused now, not by the worker in a minute
        path = jobs.create_job(config, name=name or "")
    except (ConfigError, ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    jobs.schedule()
    gr.Info(f"Job {path.name} queued.")
    return gr.Dropdown(choices=job_ids(), value=path.name)


def job_ids() -> list[str]:
    return [s["id"] for s in reversed(jobs.list_jobs())]


def state_text(status: dict) -> str:
    return f"{status['state']} #{status['queue_place']}" if "queue_place" in status else str(status["state"])


def jobs_table() -> pd.DataFrame:
    rows = [[s["id"], s["name"], state_text(s), f"{s.get('step', 0)}/{s.get('total_steps') or '?'}",
             s.get("base_model", ""), str(s.get("created") or "")[:19].replace("T", " ")] for s in reversed(jobs.list_jobs())]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def duration_text(seconds: float) -> str:
    """`1:02:03`, or `3 d 04:05:06` from a day on (a clock time would start again at 24 h)."""
    days, rest = divmod(int(seconds), 86_400)
    text = f"{rest // 3600}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    return f"{days:,} d {text}" if days else text


def progress_html(status: dict, last: dict) -> str:
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    share = step / total if total else 0
    eta = last.get("eta_s")
    eta_text = f" · ETA {duration_text(eta)}" if eta and status["state"] == "running" else ""
    return (f'<div class="job-progress" data-step="{step}" data-total="{total}">'
            f'<div style="background:#e5e7eb;border-radius:6px;height:14px">'
            f'<div style="width:{share:.1%};background:#2563eb;height:14px;border-radius:6px"></div></div>'
            f"<small>step {step} / {total or '?'} ({share:.0%}){eta_text}</small></div>")


def job_facts(status: dict, rows: list[dict], metrics: dict) -> list[str]:
    """The monitor line: state and queue place, then what fits the state: the final loss of a finished run, "loading
    the model" while a started run has logged nothing yet, else the latest step's figures."""
    place = f" · #{status['queue_place']} in queue" if "queue_place" in status else ""
    facts = [f"**{html.escape(status['name'])}** · `{status['state']}`{place}", f"device: {status.get('device') or '-'}"]
    resolved = status.get("resolved")  # "auto" settings as the worker decided them for the base
    if resolved:
        facts.append(f"quantization {resolved['quantization']}, "
                     f"gradient checkpointing {resolved['gradient_checkpointing']}")
    trained = [r for r in rows if r.get("loss") is not None]
    if status["state"] == State.COMPLETED:
        final = metrics.get("final_loss", trained[-1]["loss"] if trained else None)
        facts.append(f"final loss {final:.4g}" if isinstance(final, (int, float)) else "final loss -")
        heldout = metrics.get("heldout")  # JobConfig.heldout_problems: scored before and after training
        if heldout:
            before, after = heldout["before"], heldout["after"]
            facts.append(f"held-out problems right: {before['correct']}/{before['total']} before, "
                         f"**{after['correct']}/{after['total']} after**")
    elif status["state"] == State.RUNNING and (not rows or str(rows[-1].get("time", "")) < str(status.get("started"))):
        facts.append("loading the model and the data…")  # this run has logged no step yet: no stale figures
    elif rows and status["state"] == State.RUNNING:
        last = rows[-1]
        loss = trained[-1]["loss"] if trained else None
        facts += [f"loss {loss:.4g}" if loss is not None else "loss -", f"lr {last.get('learning_rate') or 0:.2e}",
                  f"{last.get('tokens_per_second', 0):,.0f} tokens/s", f"memory {last.get('memory_mb', 0):,.0f} MB"]
    return facts


def reward_facts(rows: list[dict], samples: list[dict]) -> list[str]:
    """A GRPO job's latest reward, its parts, the share of groups without signal (all replies scored alike), reply
    length and KL, then the replies last sampled with their rewards. None for an SFT job."""
    scored = [r for r in rows if r.get("reward") is not None]
    if not scored:
        return []
    last = scored[-1]
    figures = [f"{name.removeprefix('reward_')} {value:.2f}" for name, value in last.items()
               if name.startswith("reward_") and name != "reward_std"]
    figures += [f"no-signal groups {last['zero_std_share']:.0%}"] if "zero_std_share" in last else []
    figures += [f"replies {last['completion_length']:.0f} tokens"] if "completion_length" in last else []
    figures += [f"KL {last['kl']:.3g}"] if "kl" in last else []
    text = f"\n\n**reward {last['reward']:.3f}** ({', '.join(figures)})"
    step = max((s.get("step", 0) for s in samples), default=None)
    shown = [s for s in samples if s.get("step") == step]
    if shown:
        text += f"\n\nReplies sampled at step {step} to: {html.escape(' '.join(str(shown[0]['problem']).split()))}"
    for sample in shown:
        reply = " ".join(str(sample["reply"]).split())[:400].replace("`", "'")  # in code: <think> shows as written
        text += f"\n- reward {sample['reward']:.2f}: `{reply}`"
    return [text]


def loss_frame(rows: list[dict]) -> pd.DataFrame:
    """step, loss, curve (train or eval), numeric columns even when empty: Gradio's plots take their axis type from
    the dtypes, and an empty or object column would make a category axis that the plot keeps."""
    frame = pd.DataFrame(
        [(r["step"], r["loss"], "train") for r in rows if r.get("loss") is not None]
        + [(r["step"], r["eval_loss"], "eval") for r in rows if r.get("eval_loss") is not None],
        columns=["step", "loss", "curve"])
    return frame.astype({"step": "int64", "loss": "float64", "curve": "str"})


def lr_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([(r["step"], r["learning_rate"]) for r in rows if r.get("learning_rate") is not None],
                         columns=["step", "learning_rate"])
    return frame.astype({"step": "int64", "learning_rate": "float64"})


def job_buttons(state, kind=None) -> list:
    """Cancel, Resume, Delete and Edit as new job, then the next steps of a completed training job: shown only where
    they apply."""
    return [gr.Button(visible=state in (State.QUEUED, State.RUNNING)), gr.Button(visible=state in store.RESUMABLE),
            gr.Button(visible=state is not None and state not in store.ACTIVE), gr.Button(visible=state is not None),
            gr.Column(visible=state == State.COMPLETED and kind != "eval")]


def job_view(password, job_id):
    """Everything the monitor shows for one job, read from its folder; then the job buttons that apply."""
    refusal = instructor_refusal(password)
    if refusal:
        return refusal, "", loss_frame([]), lr_frame([]), "", *job_buttons(None)
    if not job_id:
        return "Pick a job to monitor.", "", loss_frame([]), lr_frame([]), "", *job_buttons(None)
    try:
        path = jobs.job_dir(job_id)
    except jobs.JobError as exc:
        return str(exc), "", loss_frame([]), lr_frame([]), "", *job_buttons(None)
    # From the listing, which numbers the queue; refreshed alone if it was created since.
    status = next((s for s in jobs.list_jobs() if s["id"] == path.name), None) or jobs.refresh(path)
    rows = jobs.read_progress(path)
    metrics = store.read_metrics(path) if status["state"] == State.COMPLETED else {}
    facts = job_facts(status, rows, metrics) + reward_facts(rows, store.read_samples(path))
    if status.get("reason"):
        facts.append(f"\n\n> {html.escape(status['reason'])}")
    return (" · ".join(facts), progress_html(status, rows[-1] if rows else {}), loss_frame(rows), lr_frame(rows),
            jobs.tail(path), *job_buttons(status["state"], status.get("kind")))


def job_action(password, action, job_id):
    check_instructor(password)
    if not job_id:
        raise UserError("Pick a job first.")
    try:
        if action == "cancel":
            jobs.cancel_job(job_id)
        elif action == "resume":
            if on_zero_gpu():
                raise UserError(ZERO_GPU_NOTE)
            jobs.resume_job(job_id)
            jobs.schedule()
        elif action == "delete":
            jobs.delete_job(job_id)
        else:
            raise UserError(f"Unknown job action {action!r}.")
    except jobs.JobError as exc:
        raise UserError(str(exc)) from None
    return gr.Dropdown(choices=job_ids(), value=None if action == "delete" else job_id)


NEXT_EVAL_LIMIT = 50  # problems in the one-click evaluation of a completed job: minutes on a CPU, not hours


def next_job_dir(password, job_id):
    """The next steps' checks: the instructor, and a completed job to take them from."""
    check_instructor(password)
    return publish_job_dir(job_id)


def evaluate_next(password, job_id):
    """Next step "Evaluate it": queue an evaluation of the job's adapter on GSM8K (it runs in the job queue), and pick
    it in the Evaluate tab."""
    path = next_job_dir(password, job_id)
    try:
        job = eval_job.queue_evaluation(EvalConfig(adapter=str(ModelChoice(Kind.ADAPTER, path.name)),
                                                   benchmark="gsm8k", limit=NEXT_EVAL_LIMIT))
    except (ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    jobs.schedule()
    return (f"Queued evaluation **{html.escape(job.name)}** on {NEXT_EVAL_LIMIT} GSM8K problems: "
            "watch it in the **Evaluate** tab."), gr.Dropdown(choices=eval_jobs(), value=job.name)


def try_in_tutor(password, job_id):
    """Next step "Try it in the Tutor": the job's adapter picked in the Tutor's model picker, and the Tutor shown."""
    path = next_job_dir(password, job_id)
    return gr.Dropdown(choices=list_choices(), value=str(ModelChoice(Kind.ADAPTER, path.name))), gr.Tabs(
        selected="tutor")


def publish_next(password, job_id):
    """Next steps "Merge" and "Publish": the Publish tab, with the job picked."""
    path = next_job_dir(password, job_id)
    return gr.Dropdown(choices=completed_jobs(), value=path.name), gr.Tabs(selected="publish")


def ask_delete(job_id):
    """The Delete button asks first: the confirmation row, naming the job."""
    if not job_id:
        raise UserError("Pick a job first.")
    return gr.Row(visible=True), (f"Delete **{html.escape(job_id)}** with its checkpoints and adapter? "
                                  "This cannot be undone.")


def refresh_jobs(password, job_id, request: gr.Request = None):
    """The timer's tick: the jobs table, the picker's choices, and the monitor of the pick. Without a pick, the job
    named in the page's address (?job=, kept there by the picker) is picked: a reload keeps the monitored job."""
    if instructor_refusal(password):  # students see no jobs, logs or names
        return pd.DataFrame(columns=JOB_COLUMNS), gr.Dropdown(choices=[], value=None), *job_view(password, job_id)
    ids = job_ids()
    if job_id and job_id not in ids:  # deleted meanwhile, here or by another client
        return jobs_table(), gr.Dropdown(choices=ids, value=None), *job_view(password, None)
    in_address = request.query_params.get("job") if request else None
    if not job_id and in_address in ids:  # the picker's change then shows it (picked_view)
        return jobs_table(), gr.Dropdown(choices=ids, value=in_address), *[gr.skip()] * MONITOR_SIZE
    # The choices only, and no monitor without a pick: a tick sent just before a launch or a pick would otherwise
    # answer after it with the old pick, and set it back.
    monitor = job_view(password, job_id) if job_id else [gr.skip()] * MONITOR_SIZE
    return jobs_table(), gr.Dropdown(choices=ids), *monitor


def picked_view(password, job_id):
    """A new pick (from the picker, a row click, a launch or the page's address): its monitor, with the Delete
    question and the last next step's note closed in the same update, so that nothing arriving later closes a
    question asked about the job shown."""
    return *job_view(password, job_id), gr.Row(visible=False), ""


def training_job_ids() -> list[str]:
    return [s["id"] for s in reversed(jobs.list_jobs()) if s.get("kind", "train") == "train"]


def compare_jobs(password, job_ids):
    """Compare runs: the picked jobs' loss curves, the settings that differ, their evaluation results."""
    check_instructor(password)
    try:
        return runs_view.compare_runs(list(job_ids or []))
    except store.JobError as exc:
        raise UserError(str(exc)) from None


def compare_legend(job_ids):
    """Then the jobs as the plot's legend, which redraws the chart: Gradio's LinePlot otherwise changes only its data in
    place and keeps the colours of the jobs it was first drawn with, leaving a job added later an invisible line (and
    new data with a new legend in one update redraws with the old data)."""
    return gr.LinePlot(colors_in_legend=list(job_ids or []))


def picked_row(event: gr.SelectData):
    """A click on a row of the jobs table monitors that job."""
    return gr.Dropdown(value=event.row_value[0]) if event.row_value else gr.skip()


# Runs in the page before each tick, passing its inputs on. It keeps the picked job in the page's address, so that a
# reload (or a shared link) monitors it again; without a pick it leaves the address alone, so that the first tick
# after a reload still sends the job to pick. And it keeps the password box in the cookie that lets the dataset
# upload through (RefuseUploads).
UPLOAD_COOKIE = "math_studio_instructor"
TICK_JS = """(password, job) => {
    document.cookie = "%s=" + encodeURIComponent(password || "") + "; path=/; SameSite=Strict";
    if (job) {
        const url = new URL(window.location.href);
        url.searchParams.set("job", job);
        window.history.replaceState(null, "", url);
    }
    return [password, job];
}""" % UPLOAD_COOKIE


def build_train(password: gr.Textbox):
    default = PRESETS["offline-default"].to_dict()  # the preset the form opens on
    notes = train_notes()
    gr.Markdown(notes, visible=bool(notes), elem_id="train-notes")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), value="offline-default", label="Preset recipe")
                name = gr.Textbox(label="Job name", placeholder="e.g. smollm2-basic-math")
            with gr.Row():
                preview_btn = gr.Button("Preview data")
                launch_btn = gr.Button("Launch training", variant="primary")
            guess = gr.Markdown("*Preview data to estimate the job's steps, time and memory on this machine.*",
                                elem_id="job-estimate")
            with gr.Row():
                dataset_upload = gr.UploadButton(f"Upload dataset (≤ {MAX_DATASET_MB} MB)", file_types=DATASET_TYPES,
                                                 size="sm", elem_id="dataset-upload")
                config_upload = gr.UploadButton("Load config (YAML)", file_types=[".yaml", ".yml"], size="sm")
                config_btn = gr.Button("Save config (YAML)", size="sm")
                cli_btn = gr.Button("Copy CLI command", size="sm")
            config_file = gr.File(label="Config (YAML)", visible=False, elem_id="config-file")
            cli = gr.Code(label="CLI command", language="shell", visible=False, elem_id="cli-command")
            inputs = {}
            for group in GROUPS:
                with gr.Accordion(group, open=group in OPEN_GROUPS):
                    for f in CONFIG_FIELDS:
                        if f.metadata["group"] == group:
                            inputs[f.name] = config_input(f, default[f.name])
            ordered = [inputs[f.name] for f in CONFIG_FIELDS]
        with gr.Column(scale=3):
            with gr.Accordion("Data preview", open=True):
                lengths_summary = gr.Markdown()
                histogram = gr.BarPlot(x="tokens", y="examples", title="Token length per example", height=220)
                examples = gr.Markdown(elem_id="preview-examples")
            closed = instructor_required()  # then filled in by the timer, for the instructor only
            jobs_df = gr.Dataframe(pd.DataFrame(columns=JOB_COLUMNS) if closed else jobs_table(),
                                   label="Jobs (click a row to monitor it)", interactive=False, elem_id="jobs-table")
            # Custom values: an API client may act on a job created after it connected; every handler checks the id.
            job = gr.Dropdown([] if closed else job_ids(), value=None, label="Monitor job", allow_custom_value=True)
            facts = gr.Markdown(elem_id="job-facts")
            progress = gr.HTML(elem_id="job-progress")
            with gr.Row():
                loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss", height=240,
                                        elem_id="loss-plot")
                lr_plot = gr.LinePlot(x="step", y="learning_rate", title="Learning rate", height=240)
            with gr.Row():
                cancel_btn = gr.Button("Cancel", variant="stop", visible=False)
                resume_btn = gr.Button("Resume", visible=False)
                delete_btn = gr.Button("Delete", visible=False)
                edit_btn = gr.Button("Edit as new job", visible=False)
            with gr.Column(visible=False, elem_id="next-steps") as next_row:
                gr.Markdown("**Next steps** for this completed job")  # above the buttons: in their row it got 1 letter wide
                with gr.Row():
                    evaluate_btn = gr.Button("Evaluate it", size="sm")
                    tutor_btn = gr.Button("Try it in the Tutor", size="sm")
                    merge_btn = gr.Button("Merge", size="sm")
                    publish_btn = gr.Button("Publish", size="sm")
            next_note = gr.Markdown(elem_id="next-step-note")
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown()
                confirm_btn = gr.Button("Yes, delete", variant="stop")
                keep_btn = gr.Button("Keep it")
            log = gr.Code(label="Log (tail)", language=None, lines=10)
            with gr.Accordion("Compare runs", open=False, elem_id="compare-runs"):
                with gr.Row():
                    compared = gr.Dropdown([] if closed else training_job_ids(), value=[], multiselect=True,
                                           label="Jobs to compare", elem_id="compare-jobs", scale=5)
                    compare_btn = gr.Button("Compare", size="sm", scale=1)
                curves = gr.LinePlot(runs_view.loss_curves({}), x="step", y="loss", color="job",
                                     title="Training loss", height=260, elem_id="compare-plot")
                differences = gr.Dataframe(label="Settings that differ", interactive=False, wrap=True,
                                           elem_id="compare-settings")
                results = gr.Dataframe(label="Evaluation results: accuracy (95% interval) of the problems",
                                       interactive=False, wrap=True, elem_id="compare-results")
    preset.change(preset_values, preset, ordered, api_visibility="private")
    preview_btn.click(preview_data, [password, *ordered], [examples, histogram, lengths_summary, guess])
    launch_btn.click(launch_job, [password, name, *ordered], job)
    dataset_upload.upload(upload_dataset, [password, dataset_upload], inputs["dataset"], api_visibility="private")
    config_upload.upload(load_config, [password, config_upload], ordered, api_visibility="private")
    config_btn.click(save_config, [password, name, *ordered], config_file, api_visibility="private").then(
        lambda: gr.File(visible=True), None, config_file, api_visibility="private")
    cli_btn.click(lambda *values: gr.Code(cli_command(*values), visible=True), [name, *ordered], cli,
                  api_visibility="private")
    monitor = [facts, progress, loss_plot, lr_plot, log, cancel_btn, resume_btn, delete_btn, edit_btn, next_row]
    job.change(picked_view, [password, job], [*monitor, confirm_row, next_note], api_visibility="private")
    jobs_df.select(picked_row, None, job, api_visibility="private")
    for button, action in [(cancel_btn, "cancel"), (resume_btn, "resume"), (confirm_btn, "delete")]:
        button.click(job_action, [password, gr.State(action), job], job)  # api names job_action, _1, _2
    delete_btn.click(ask_delete, job, [confirm_row, confirm_text], api_visibility="private")
    gr.on([confirm_btn.click, keep_btn.click], lambda: gr.Row(visible=False), None, confirm_row,
          api_visibility="private")
    edit_btn.click(job_config_values, [password, job], ordered, api_visibility="private")
    gr.Timer(2).tick(refresh_jobs, [password, job], [jobs_df, job, *monitor], js=TICK_JS,
                     show_progress="hidden", api_visibility="private")
    # A button, not the picker's change: two redraws of the chart at once (a pick, then another) can end on the first.
    compare_btn.click(compare_jobs, [password, compared], [curves, differences, results], api_visibility="private").then(
        compare_legend, compared, curves, api_visibility="private")
    compared.focus(lambda password: gr.Dropdown(choices=[] if instructor_refusal(password) else training_job_ids()),
                   password, compared, show_progress="hidden", api_visibility="private")  # jobs made since
    return job, next_note, [evaluate_btn, tutor_btn, merge_btn, publish_btn]


# ---------------------------------------------------------------- Publish

CARD_HEADER_RE = re.compile(r"\A---\n(.*?\n)---\n", re.S)
LOSS_IMAGE = "![Training loss](loss.png)"


def card_markdown(card: str) -> str:
    """A model card as the preview shows it: its YAML header as code, and a note where the repo's loss image goes."""
    header = CARD_HEADER_RE.match(card)
    body = card[header.end():] if header else card
    shown = f"```yaml\n{header[1]}```\n" if header else ""
    return shown + body.replace(LOSS_IMAGE, "*(the loss curve, `loss.png`, is uploaded beside the card)*")


def completed_jobs() -> list[tuple[str, str]]:
    """(label, job id) for every completed job, newest first."""
    return [(f"{s['name']} · {s['id']}" if s.get("name") else s["id"], s["id"])
            for s in reversed(jobs.list_jobs()) if s["state"] == State.COMPLETED and s.get("kind") != "eval"]


def publish_job_dir(job_id):
    """The folder of a completed job; the picker takes any value (a fresh API client has no choices), so it is
    checked here."""
    if not job_id:
        raise UserError("Pick a completed job first.")
    try:
        path = jobs.job_dir(job_id)
    except jobs.JobError as exc:
        raise UserError(str(exc)) from None
    state = jobs.refresh(path)["state"]
    if state != State.COMPLETED:
        raise UserError(f"Job {job_id} is {state}: only completed jobs can be published (resume it to finish it).")
    return path


def publish_jobs(password, job_id):
    check_instructor(password)
    choices = completed_jobs()
    return gr.Dropdown(choices=choices, value=job_id if job_id in [v for _, v in choices] else None)


def card_preview(password, job_id, repo_id, merged):
    check_instructor(password)
    if not job_id:
        return "Pick a completed job to preview its model card."
    try:
        card = publish.model_card(publish_job_dir(job_id), bool(merged), (repo_id or "").strip() or "REPO_ID")
    except publish.PublishError as exc:  # a damaged config.yaml, say which and how
        raise gr.Error(str(exc)) from None
    return card_markdown(card)


def merge_model(password, job_id, name, progress=gr.Progress()):
    check_instructor(password)
    path = publish_job_dir(job_id)
    progress(0.1, desc="Loading the base in 16-bit and merging the adapter into it")
    try:
        target = publish.merge_job(path, (name or "").strip() or None)
    except (publish.PublishError, ModelError) as exc:
        raise UserError(str(exc)) from None
    return f"Merged into `{target}`: students can pick **{target.name} (merged)** in the Tutor's model picker."


def push_model(password, job_id, repo_id, private, merged, token, progress=gr.Progress(),
               login: gr.OAuthToken | None = None):
    """Push with the token typed for this push, else the instructor's own from the Hugging Face login (on a Space),
    else HF_TOKEN; the token box is emptied once the push succeeds."""
    check_instructor(password)
    path = publish_job_dir(job_id)
    token = (token or "").strip() or (login.token if login else None)
    try:
        url = publish.push_job(path, (repo_id or "").strip(), token=token, merged=bool(merged),
                               private=bool(private), progress=lambda share, message: progress(share, desc=message))
    except (publish.PublishError, ModelError) as exc:
        raise UserError(str(exc)) from None
    return f"Pushed to [{url}]({url})", gr.Textbox(value="")


def build_publish(password: gr.Textbox):
    gr.Markdown("Share a completed job: merge its adapter into a standalone model for the Tutor, "
                "or push the adapter (or the merged model) with its model card to the Hugging Face Hub.")
    with gr.Row():
        job = gr.Dropdown([] if instructor_required() else completed_jobs(), value=None, label="Completed job",
                          scale=4, elem_id="publish-job", allow_custom_value=True)  # checked by publish_job_dir
        refresh_btn = gr.Button("Refresh", scale=1)
    with gr.Row():
        with gr.Column():
            gr.Markdown("### Merge")
            merge_name = gr.Textbox(label="Merged model name", placeholder="default: the job id")
            merge_btn = gr.Button("Merge into the base")
            merge_result = gr.Markdown(elem_id="merge-result")
            gr.Markdown("### Push to the Hugging Face Hub")
            repo_id = gr.Textbox(label="Repo id", placeholder="your-username/math-tutor")
            with gr.Row():
                private = gr.Checkbox(True, label="Private repo")
                merged = gr.Checkbox(False, label="Push the merged model instead of the adapter")
            token = gr.Textbox(label="Hugging Face token, for this push only", type="password",
                               placeholder="hf_... with write access; empty: your Hugging Face login, "
                                           "else the server's HF_TOKEN",
                               elem_id="publish-token")
            push_btn = gr.Button("Push to the Hub", variant="primary")
            push_result = gr.Markdown(elem_id="push-result")
        with gr.Column():
            gr.Markdown("### Model card preview")
            card = gr.Markdown("Pick a completed job to preview its model card.", elem_id="card-preview")
    refresh_btn.click(publish_jobs, [password, job], job, api_name="publish_jobs")
    job.focus(publish_jobs, [password, job], job, show_progress="hidden", api_visibility="private")
    gr.on([job.change, merged.change, repo_id.blur], card_preview, [password, job, repo_id, merged], card,
          api_name="publish_card")
    merge_btn.click(merge_model, [password, job, merge_name], merge_result, api_name="publish_merge",
                    concurrency_id="publish", concurrency_limit=1)
    push_btn.click(push_model, [password, job, repo_id, private, merged, token], [push_result, token],
                   api_name="publish_push", concurrency_id="publish", concurrency_limit=1)
    return job


EXAMPLE_PROBLEMS = [
    "If 3x + 7 = 22, what is x?",
    "The length of a rectangle is 3 more than twice its width, and its perimeter is 54 cm. "
    "What are its length and width?",
]


NO_ANSWER_NOTICE = "❔ *No final answer in this reply: raise max new tokens or ask again.*"


def model_picker(label="Model") -> gr.Dropdown:
    return gr.Dropdown(list_choices(), value=EMBEDDED, label=label, allow_custom_value=True,
                       info="the embedded default, a finished job's adapter, a merged model, or a Hub id / local folder")


@gpu
def chat(message: str, history: list[dict] | None = None, model: str = EMBEDDED,
         temperature: float = ChatSettings.temperature, top_p: float = ChatSettings.top_p,
         max_new_tokens: int = ChatSettings.max_new_tokens, system_prompt: str = ChatSettings.system_prompt,
         think_first: bool = ChatSettings.think_first) -> Iterator[str]:
    """The tutor as an API (`/chat`): streams the reply so far to `message` after `history` (role/content dicts)."""
    try:
        messages = [*checked_turns(history), {"role": "user", "content": checked_question(message)}]
        settings = checked_settings(temperature, top_p, max_new_tokens, system_prompt, think_first)
        yield from stream_reply(checked_model(model), messages, settings)
    except (ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    except (RuntimeError, MemoryError) as exc:
        if not OUT_OF_MEMORY_RE.search(f"{type(exc).__name__} {exc}"):
            raise
        raise UserError("The server ran out of memory for this reply: lower max new tokens, or ask again in a "
                       "moment.") from None


def checked_model(model) -> str:
    """Where an instructor password is set, students pick only what the picker lists: no folders, no Hub ids."""
    model = (model if isinstance(model, str) else "").strip() or EMBEDDED
    if instructor_required() and model not in [value for _, value in list_choices()]:
        raise UserError(f"{model!r} is not one of this class's models: pick one from the list (the embedded "
                       "default, a finished job's adapter, a merged model or a model of the tutor server).")
    return model


def respond(message, turns, shown, model, temperature, top_p, max_new_tokens, system_prompt, think_first):
    """Stream a reply into the chat: reasoning as a collapsible thought, LaTeX rendered, the final answer shown."""
    try:
        shown = [*shown, {"role": "user", "content": normalize_latex(checked_question(message))}]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    started, thought_s, text = time.time(), None, ""
    yield "", turns, shown
    for text in chat(message, turns, model, temperature, top_p, max_new_tokens, system_prompt, think_first):
        reasoning, _, done = split_reasoning(text)
        if done and reasoning is not None and thought_s is None:
            thought_s = time.time() - started
        yield "", turns, [*shown, *reply_messages(text, thought_s)]
    reasoning, answer, done = split_reasoning(text)
    notice = badge(message, answer) if answer else NO_ANSWER_NOTICE  # the app's words: a message apart, no answer
    if reasoning is not None and not done:  # the model stopped without closing its thought: close it for it
        thought_s = time.time() - started
        text += "</think>"
    turns = [*turns, {"role": "user", "content": message}, {"role": "assistant", "content": text}]
    yield "", turns, [*shown, *reply_messages(text, thought_s), {"role": "assistant", "content": notice}]


def respond_locked(*values):
    """respond, with Send disabled while the reply streams (a second Send or Enter meanwhile is ignored)."""
    for outputs in respond(*values):
        yield *outputs, gr.Button(interactive=False)
    yield gr.skip(), gr.skip(), gr.skip(), gr.Button(interactive=True)


def retry(turns, shown, model, temperature, top_p, max_new_tokens, system_prompt, think_first, data: gr.RetryData):
    """The chat's retry: the exchange's question asked again, its old reply and everything after it dropped."""
    question, turns, shown = rewind(turns, shown, data.index)
    yield from respond_locked(question, turns, shown, model, temperature, top_p, max_new_tokens, system_prompt,
                              think_first)


def edit(turns, shown, model, temperature, top_p, max_new_tokens, system_prompt, think_first, data: gr.EditData):
    """The chat's edit of a question: the edited question asked in its place, what followed it dropped."""
    _, turns, shown = rewind(turns, shown, data.index)
    yield from respond_locked(data.value, turns, shown, model, temperature, top_p, max_new_tokens, system_prompt,
                              think_first)


def undo(turns, shown, data: gr.UndoData):
    """The chat's undo: the exchange and what followed it dropped, its question back in the input box."""
    return rewind(turns, shown, data.index)


def compare_column(question, model, temperature, top_p, max_new_tokens, system_prompt, think_first):
    """One column of "Compare two models": the question, then that model's reply as it streams."""
    asked = [{"role": "user", "content": normalize_latex(question or "")}]
    for text in chat(question, [], model, temperature, top_p, max_new_tokens, system_prompt, think_first):
        yield [*asked, *reply_messages(text)]


def export_markdown(turns) -> str:
    """The conversation as a Markdown file for the download button."""
    path = served_folder() / f"tutor-conversation-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(conversation_markdown(turns or []), encoding="utf-8")
    return str(path)


def check_answer(student, turns, practice, sampled=None):
    """Check the student's answer: against a practice problem's gold answer, else against the chat problem's answer
    when it is known exactly or sampled solutions agreed on it (`sampled`); never against the tutor's reply."""
    if practice:
        correct, words = check_student_answer(student, practice.get("answer"))
        return f"{'✅' if correct else '❌'} {words}"
    question = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
    if not question:
        return "Ask the tutor a question, or get a practice problem, first."
    known = known_answer(question) or (sampled or {}).get(question)
    if known is None:
        return ("❔ This answer can't be checked: the question has no equation or arithmetic whose answer can be "
                "verified, and the tutor's reply is no proof. Try Verify by sampling, a practice problem, or a hint.")
    correct, words = grade(student, known)
    return f"{'✅' if correct else '❌'} {words}"


@gpu
def find_mistake(problem: str, solution: str, model: str = "") -> dict:
    """Find my mistake as an API (`/find_mistake`): {"first_wrong_step": 1-based step (non-empty line) or null,
    "explanation": why}. Arithmetic and equations are checked exactly; `model` (empty: none) judges the other steps."""
    try:
        judge = model_judge(checked_model(model)) if isinstance(model, str) and model.strip() else None
        return find_first_mistake(problem if isinstance(problem, str) else "", solution if isinstance(solution, str)
                                  else "", judge).as_json()
    except (ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None


def show_mistake(problem, solution, use_model, model):
    found = find_mistake(problem, solution, model if use_model else "")
    step = found["first_wrong_step"]
    if step is None:
        return f"✅ {found['explanation']}"
    return f"❌ **Step {step}:** `{split_steps(solution)[step - 1]}`\n\n{found['explanation']}"


def new_practice(seed):
    (problem,) = basic_math.generate(1, seed=int(seed))
    return problem["problem"], {"answer": problem["expected_answer"], "problem": problem["problem"]}, int(seed) + 1, ""


@gpu
def verify_by_sampling(turns, sampled, model, temperature, top_p, max_new_tokens, system_prompt):
    """Sample a few more solutions to the last question: their answer is verified when enough of them agree."""
    last = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
    if last is None:
        return "Ask the tutor a question first.", sampled
    question = turns[last]["content"]
    count, on_gpu = sample_count()
    try:
        settings = checked_settings(temperature or ChatSettings.temperature, top_p, max_new_tokens, system_prompt,
                                    False)
        answers = sample_answers(checked_model(model), turns[:last + 1], settings, count)
    except (ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    known, words = sampled_known(answers, on_gpu)
    return words, {**sampled, question: known} if known else sampled


@gpu
def give_hint(turns, practice, ladder, model):
    """The next rung of the hint ladder for the practice problem, else the last question; never its answer."""
    problem = practice.get("problem") if practice else next(
        (m["content"] for m in reversed(turns) if m["role"] == "user"), "")
    if not problem:
        return "Ask the tutor a question, or get a practice problem, first.", ladder
    hints = ladder.get("hints", []) if ladder.get("problem") == problem else []
    known = known_answer(problem)
    hidden = [practice.get("answer", ""), known.shown if known else ""] + [  # and whatever the tutor answered
        extract_answer(split_reasoning(m["content"])[1], strict=True) or "" for m in turns if m["role"] == "assistant"]
    try:
        hint, note = next_hint(problem, len(hints), hints, hidden, model_generate(checked_model(model)))
    except (ModelError, ValueError) as exc:
        raise UserError(str(exc)) from None
    hints = [*hints, hint]
    shown = "\n\n".join(f"**Hint {i + 1}, {RUNGS[min(i, len(RUNGS) - 1)][0]}:** {normalize_latex(h)}"
                         for i, h in enumerate(hints))
    return shown + (f"\n\n*{note}*" if note else ""), {"problem": problem, "hints": hints}


def build_tutor():
    settings = ChatSettings()
    turns = gr.State([])  # what the model sees: raw replies, <think> included
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Tutor", latex_delimiters=LATEX_DELIMITERS, sanitize_html=True, height=520,
                                 elem_id="tutor-chat", buttons=["copy"],
                                 editable="user")
            message = gr.Textbox(label="Your question", placeholder="Ask a math question...", elem_id="tutor-input")
            with gr.Row():
                send = gr.Button("Send", variant="primary")
                stop = gr.Button("Stop", variant="stop")
                clear = gr.Button("New chat")
                export = gr.Button("Export as Markdown")
            download = gr.File(label="Conversation", elem_id="tutor-export", height=60)
            gr.Examples(EXAMPLE_PROBLEMS, inputs=message, label="Example problems")
        with gr.Column(scale=1):
            model = model_picker()
            refresh = gr.Button("Refresh models", size="sm")
            with gr.Accordion("Generation settings", open=False):
                temperature = gr.Slider(0, 1.5, value=settings.temperature, step=0.05, label="temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1, value=settings.top_p, step=0.05, label="top-p")
                max_new_tokens = gr.Slider(16, MAX_NEW_TOKENS, value=settings.max_new_tokens, step=16,
                                           label="max new tokens")
                system_prompt = gr.Textbox(settings.system_prompt, label="Tutor system prompt", lines=4)
                think_first = gr.Checkbox(settings.think_first, label="Think first",
                                          info="open the reply with <think>, as this app's adapters were trained to")
            with gr.Accordion("Check my answer", open=True):
                practice = gr.State({})
                seed = gr.State(int(time.time()) % 10_000)
                problem = gr.Markdown("Solve a problem from the chat, or get a practice problem.")
                new_problem = gr.Button("Practice problem", size="sm")
                student = gr.Textbox(label="Your answer", placeholder="e.g. 5, 3/4, x = 2", elem_id="student-answer")
                check = gr.Button("Check", size="sm")
                verdict = gr.Markdown(elem_id="answer-verdict")
                sampled = gr.State({})  # question -> the answer sampled solutions agreed on
                verify = gr.Button("Verify by sampling", size="sm")
                sample_verdict = gr.Markdown(elem_id="sample-verdict")
                ladder = gr.State({})
                hint_btn = gr.Button("Give me a hint", size="sm")
                hint = gr.Markdown(elem_id="hint")
    inputs = [message, turns, chatbot, model, temperature, top_p, max_new_tokens, system_prompt, think_first]
    events = [trigger(respond_locked, inputs, [message, turns, chatbot, send], api_visibility="private")
              for trigger in (send.click, message.submit)]
    for event in events:  # after an error too
        event.then(lambda: gr.Button(interactive=True), None, send, queue=False, api_visibility="private")
    stop.click(lambda: gr.Button(interactive=True), None, send, cancels=events, queue=False, api_visibility="private")
    clear.click(lambda: ([], [], {}, {}, ""), None, [turns, chatbot, practice, ladder, hint], api_visibility="private")
    knobs = [model, temperature, top_p, max_new_tokens, system_prompt, think_first]
    chatbot.retry(retry, [turns, chatbot, *knobs], [message, turns, chatbot, send], api_visibility="private")
    chatbot.edit(edit, [turns, chatbot, *knobs], [message, turns, chatbot, send], api_visibility="private")
    chatbot.undo(undo, [turns, chatbot], [message, turns, chatbot], api_visibility="private")
    export.click(export_markdown, turns, download, api_visibility="private")
    # A finished job's adapter or a merged model appears in the list as soon as the picker is opened: no restart.
    gr.on([refresh.click, model.focus], lambda: gr.Dropdown(choices=list_choices()), None, model,
          show_progress="hidden", api_visibility="private")
    new_problem.click(new_practice, seed, [problem, practice, seed, verdict], api_visibility="private")
    check.click(check_answer, [student, turns, practice, sampled], verdict, api_visibility="private")
    verify.click(verify_by_sampling, [turns, sampled, model, temperature, top_p, max_new_tokens, system_prompt],
                 [sample_verdict, sampled], api_visibility="private")
    hint_btn.click(give_hint, [turns, practice, ladder, model], [hint, ladder], api_visibility="private")
    with gr.Accordion("Compare two models", open=False, elem_id="compare"):
        compare_question = gr.Textbox(label="One question for both", elem_id="compare-input")
        ask_both = gr.Button("Ask both", size="sm")
        with gr.Row():
            for side in ("a", "b"):
                with gr.Column():
                    picked = model_picker(f"Model {side.upper()}")
                    column = gr.Chatbot(latex_delimiters=LATEX_DELIMITERS, sanitize_html=True, height=360,
                                        elem_id=f"compare-{side}", show_label=False)
                ask_both.click(compare_column, [compare_question, picked, *knobs[1:]], column, api_visibility="private")
    with gr.Accordion("Find my mistake", open=False, elem_id="find-mistake"):
        with gr.Row():
            mistake_problem = gr.Textbox(label="Problem", lines=3, elem_id="mistake-problem")
            mistake_solution = gr.Textbox(label="Your worked solution, one step per line", lines=6,
                                          elem_id="mistake-solution")
        with gr.Row():
            mistake_model = gr.Checkbox(False, label="Ask the model about steps without arithmetic",
                                        info="the model picked above; its verdict is marked as the model's")
            find = gr.Button("Find my mistake", size="sm", elem_id="find-mistake-button")
        mistake = gr.Markdown(elem_id="mistake-result")
    find.click(show_mistake, [mistake_problem, mistake_solution, mistake_model, model], mistake,
               api_visibility="private")
    gr.api(find_mistake, api_name="find_mistake")  # JSON: {"first_wrong_step": n or null, "explanation": ...}
    gr.api(chat, api_name="chat")  # the tutor for other apps: gradio_client's submit(..., api_name="/chat") streams
    return model


def queue_evaluation(password, model, adapter, benchmark, data_file, limit, batch_size, max_new_tokens):
    """Queue an evaluation of base (and adapter) on the same problems; it runs in the job queue, in turn with training."""
    check_instructor(password)
    try:
        config = EvalConfig(model=(model or "").strip(), adapter=adapter or "", benchmark=benchmark,
                            data_file=(data_file or "").strip(), limit=int(limit or 0),
                            batch_size=int(batch_size or 0), max_new_tokens=int(max_new_tokens or 0))
        job = eval_job.queue_evaluation(config)
    except (ModelError, ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    jobs.schedule()
    return gr.Dropdown(choices=eval_jobs(), value=job.name)


def eval_jobs() -> list[tuple[str, str]]:
    """(label, id) of every evaluation job, newest first."""
    return [(f"{s['name']} · {s['state']}", s["id"]) for s in reversed(jobs.list_jobs()) if s.get("kind") == "eval"]


def evaluation_view(password, job_id, show, seen=None):
    """The Evaluate tab's view of one evaluation job: status, progress per batch, and once done the accuracy chart,
    the problems and the report. `seen` (the state and step last shown) skips a redraw when nothing changed."""
    nothing = ("", "", None, None, None)
    if instructor_refusal(password) or not job_id:
        return *nothing, None
    try:
        path = store.job_dir(job_id)
    except store.JobError as exc:
        return str(exc), *nothing[1:], None
    status = jobs.refresh(path)
    mark = f"{status['state']}:{status.get('step')}:{show}"
    if mark == seen:
        return *[gr.skip()] * 5, seen
    facts = f"**{html.escape(str(status.get('name')))}** · `{status['state']}`"
    if status.get("queue_place"):
        facts += f" · #{status['queue_place']} in queue"
    if status.get("reason"):
        facts += f"\n\n> {html.escape(status['reason'])}"
    reports = store.read_reports(path)
    if not reports:
        return facts, progress_html(status, (store.read_progress(path) or [{}])[-1]), None, None, None, mark
    report = reports[-1]
    facts += "\n\n" + "\n\n".join(summary_lines(report))
    return (facts, progress_html(status, {}), eval_view.accuracy_figure(report),
            eval_view.problem_table(report, show), str(download_copy(report["file"])), mark)


def evaluation(password, job_id, show):
    """`/evaluation`: an evaluation job's view for the API (and a pick in the tab), refused without the password."""
    check_instructor(password)
    return evaluation_view(password, job_id, show)


def evaluation_comparison(password):
    if instructor_refusal(password):
        return None, None
    evaluations = eval_view.completed_reports()
    return eval_view.comparison_table(evaluations), eval_view.comparison_figure(evaluations)


def cancel_evaluation(password, job_id):
    check_instructor(password)
    try:
        jobs.cancel_job(job_id or "")
    except store.JobError as exc:
        raise UserError(str(exc)) from None
    return gr.Dropdown(choices=eval_jobs(), value=job_id)


def download_copy(path) -> str:
    """A copy of a report for the page's download link, in the system's temp folder: Gradio serves files from there
    (or the working folder) only, and opening it the whole data root (jobs, logs, models) would hand that to anyone."""
    return str(shutil.copy(path, served_folder() / Path(path).name))


def served_folder() -> Path:
    """This process's folder in the system's temp folder, for files the page offers for download."""
    folder = Path(tempfile.gettempdir()) / f"math-studio-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    return folder


def adapter_choices() -> list[tuple[str, str]]:
    return [c for c in list_choices() if ModelChoice.parse(c[1]).kind is Kind.ADAPTER]


def build_evaluate(password: gr.Textbox):
    config = EvalConfig()
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Textbox(label="Base model (empty: the adapter's own base, or the embedded default)")
            adapter = gr.Dropdown(adapter_choices(), value=None, label="Adapter (a finished job)",
                                  allow_custom_value=True)
            benchmark = gr.Dropdown(list(BENCHMARKS), value=config.benchmark, label="Benchmark")
            data_file = gr.Textbox(label="Test file on the server (optional)", info="JSONL, JSON, CSV or Parquet in "
                                   "any schema training reads; empty: the benchmark's own test set")
            limit = gr.Number(50, label="Problems (0 for all)", precision=0)
            batch_size = gr.Number(config.batch_size, label="Batch size (0: as many as fit)", precision=0)
            max_new_tokens = gr.Number(config.max_new_tokens, label="Max new tokens", precision=0)
            run = gr.Button("Queue evaluation", variant="primary")
            job = gr.Dropdown([], value=None, label="Evaluation jobs", elem_id="eval-job",
                              allow_custom_value=True)  # a fresh API client has no choices; the view checks the id
            cancel = gr.Button("Cancel evaluation", size="sm")
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="eval-summary")
            progress = gr.HTML(elem_id="eval-progress")
            accuracy = gr.Plot(label="Accuracy with 95% intervals")
            show = gr.Radio(eval_view.SHOW, value="all", label="Problems")
            problems = gr.Dataframe(label="Problems and replies", wrap=True, interactive=False, max_height=420)
            report = gr.File(label="Report (JSON)")
    with gr.Accordion("Every evaluation, side by side", open=False) as every:
        compare = gr.Dataframe(wrap=True, interactive=False)
        compare_chart = gr.Plot(label="Accuracy per test set, each model's newest evaluation, 95% intervals")
        refresh = gr.Button("Refresh", size="sm")
    seen = gr.State()
    view = [summary, progress, accuracy, problems, report, seen]
    run.click(queue_evaluation, [password, model, adapter, benchmark, data_file, limit, batch_size, max_new_tokens],
              job, api_name="evaluate")
    cancel.click(cancel_evaluation, [password, job], job, api_name="cancel_evaluation")
    job.change(evaluation, [password, job, show], view, show_progress="hidden", api_name="evaluation")
    show.change(evaluation_view, [password, job, show], view, show_progress="hidden", api_visibility="private")
    gr.Timer(2).tick(evaluation_view, [password, job, show, seen], view, show_progress="hidden",
                     api_visibility="private")
    adapter.focus(lambda: gr.Dropdown(choices=adapter_choices()), None, adapter, show_progress="hidden",
                  api_visibility="private")  # a job finished since the page loaded is there when the list opens
    job.focus(lambda password: gr.Dropdown(choices=[] if instructor_refusal(password) else eval_jobs()), password, job,
              show_progress="hidden", api_visibility="private")  # students see no jobs
    for event in (every.expand, refresh.click):
        event(evaluation_comparison, password, [compare, compare_chart], api_visibility="private")
    return job


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Math Agent Studio") as demo:
        gr.Markdown("# Math Agent Studio\nFine-tune small open models to solve math step by step, and tutor with them.")
        password = gr.Textbox(label="Instructor password", type="password", visible=instructor_required(),
                              elem_id="instructor-password")
        if oauth_enabled():  # a Space with hf_oauth: pushes go out with the instructor's own account
            gr.LoginButton("Log in with Hugging Face to push")
        with gr.Tabs() as tabs:
            with gr.Tab("Tutor", id="tutor"):
                tutor_model = build_tutor()
            with gr.Tab("Train", id="train"):
                job, next_note, (evaluate_btn, tutor_btn, *publish_btns) = build_train(password)
            with gr.Tab("Evaluate", id="evaluate"):
                eval_job_picker = build_evaluate(password)
            with gr.Tab("Publish", id="publish"):
                publish_job = build_publish(password)
        # A completed job's next steps lead to the other tabs; a queued evaluation is the Evaluate tab's pick.
        evaluate_btn.click(evaluate_next, [password, job], [next_note, eval_job_picker], api_visibility="private")
        tutor_btn.click(try_in_tutor, [password, job], [tutor_model, tabs], api_visibility="private")
        for button in publish_btns:
            button.click(publish_next, [password, job], [publish_job, tabs], api_visibility="private")
    return demo


def run_scheduler(stop: threading.Event, every_s: float = 2.0) -> None:
    """Start queued jobs one at a time while the app runs; the workers themselves outlive the app."""
    while not stop.wait(every_s):
        try:
            jobs.reap()
            jobs.stop_overdue_cancels()
            jobs.schedule()
        except Exception as exc:  # noqa: BLE001 - one bad tick (a damaged file, a full disk) must not stop the queue
            log.error("The job scheduler skipped a tick: %s: %s", type(exc).__name__, exc)


def import_libraries() -> None:
    """Import once, before serving, what the handlers import lazily: two first requests at once would import the same
    names in two threads, and transformers' lazy modules can then fail with an ImportError."""
    from peft import PeftModel  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer  # noqa: F401


class RefuseUploads:
    """Gradio's upload route is open to anyone and keeps what it gets, so it answers 403 before reading a byte, unless
    the request carries the instructor cookie that the Train tab's page sets from the password box (TICK_JS; where no
    password is needed, any value). The one component that takes a file, the dataset upload, checks again."""

    def __init__(self, app):
        self.app = app

    @staticmethod
    def from_instructor(scope) -> bool:
        cookies = SimpleCookie(b"; ".join(v for k, v in scope["headers"] if k == b"cookie").decode("latin-1"))
        return UPLOAD_COOKIE in cookies and not instructor_refusal(unquote(cookies[UPLOAD_COOKIE].value))

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["path"].rstrip("/").endswith("/gradio_api/upload")
                and not self.from_instructor(scope)):
            body = b"This app takes no file uploads but an instructor's: enter the instructor password first."
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def warm_tutor():
    """Load the default model and generate one token, so that the first student does not wait for either."""
    try:
        for _ in stream_reply(EMBEDDED, [{"role": "user", "content": "1 + 1"}], ChatSettings(max_new_tokens=1)):
            pass
    except Exception:  # noqa: BLE001: a failed warm-up only means the first student waits; they see the error then
        logging.getLogger(__name__).exception("warming the tutor failed")


def main():
    import_libraries()
    jobs.list_jobs()  # on start: find every job on disk, marking those whose worker died as interrupted
    stop = threading.Event()
    threading.Thread(target=run_scheduler, args=(stop,), daemon=True, name="job-scheduler").start()
    threading.Thread(target=warm_tutor, daemon=True, name="warm-tutor").start()
    concurrency = 32 if batching_enabled() else 8  # batched replies share forward passes: let a class in at once
    build_app().queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE).launch(
        server_name=None, server_port=None, max_file_size=MAX_UPLOAD,
        app_kwargs={"middleware": [Middleware(RefuseUploads)]})


if __name__ == "__main__":
    main()
