"""The data root and everything in it: the one module that spells a file name or a record's keys.

Where the root is: MATH_STUDIO_HOME, default a per-user data folder. On a Space, the deploy command points
MATH_STUDIO_HOME at persistent storage under /data. A Space without that storage cannot write /data; there the app
uses the default folder instead, warning that it is lost on restart, so that it still starts and students can still
use the Tutor. Anywhere else a MATH_STUDIO_HOME that cannot be written is an error.

What is in it:

    jobs/<id>/           one folder per job (training today; see trainer/jobs.py for what happens to them)
        config.yaml        the JobConfig              status.json     state, times, pid, reason, step, base model
        progress.jsonl     one row per logged step    train.log       the worker's output
        checkpoints/       Trainer checkpoints        adapter/        the PEFT adapter (final or so far)
        metrics.json       summary of a finished run  eval/           evaluation reports, <benchmark>-<time>.json
        samples.jsonl      sampled completions (reinforcement jobs)   loss.png        the model card's loss plot
        heldout.json       the report of held-out problems scored before and after training (heldout_problems)
    models/embedded/     the embedded model converted to safetensors
    models/merged/<name>/  a merged model, with merge.json saying where it came from
    eval/                evaluation reports of models that are not a job's
    uploads/             dataset files uploaded by instructors

Reads are tolerant: a damaged record (cut short, emptied, garbage) is reported as damaged with what is wrong,
never as an exception that takes a page down. Writes are atomic (a temporary file renamed over the old one).
"""

import dataclasses
import enum
import fcntl
import json
import os
import re
import secrets
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml


def default_root() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")).expanduser() / "math-agent-studio"


def configured_root() -> Path:
    return Path(os.environ.get("MATH_STUDIO_HOME") or default_root()).expanduser().resolve()


def writable(path: Path) -> bool:
    """Create `path` if needed; True when this process can write there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # permission denied, a read-only file system, a file in the way
        return False
    return os.access(path, os.W_OK)


def data_root() -> Path:
    root = configured_root()
    if writable(root):
        return root
    if not os.environ.get("SPACE_ID"):
        raise PermissionError(f"The data root {root} cannot be written: make it writable, or set MATH_STUDIO_HOME "
                              "to a folder you can write to.")
    warnings.warn(storage_message(root))  # shown once: Python's default filter repeats no warning
    fallback = default_root().resolve()
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def storage_message(configured: Path) -> str:
    return (f"MATH_STUDIO_HOME={configured} cannot be written (is persistent storage mounted at /data?): "
            f"using {default_root()} instead, which is lost when the Space restarts. Give the Space persistent "
            "storage at /data to keep jobs and models.")


def storage_warning() -> str:
    """The warning to show when the data root in use is not the configured one, else ''."""
    return storage_message(configured_root()) if data_root() != configured_root() else ""


def folder(*parts: str) -> Path:
    """A folder under the data root, made if needed."""
    path = data_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def jobs_dir() -> Path:
    return folder("jobs")


def models_dir() -> Path:
    return folder("models")


def merged_dir() -> Path:
    return folder("models", "merged")


def embedded_dir() -> Path:
    return models_dir() / "embedded"


def uploads_dir() -> Path:
    return folder("uploads")


UPLOAD_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def upload_file(name: str) -> Path:
    """Where to keep an uploaded file called `name`: a new file under uploads/, its name made safe and dated."""
    path = Path(name)
    safe = UPLOAD_NAME_RE.sub("-", path.stem).strip("-.")[:60] or "upload"
    suffix = UPLOAD_NAME_RE.sub("", path.suffix.lower())
    return uploads_dir() / f"{datetime.now():%Y%m%d-%H%M%S}-{safe}-{secrets.token_hex(2)}{suffix}"


def inside(root: Path, path: Path) -> bool:
    """True when `path` resolves to somewhere under `root` (no `..` or symlink escape)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


# ---------------------------------------------------------------- records: atomic writes, tolerant reads

