"""trainer.store: damaged records on disk are reported as damaged, and nothing else stops working.

Every record is written with the store's own writers (through the real job and merge code) and then damaged as a
killed process, a full disk or a careless hand would: cut short, emptied, garbage bytes, a bare number.
"""

import pytest
from gradio_client import Client

from tests.browser import app_env, app_server
from trainer import jobs, publish, store
from trainer.config import JobConfig
from trainer.store import Damaged, State

DAMAGES = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: b"",
    "garbage": lambda text: b"\xff\xfe\x00garbage",
    "number": lambda text: b"5",
}


def damage(path, how):
    path.write_bytes(DAMAGES[how](path.read_bytes()))


def completed_job(name: str):
    path = jobs.create_job(JobConfig(max_steps=1), name=name)
    store.update_status(path, state=State.COMPLETED, finished=store.now())
    return path


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_status_lists_as_damaged_and_can_be_deleted(data_root, how):
    healthy, broken = completed_job("healthy"), completed_job("broken")
    damage(broken / "status.json", how)

    listed = {s["id"]: s for s in jobs.list_jobs()}
    assert listed[healthy.name]["state"] == State.COMPLETED
    assert listed[broken.name]["state"] == State.DAMAGED and "status.json" in listed[broken.name]["reason"]
    assert jobs.schedule() is None  # the queue goes on (nothing is queued) instead of raising
    with pytest.raises(Damaged, match="status.json"):
        jobs.cancel_job(broken.name)
    jobs.delete_job(broken.name)
    assert [s["id"] for s in jobs.list_jobs()] == [healthy.name]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_progress_lines_are_left_out(data_root, how):
    path = completed_job("progress")
    store.append_progress(path, {"step": 1, "loss": 2.0})
    progress = path / "progress.jsonl"
    progress.write_bytes(progress.read_bytes() + DAMAGES[how](b'{"step": 2, "loss": 1.5}') + b"\n5\n[1]\n\xff\n")
    store.append_progress(path, {"step": 3, "loss": 1.0})
    assert [r["step"] for r in store.read_progress(path)] == [1, 3]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_config_is_named_by_every_reader(data_root, how):
    path = completed_job("config")
    damage(store.config_file(path), how)
    if how == "truncated":  # half a YAML mapping may still parse: cut it inside a value instead
        store.config_file(path).write_text("base_model: [embedded")
    with pytest.raises(Damaged, match="config.yaml"):
        store.read_config(path)
    with pytest.raises(publish.PublishError, match="config.yaml"):
        publish.model_card(path, merged=False)


def test_damaged_metrics_and_reports_are_skipped(data_root):
    path = completed_job("reports")
    store.write_metrics(path, {"final_loss": 1.0})
    damage(path / "metrics.json", "truncated")
    assert store.read_metrics(path) == {}
    good = store.report_file(path, "gsm8k")
    good.parent.mkdir()
    store.write_json(good, {"benchmark": "gsm8k", "summary": {}})
    (good.parent / "math500-20200101-000000.json").write_bytes(b"\xff")
    assert [r["benchmark"] for r in store.read_reports(path)] == ["gsm8k"]


@pytest.mark.slow
def test_the_app_starts_and_serves_with_every_kind_of_damage(data_root, tmp_path):
    """Before the store, one emptied status.json made main() fail with JSONDecodeError: no Tutor for anyone."""
    healthy = completed_job("healthy")
    for how in DAMAGES:
        damage(completed_job(f"status-{how}") / "status.json", how)
        damage(store.config_file(completed_job(f"config-{how}")), how)
    garbage = completed_job("progress-garbage")
    (garbage / "progress.jsonl").write_bytes(b"5\n\xff\xfe\n{\"step\": 1")

    with app_server(app_env(), tmp_path / "app.log") as url:
        client = Client(url, verbose=False)
        reply = client.predict("What is 2 + 3?", [], "embedded:smollm2-135m-instruct", 0.0, 1.0, 8,
                               api_name="/chat")
        assert reply.strip()
        client.predict("", "", api_name="/publish_jobs")  # answers, instead of a bare "Error"
        card = client.predict("", healthy.name, "me/tutor", False, api_name="/publish_card")
        assert "## Training data" in card
        broken = next(p.name for p in store.job_folders() if "config-garbage" in p.name)
        with pytest.raises(Exception, match="config.yaml"):
            client.predict("", broken, "me/tutor", False, api_name="/publish_card")
