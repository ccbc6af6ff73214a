"""Math Agent Studio: instructors fine-tune small chat models on math, students chat with them.

One small build_<tab>() per tab; callbacks turn component values into one object, call one function of
tutor/ or trainer/, and return what the UI shows. Training runs in its own process (see trainer/jobs.py).
"""

import dataclasses
import hmac
import html
import os
import threading
import time

import gradio as gr
import pandas as pd

from trainer import jobs
from trainer.config import PRESETS, ConfigError, JobConfig
from trainer.models import ModelError

CONFIG_FIELDS = [f for f in dataclasses.fields(JobConfig)]
BASIC = ["base_model", "dataset", "max_samples", "quantization", "lora_r", "lora_alpha", "max_seq_length",
         "per_device_batch_size", "gradient_accumulation_steps", "learning_rate", "num_epochs", "max_steps"]
JOB_COLUMNS = ["id", "name", "state", "queue", "step", "base model", "created"]


def instructor_required() -> bool:
    """On a Space, or wherever INSTRUCTOR_PASSWORD is set, the instructor side needs the password."""
    return bool(os.environ.get("INSTRUCTOR_PASSWORD") or os.environ.get("SPACE_ID"))


def check_instructor(password: str) -> None:
    """Called first in every instructor event handler, so the API cannot skip what the page hides."""
    if not instructor_required():
        return
    expected = os.environ.get("INSTRUCTOR_PASSWORD", "")
    if not expected:
        raise gr.Error("The instructor side is closed: set the INSTRUCTOR_PASSWORD secret of this Space to open it.")
    if not hmac.compare_digest((password or "").encode(), expected.encode()):
        raise gr.Error("Instructor login needed: enter the instructor password at the top of the page.")


def config_input(f: dataclasses.Field, default):
    """A form component for one JobConfig field, its default and choices taken from the dataclass."""
    label = f.name
    if f.metadata.get("choices"):
        return gr.Dropdown(f.metadata["choices"], value=default, label=label)
    if f.type is bool:
        return gr.Checkbox(value=default, label=label)
    if f.type in (int, float):
        return gr.Number(value=default, label=label, precision=0 if f.type is int else None)
    if f.type == list[str]:
        return gr.Textbox(value=", ".join(default), label=label)
    return gr.Textbox(value=default, label=label, lines=3 if f.name == "system_prompt" else 1)


def form_config(values) -> JobConfig:
    return JobConfig.from_dict(dict(zip([f.name for f in CONFIG_FIELDS], values))).validate()


def preset_values(name: str) -> list:
    config = PRESETS[name]
    return [", ".join(v) if isinstance(v, list) else v for v in config.to_dict().values()]