class Damaged(ValueError):
    """A record on disk that cannot be read (cut short, emptied, garbage), with which file and what is wrong."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def locked(path: Path):
    """An exclusive advisory lock on `path`, shared between the app, the CLI and the worker processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def read_json(path: Path) -> dict:
    """A JSON object from `path`; {} when there is no file. Raises Damaged when it is not a whole JSON object."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(f"{path.name} in {path.parent} is damaged ({type(exc).__name__}: {exc}).") from None
    if not isinstance(value, dict):
        raise Damaged(f"{path.name} in {path.parent} is damaged: it holds a {type(value).__name__}, not a record.")
    return value


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file, one a line; a line that is not one (cut short by a kill, garbage) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ---------------------------------------------------------------- a job's folder

class State(enum.StrEnum):
    """A job's state. queued -> running -> completed | cancelled | failed; running -> cancelling -> cancelled; a
    worker that died without saying so makes it interrupted; a status that cannot be read makes it damaged."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DAMAGED = "damaged"


ACTIVE = (State.RUNNING, State.CANCELLING)
RESUMABLE = (State.CANCELLED, State.FAILED, State.INTERRUPTED)
ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class JobError(ValueError):
    """A job action that cannot be done now, with the reason."""


def job_dir(job_id: str) -> Path:
    """The folder of an existing job, refusing ids that are not one (`..`, slashes, unknown)."""
    if not ID_RE.match(job_id or "") or job_id.strip(".") == "":
        raise JobError(f"{job_id!r} is not a job id (letters, digits, '.', '_' and '-' only).")
    path = jobs_dir() / job_id
    if not inside(jobs_dir(), path) or not is_job(path):
        raise JobError(f"No job {job_id!r} in {jobs_dir()}.")
    return path


def is_job(path: Path) -> bool:
    return (path / "status.json").exists()


def job_folders() -> list[Path]:
    return sorted(p for p in jobs_dir().iterdir() if is_job(p))


def job_lock(job: Path) -> Path:
    return job / ".lock"


def config_file(job: Path) -> Path:
    return job / "config.yaml"


def log_file(job: Path) -> Path:
    return job / "train.log"


def adapter_dir(job: Path) -> Path:
    return job / "adapter"


def partial_adapter(job: Path) -> Path:
    """Where an adapter is written before it is renamed to adapter/: a folder named adapter is always whole."""
    return job / "adapter.partial"


def has_adapter(job: Path) -> bool:
    return (adapter_dir(job) / "adapter_config.json").is_file()


def checkpoints_dir(job: Path) -> Path:
    return job / "checkpoints"


def loss_plot_file(job: Path) -> Path:
    return job / "loss.png"


def cancel_flag(job: Path) -> Path:
    """Present while a cancel is asked of the job's worker, which stops at its next step."""
    return job / "CANCEL"


def write_status(job: Path, status: dict) -> None:
    write_json(job / "status.json", status)


def read_status(job: Path) -> dict:
    """The job's status. Raises Damaged when status.json cannot be read or lacks its state."""
    status = read_json(job / "status.json")
    if status.get("state") not in set(State) - {State.DAMAGED}:
        raise Damaged(f"status.json in {job} is damaged: no known state ({str(status.get('state'))[:40]!r}).")
    status["state"] = State(status["state"])
    return status


def status_or_damage(job: Path) -> dict:
    """The job's status, or a damaged one saying what is wrong: for lists and pages, which must not fail on one job."""
    try:
        return read_status(job)
    except Damaged as exc:
        created = datetime.fromtimestamp(job.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        return {"id": job.name, "name": job.name, "state": State.DAMAGED, "created": created, "step": 0,
                "reason": f"{exc} Delete the job, or repair the file by hand."}


def update_status(job: Path, **changes) -> dict:
    with locked(job_lock(job)):
        status = read_status(job)
        status.update(changes)
        write_status(job, status)
        return status


def read_config(job: Path, kind=None):
    """The job's config: a JobConfig, or `kind` (a config class with `load(path)`, such as tutor's EvalConfig).
    Raises Damaged when config.yaml cannot be read as one."""
    from trainer.config import ConfigError, JobConfig

    try:
        if not config_file(job).read_text().strip():  # the app always writes every key: empty is cut short
            raise ConfigError("the file is empty")
        return (kind or JobConfig).load(config_file(job))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, yaml.YAMLError) as exc:
        raise Damaged(f"config.yaml in {job} is damaged ({type(exc).__name__}: {str(exc)[:300]}).") from None


