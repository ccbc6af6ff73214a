"""The Train tab's helpers and the trainer CLI, without a browser: labels and help from JobConfig, numeric plot
frames, the monitor line, a readable log tail, uploads, config files, the CLI command, `trainer list` and `presets`."""

import dataclasses
import os
import shlex
import subprocess
import sys

import gradio as gr
import psutil
import pytest

import app
from tests.browser import ROOT
from trainer import jobs, store
from trainer.config import GROUPS, PRESETS, JobConfig


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    for name in ("INSTRUCTOR_PASSWORD", "SPACE_ID", "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "studio"


def a_job(state: str, rows: list[dict], name: str = "tiny", **status) -> str:
    """A job written by the real writers: created, then its status and progress rows as the worker leaves them. A
    running job's worker is this test's own process (alive, so the job is not found interrupted)."""
    path = jobs.create_job(JobConfig(max_samples=8), name=name)
    if state == "running":
        status.update(pid=os.getpid(), pid_started=psutil.Process().create_time())
    store.update_status(path, state=state, **status)
    for row in rows:
        store.append_progress(path, row)
    return path.name


def test_every_field_has_a_group_a_label_and_help_which_the_form_shows(root):
    demo = app.build_app()
    labels = {block.label: block for block in demo.blocks.values() if getattr(block, "label", None)}
    for f in dataclasses.fields(JobConfig):
        assert f.metadata["group"] in GROUPS and f.metadata["label"] and f.metadata["help"], f.name
        shown = labels[f"{f.metadata['label']} ({f.name})"]
        assert shown.info == f.metadata["help"]
    accordions = [block.label for block in demo.blocks.values() if isinstance(block, gr.Accordion)]
    assert [a for a in accordions if a in GROUPS] == GROUPS  # in this order: the essentials first


def test_train_help_lists_every_key_with_its_help():
    shown = subprocess.run([sys.executable, "-m", "trainer", "train", "--help"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout
    for f in dataclasses.fields(JobConfig):
        assert f"  {f.name} = " in shown and f.metadata["help"][:40] in shown.replace("\n", " ")


@pytest.mark.parametrize("rows", [
    [],  # a fresh job: nothing logged yet
    [{"step": 1, "loss": 1.37, "learning_rate": 2e-4}],
    [{"step": 1, "loss": 1.37, "learning_rate": 2e-4}, {"step": 2, "loss": None, "eval_loss": 1.18},
     {"step": 3, "loss": 1.11, "learning_rate": 1e-4}, {"step": 4, "loss": 1, "learning_rate": 0}],
])
def test_plot_axes_are_numeric_whatever_the_rows(rows):
    loss = gr.LinePlot(x="step", y="loss", color="curve").postprocess(app.loss_frame(rows))
    lr = gr.LinePlot(x="step", y="learning_rate").postprocess(app.lr_frame(rows))
    assert loss.datatypes == {"step": "quantitative", "loss": "quantitative", "curve": "nominal"}
    assert lr.datatypes == {"step": "quantitative", "learning_rate": "quantitative"}
    assert [row[1] for row in loss.data] == sorted([row[1] for row in loss.data], key=[1.37, 1.11, 1, 1.18].index)


def test_the_monitor_line_fits_the_state(root):
    row = {"step": 4, "loss": 1.25, "learning_rate": 1e-4, "tokens_per_second": 50, "memory_mb": 900,
           "time": "2026-01-01T00:00:10+00:00"}
    done = a_job("completed", [row, {"step": 4, "eval_loss": 1.4, "time": row["time"]}])
    store.write_metrics(jobs.job_dir(done), {"final_loss": 1.2345})
    facts, *_, cancel, resume, delete, edit, next_steps = app.job_view("", done)
    assert "final loss 1.234" in facts and "lr" not in facts and "tokens/s" not in facts
    heldout = {"before": {"accuracy": 0.125, "correct": 4, "total": 32},  # as trainer/train.py writes it
               "after": {"accuracy": 0.5, "correct": 16, "total": 32}}
    store.write_metrics(jobs.job_dir(done), {"final_loss": 1.2345, "heldout": heldout})
    assert "held-out problems right: 4/32 before, **16/32 after**" in app.job_view("", done)[0]
    assert [b.constructor_args["visible"] for b in (cancel, resume, delete, edit, next_steps)] == [False, False, True,
                                                                                                  True, True]

    resumed = a_job("running", [row], started="2026-01-01T00:05:00+00:00")  # logged before this run started
    facts, *_, cancel, resume, delete, _, next_steps = app.job_view("", resumed)
    assert "loading the model" in facts and "tokens/s" not in facts
    assert [b.constructor_args["visible"] for b in (cancel, resume, delete, next_steps)] == [True, False, False, False]

    running = a_job("running", [row], started="2026-01-01T00:00:00+00:00")
    assert "loss 1.25 · lr 1.00e-04 · 50 tokens/s" in app.job_view("", running)[0]
    assert "gradient checkpointing" not in app.job_view("", running)[0]  # nothing decided yet
    store.update_status(jobs.job_dir(running), resolved={"quantization": "none", "gradient_checkpointing": "off"})
    assert "quantization none, gradient checkpointing off" in app.job_view("", running)[0]  # what auto decided

    a_job("queued", [], created="2026-01-01T00:00:01+00:00")
    waiting = a_job("queued", [], name="second", created="2026-01-01T00:00:02+00:00")
    facts, *_, cancel, resume, delete, _, _ = app.job_view("", waiting)
    assert "#2 in queue" in facts and "queued #2" in app.jobs_table()["state"].tolist()
    assert [b.constructor_args["visible"] for b in (cancel, resume, delete)] == [True, False, True]


def test_a_reload_monitors_the_job_in_the_address(root):
    job = a_job("queued", [])
    (picker,) = [b for b in app.build_app().blocks.values() if getattr(b, "label", None) == "Monitor job"]
    assert picker.value is None  # not the newest job when the app started: the page's address picks
    _, picker, *monitor = app.refresh_jobs("", None, gr.Request(query_params={"job": job}))
    # The pick only: the picker's change shows the job, closing the Delete question in that same update.
    assert picker.constructor_args["value"] == job and monitor == [gr.skip()] * app.MONITOR_SIZE
    facts, *_, confirm_row, note = app.picked_view("", job)
    assert "tiny" in facts and confirm_row.constructor_args["visible"] is False and note == ""
    _, picker, *monitor = app.refresh_jobs("", None, gr.Request(query_params={"job": "no-such-job"}))
    assert "value" not in picker.constructor_args and monitor == [gr.skip()] * app.MONITOR_SIZE


def test_the_log_tail_shows_what_a_terminal_would(root):
    path = jobs.job_dir(a_job("running", []))
    store.log_file(path).write_text(
        "\x1b[32mINFO\x1b[0m start\n"
        "Loading weights:   0%|          | 0/30\rLoading weights:  50%|#####     | 15/30\r"
        "Loading weights: 100%|##########| 30/30\r\n\x1b[A\x1b[A\n"
        "{'loss': 1.25, 'grad_norm': 0.5}\n")
    assert jobs.tail(path) == "INFO start\nLoading weights: 100%|##########| 30/30\n{'loss': 1.25, 'grad_norm': 0.5}"
    store.log_file(path).write_text("x" * 70_000 + "\nlast line\n")  # longer than what is read: no cut first line
    assert jobs.tail(path) == "last line"


def test_an_uploaded_csv_becomes_a_file_spec(root, tmp_path):
    csv = tmp_path / "my quiz.csv"
    csv.write_text("question,answer\nWhat is 2 + 2?,4\nWhat is 3 * 3?,9\n")
    spec = app.upload_dataset("", str(csv))
    saved = store.uploads_dir() / spec.removeprefix(f"file:{store.uploads_dir()}/")
    assert spec.startswith("file:") and saved.read_text() == csv.read_text() and saved.suffix == ".csv"
    from trainer.data import load_examples

    assert [e["answer"] for e in load_examples(spec)] in (["4", "9"], ["9", "4"])

    garbage = tmp_path / "notes.csv"
    garbage.write_text("colour,size\nred,3\n")
    with pytest.raises(gr.Error, match="match no known math schema"):
        app.upload_dataset("", str(garbage))
    with pytest.raises(gr.Error, match="upload a .jsonl"):
        app.upload_dataset("", str(tmp_path / "my quiz.txt"))
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as handle:
        handle.truncate(app.MAX_DATASET_MB * 2**20 + 1)
    with pytest.raises(gr.Error, match="at most 50 MB"):
        app.upload_dataset("", str(big))
    assert len(list(store.uploads_dir().iterdir())) == 1  # only the good one was kept


def test_uploads_are_for_instructors(root, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "teach")
    csv = tmp_path / "quiz.csv"
    csv.write_text("question,answer\nWhat is 2 + 2?,4\n")
    with pytest.raises(gr.Error, match="Instructor login needed"):
        app.upload_dataset("wrong", str(csv))
    assert not store.uploads_dir().exists() or not list(store.uploads_dir().iterdir())
    assert app.upload_dataset("teach", str(csv)).startswith("file:")


def test_config_yaml_and_cli_command_give_back_the_form(root):
    config = dataclasses.replace(PRESETS["offline-default"], system_prompt="Be careful: \"show\" each step.\nThen",
                                 target_modules=["q_proj", "v_proj"], learning_rate=5e-4)
    values = app.form_values(config)
    assert app.load_config("", app.save_config("", "my job", *values)) == values

    words = shlex.split(app.cli_command("my job", *values))
    assert words[:6] == ["python", "-m", "trainer", "train", "--name", "my job"]
    assert JobConfig().with_overrides(words[7::2]) == config and set(words[6::2]) == {"--set"}

    job = a_job("completed", [])
    assert app.job_config_values("", job) == app.form_values(JobConfig(max_samples=8))


def test_cli_list_has_a_header_names_and_date_order(root, monkeypatch):
    first = a_job("completed", [], name="first")
    second = a_job("queued", [], name="second", created="2020-01-01T00:00:00+00:00")  # created earlier
    shown = subprocess.run([sys.executable, "-m", "trainer", "list"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert shown[0].split() == ["CREATED", "ID", "NAME", "STATE", "STEP"]
    assert [line.split()[2] for line in shown[1:]] == [second, first]
    assert shown[1].split()[3:] == ["second", "queued", "#1", "0/?"]


def test_presets_into_a_closed_pipe_and_no_bitsandbytes_alarm():
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "presets"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"# ")
    proc.stdout.close()  # what `| head -1` does
    assert b"Traceback" not in proc.stderr.read() and proc.wait() in (0, 1)
    imported = subprocess.run([sys.executable, "-c", "import trainer, bitsandbytes"], cwd=ROOT, capture_output=True,
                              text=True)
    assert imported.returncode == 0 and "gemm_4bit_forward" not in imported.stderr


def test_the_upload_route_lets_only_an_instructor_through(root, monkeypatch):
    def scope(cookie: str | None) -> dict:
        return {"headers": [(b"cookie", cookie.encode())] if cookie is not None else []}

    assert app.RefuseUploads.from_instructor(scope(f"{app.UPLOAD_COOKIE}="))  # no password needed: the page's cookie
    assert not app.RefuseUploads.from_instructor(scope(None))  # a bare POST, as from a script
    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "teach; me")
    assert app.RefuseUploads.from_instructor(scope(f"other=1; {app.UPLOAD_COOKIE}=teach%3B%20me"))
    assert not app.RefuseUploads.from_instructor(scope(f"{app.UPLOAD_COOKIE}=guess"))
    assert not app.RefuseUploads.from_instructor(scope(f"{app.UPLOAD_COOKIE}="))


def test_a_new_adapter_is_offered_by_the_pickers_when_they_open(root):
    """The Tutor's model picker and the Evaluate tab's adapter picker refresh their choices on focus: a job that
    completes after the page was built is offered without a restart or a Refresh click."""
    demo = app.build_app()
    job = a_job("completed", [])
    (store.adapter_dir(jobs.job_dir(job)) / "adapter_config.json").parent.mkdir(parents=True)
    (store.adapter_dir(jobs.job_dir(job)) / "adapter_config.json").write_text("{}")
    on_focus = [fn for fn in demo.fns.values() if any(event == "focus" for _, event in fn.targets)]
    labels = {demo.blocks[target].label for fn in on_focus for target, event in fn.targets if event == "focus"}
    assert {"Model", "Adapter (a finished job)"} <= labels
    for fn in on_focus:
        if {demo.blocks[t].label for t, _ in fn.targets} & {"Model", "Adapter (a finished job)"}:
            assert f"adapter:{job}" in [value for _, value in fn.fn().constructor_args["choices"]]