def preview_data(password, *values):
    """Render a few examples through the chat template and show the token-length histogram."""
    check_instructor(password)
    from transformers import AutoTokenizer

    from trainer.data import preview
    from trainer.models import resolve_model

    try:
        config = form_config(values)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.base_model))
        result = preview(config, tokenizer, n=3)
    except (ConfigError, ModelError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    shown = "\n\n".join(f"### Example {i + 1}\n```text\n{text}\n```" for i, text in enumerate(result["examples"]))
    lengths = pd.Series(result["lengths"])
    width = max(8, int(lengths.max() // 20) + 1)
    bins = (lengths // width * width).value_counts().sort_index()
    histogram = pd.DataFrame({"tokens": bins.index.astype(int), "examples": bins.values})
    summary = (f"{len(lengths)} examples, median {int(lengths.median())} tokens, longest {int(lengths.max())}; "
               f"**{result['truncated_share']:.1%}** would be truncated at max_seq_length {config.max_seq_length}.")
    return shown, histogram, summary


def launch_job(password, name, *values):
    check_instructor(password)
    try:
        path = jobs.create_job(form_config(values), name=name or "")
    except (ConfigError, ModelError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    jobs.schedule()
    gr.Info(f"Job {path.name} queued.")
    return gr.Dropdown(choices=job_ids(), value=path.name)


def job_ids() -> list[str]:
    return [s["id"] for s in reversed(jobs.list_jobs())]


def jobs_table() -> pd.DataFrame:
    rows = [[s["id"], s["name"], s["state"], s.get("queue_place", ""), f"{s.get('step', 0)}/{s.get('total_steps') or '?'}",
             s.get("base_model", ""), s["created"][:19].replace("T", " ")] for s in reversed(jobs.list_jobs())]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def progress_html(status: dict, last: dict) -> str:
    step, total = status.get("step") or 0, status.get("total_steps") or 0
    share = step / total if total else 0
    eta = last.get("eta_s")
    eta_text = f" · ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}" if eta and status["state"] == "running" else ""
    return (f'<div class="job-progress" data-step="{step}" data-total="{total}">'
            f'<div style="background:#e5e7eb;border-radius:6px;height:14px">'
            f'<div style="width:{share:.1%};background:#2563eb;height:14px;border-radius:6px"></div></div>'
            f"<small>step {step} / {total or '?'} ({share:.0%}){eta_text}</small></div>")


def job_view(job_id):
    """Everything the monitor shows for one job, read from its folder."""
    if not job_id:
        return "Pick a job to monitor.", "", None, None, ""
    try:
        path = jobs.job_dir(job_id)
    except jobs.JobError as exc:
        return str(exc), "", None, None, ""
    status = jobs.refresh(path)
    rows = jobs.read_progress(path)
    last = rows[-1] if rows else {}
    place = f" · #{status['queue_place']} in queue" if "queue_place" in status else ""
    facts = [f"**{html.escape(status['name'])}** · `{status['state']}`{place}", f"device: {status.get('device') or '-'}"]
    if last:
        facts += [f"loss {last.get('loss') or '-'}", f"lr {last.get('learning_rate') or 0:.2e}",
                  f"{last.get('tokens_per_second', 0):,.0f} tokens/s", f"memory {last.get('memory_mb', 0):,.0f} MB"]
    if status.get("reason"):
        facts.append(f"\n\n> {html.escape(status['reason'])}")
    curve = pd.DataFrame(
        [{"step": r["step"], "loss": r["loss"], "curve": "train"} for r in rows if r.get("loss") is not None]
        + [{"step": r["step"], "loss": r["eval_loss"], "curve": "eval"} for r in rows if r.get("eval_loss") is not None]
    )
    lr = pd.DataFrame([{"step": r["step"], "learning_rate": r["learning_rate"]} for r in rows if r.get("learning_rate")])
    return " · ".join(facts), progress_html(status, last), curve, lr, jobs.tail(path)


def job_action(password, action, job_id):
    check_instructor(password)
    if not job_id:
        raise gr.Error("Pick a job first.")
    try:
        if action == "cancel":
            jobs.cancel_job(job_id)
        elif action == "resume":
            jobs.resume_job(job_id)
            jobs.schedule()
        else:
            jobs.delete_job(job_id)
    except jobs.JobError as exc:
        raise gr.Error(str(exc)) from None
    return gr.Dropdown(choices=job_ids(), value=None if action == "delete" else job_id)


def refresh_jobs(job_id):
    ids = job_ids()
    return jobs_table(), gr.Dropdown(choices=ids, value=job_id if job_id in ids else None), *job_view(job_id)


def build_train(password: gr.Textbox):
    default = JobConfig().to_dict()
    with gr.Row():
        with gr.Column(scale=2):
            preset = gr.Dropdown(list(PRESETS), value="offline-default", label="Preset recipe")
            name = gr.Textbox(label="Job name", placeholder="e.g. smollm2-basic-math")
            inputs = {}
            with gr.Group():
                for f in CONFIG_FIELDS:
                    if f.name in BASIC:
                        inputs[f.name] = config_input(f, default[f.name])
            with gr.Accordion("All settings", open=False):
                for f in CONFIG_FIELDS:
                    if f.name not in BASIC:
                        inputs[f.name] = config_input(f, default[f.name])
            ordered = [inputs[f.name] for f in CONFIG_FIELDS]
            with gr.Row():
                preview_btn = gr.Button("Preview data")
                launch_btn = gr.Button("Launch training", variant="primary")
        with gr.Column(scale=3):
            with gr.Accordion("Data preview", open=True):
                lengths_summary = gr.Markdown()
                histogram = gr.BarPlot(x="tokens", y="examples", title="Token length per example", height=220)
                examples = gr.Markdown(elem_id="preview-examples")
            jobs_df = gr.Dataframe(jobs_table(), label="Jobs", interactive=False, wrap=True)
            job = gr.Dropdown(job_ids(), label="Monitor job", allow_custom_value=False)
            facts = gr.Markdown(elem_id="job-facts")
            progress = gr.HTML(elem_id="job-progress")
            with gr.Row():
                loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss", height=240)
                lr_plot = gr.LinePlot(x="step", y="learning_rate", title="Learning rate", height=240)
            with gr.Row():
                cancel_btn = gr.Button("Cancel", variant="stop")
                resume_btn = gr.Button("Resume")
                delete_btn = gr.Button("Delete")
            log = gr.Code(label="Log (tail)", language=None, lines=10)
    preset.change(preset_values, preset, ordered)
    preview_btn.click(preview_data, [password, *ordered], [examples, histogram, lengths_summary])
    launch_btn.click(launch_job, [password, name, *ordered], job)
    monitor = [facts, progress, loss_plot, lr_plot, log]
    job.change(job_view, job, monitor)
    for button, action in [(cancel_btn, "cancel"), (resume_btn, "resume"), (delete_btn, "delete")]:
        button.click(job_action, [password, gr.State(action), job], job)
    gr.Timer(2).tick(refresh_jobs, job, [jobs_df, job, *monitor], show_progress="hidden")


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Math Agent Studio") as demo:
        gr.Markdown("# Math Agent Studio\nFine-tune small open models to solve math step by step, and tutor with them.")
        password = gr.Textbox(label="Instructor password", type="password", visible=instructor_required(),
                              elem_id="instructor-password")
        with gr.Tab("Train"):
            build_train(password)
    return demo


def run_scheduler(stop: threading.Event, every_s: float = 2.0) -> None:
    """Start queued jobs one at a time while the app runs; the workers themselves outlive the app."""
    while not stop.wait(every_s):
        jobs.reap()
        jobs.schedule()


def main():
    jobs.list_jobs()  # on start: find every job on disk, marking those whose worker died as interrupted
    stop = threading.Event()
    threading.Thread(target=run_scheduler, args=(stop,), daemon=True, name="job-scheduler").start()
    build_app().queue(default_concurrency_limit=8).launch(server_name=None, server_port=None)


if __name__ == "__main__":
    main()