def config_as_trained(job: Path, status: dict):
    """The job's config (read_config) with the values its worker decided for "auto" settings, which it records in
    `status` (status.json's "resolved", trainer/train.py's load_tokenizer); as written where none are recorded."""
    return dataclasses.replace(read_config(job), **status.get("resolved", {}))


def read_progress(job: Path) -> list[dict]:
    """One row per logged step; a row without a whole-number step (a cut line, garbage) is left out."""
    return [r for r in read_jsonl(job / "progress.jsonl") if isinstance(r.get("step"), int)]


def append_progress(job: Path, row: dict) -> None:
    with open(job / "progress.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")


def write_progress(job: Path, rows: list[dict]) -> None:
    (job / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_samples(job: Path) -> list[dict]:
    return read_jsonl(job / "samples.jsonl")


def append_samples(job: Path, rows: list[dict]) -> None:
    with open(job / "samples.jsonl", "a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)


def read_metrics(job: Path) -> dict:
    try:
        return read_json(job / "metrics.json")
    except Damaged:
        return {}  # a summary only: the card and the page show "unknown" instead


def write_metrics(job: Path, metrics: dict) -> None:
    write_json(job / "metrics.json", metrics)


def tail(job: Path, lines: int = 40) -> str:
    """The log's last lines as a terminal would show them (see screen_lines)."""
    file = log_file(job)
    if not file.exists():
        return ""
    with open(file, "rb") as handle:
        start = max(0, file.stat().st_size - 64_000)
        handle.seek(start)
        shown = screen_lines(handle.read().decode("utf-8", "replace"))
    return "\n".join(shown[1 if start else 0:][-lines:])  # from the middle of the file: its first line is cut


ANSI_RE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")  # colours, cursor moves (progress bars' "\x1b[A")


def screen_lines(text: str) -> list[str]:
    """Log text without terminal control: of a line redrawn with \\r (a progress bar) only its last state, no escape
    sequences, no blank lines."""
    lines = (ANSI_RE.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]).rstrip() for line in text.split("\n"))
    return [line for line in lines if line]


# ---------------------------------------------------------------- evaluation reports

def report_file(job: Path | None, benchmark: str) -> Path:
    """Where a new report goes: beside the job it evaluates, else under the data root's eval/."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    reports = job / "eval" if job is not None else data_root() / "eval"
    return reports / f"{benchmark}-{stamp}.json"


def heldout_report_file(job: Path) -> Path:
    """The report of the held-out problems a training job scores before and after (JobConfig.heldout_problems): apart
    from eval/, whose reports are the model card's benchmarks."""
    return job / "heldout.json"


def job_of_adapter(adapter: Path) -> Path | None:
    """The job folder an adapter folder belongs to, or None for an adapter from elsewhere."""
    return adapter.parent if adapter.name == "adapter" and is_job(adapter.parent) else None


def read_reports(job: Path) -> list[dict]:
    """The job's evaluation reports, oldest first (names end in a sortable time stamp); damaged ones left out."""
    reports = []
    for path in sorted((job / "eval").glob("*.json")):
        try:
            reports.append({**read_json(path), "file": str(path)})
        except Damaged:
            continue
    return reports


# ---------------------------------------------------------------- merged models

def merged_folders() -> list[Path]:
    return sorted(p for p in merged_dir().iterdir() if (p / "merge.json").exists() and (p / "config.json").exists())


def write_merge_record(model: Path, *, job_id: str, job_name: str, base_model: str, base_path: str, dtype: str) -> None:
    write_json(model / "merge.json", {"job_id": job_id, "job_name": job_name, "base_model": base_model,
                                      "base_path": base_path, "dtype": dtype, "created": now()})


def read_merge_record(model: Path) -> dict:
    """What merge.json says of a merged model (its job, its base), plus its name and path; {} fields when damaged."""
    try:
        record = read_json(model / "merge.json")
    except Damaged:
        record = {}
    return {**record, "name": model.name, "path": str(model)}
