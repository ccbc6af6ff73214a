"""The Train tab in a real browser: a reload keeps the monitored job, the loss axis is numeric from the first step,
Delete asks first, a CSV uploaded from the page trains a job, a completed job's "Evaluate it" queues an evaluation
that the Evaluate tab shows, a new adapter is in the Tutor's picker without a refresh, and Compare runs overlays
jobs' loss curves. Jobs are written with the real writers (trainer/jobs.py, trainer/store.py, and
tests/test_tutor_models.py's make_job for a completed job with its adapter); one app serves the whole module."""

import os
import re
from contextlib import contextmanager

import psutil
import pytest

import app
from tests.browser import app_env, app_server, chromium, wait_until
from tests.test_tutor_models import make_job
from trainer import jobs, store
from trainer.config import JobConfig

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("train-tab") / "studio"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MATH_STUDIO_HOME", str(root))
        with app_server(app_env(), root.parent / "app.log") as url, chromium() as browser:
            yield url, browser


def a_job(name: str, state: str, config: JobConfig | None = None) -> str:
    path = jobs.create_job(config or JobConfig(max_samples=8), name=name)
    store.update_status(path, state=state)
    return path.name


@contextmanager
def queue_held():
    """A running job whose worker is this test's own process (alive): the app's scheduler starts nothing meanwhile.
    Queued jobs left at the end are cancelled, then the queue is freed, so no worker starts for them later."""
    busy = jobs.create_job(JobConfig(max_samples=8), name="busy")
    store.update_status(busy, state="running", pid=os.getpid(), pid_started=psutil.Process().create_time())
    try:
        yield
    finally:
        for status in jobs.list_jobs():
            if status["state"] == "queued":
                jobs.cancel_job(status["id"])
        store.update_status(busy, state="cancelled", pid=None)


def train_tab(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    return page


def loss_axis(page) -> str:
    axis = page.locator("#loss-plot [aria-label^='Y-axis']")
    axis.wait_for(timeout=30_000)
    return axis.get_attribute("aria-label")


def test_reload_keeps_the_monitored_job_and_the_loss_axis_is_numeric_from_step_1(studio):
    url, browser = studio
    job = a_job("watched", "cancelled")
    page = train_tab(browser, url)
    page.locator("#jobs-table [role=gridcell]", has_text=job).first.click()  # a row click picks the job
    page.locator("#job-facts", has_text="watched").wait_for(timeout=30_000)
    wait_until(lambda: f"job={job}" in page.evaluate("location.search"), 60, "the job in the address")

    path = jobs.job_dir(job)
    store.append_progress(path, {"step": 1, "loss": 1.37, "learning_rate": 2e-4, "time": store.now()})
    wait_until(lambda: page.locator("#loss-plot [aria-label^='step: 1;']").count() > 0, 90, "step 1 plotted")
    assert "for a linear scale" in loss_axis(page)  # not "a discrete scale with 1 value"
    for step, loss in [(2, 1.18), (3, 1.11)]:
        store.append_progress(path, {"step": step, "loss": loss, "learning_rate": 2e-4, "time": store.now()})
    wait_until(lambda: page.locator("#loss-plot [aria-label^='step: 3;']").count() > 0, 30, "step 3 plotted")
    assert "for a linear scale with values from 1.1" in loss_axis(page)

    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.locator("#job-facts", has_text="watched").wait_for(timeout=30_000)
    assert page.get_by_label("Monitor job").input_value() == job
    page.close()


def test_delete_asks_first(studio):
    url, browser = studio
    job = a_job("doomed", "completed")
    page = train_tab(browser, f"{url}/?job={job}")
    page.locator("#job-facts", has_text="doomed").wait_for(timeout=30_000)
    assert not page.get_by_role("button", name="Resume").is_visible()  # a completed job cannot be resumed
    question = page.get_by_text(f"Delete {job} with its checkpoints")
    page.get_by_role("button", name="Delete").click()  # once: the pick from ?job= closes no question asked after it
    question.wait_for(timeout=15_000)
    page.wait_for_timeout(5_000)  # two more ticks of the page's timer
    assert question.is_visible()
    assert jobs.job_dir(job).exists()  # asked, not deleted
    page.get_by_role("button", name="Keep it").click()
    page.get_by_role("button", name="Yes, delete").wait_for(state="hidden")
    assert jobs.job_dir(job).exists()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    wait_until(lambda: job not in [s["id"] for s in jobs.list_jobs()], 30, "the job deleted")
    page.close()


def test_upload_a_csv_and_launch_on_it(studio, tiny_model_dir, tmp_path):
    url, browser = studio
    csv = tmp_path / "quiz.csv"
    csv.write_text("question,answer\n" + "".join(f"What is {a} + {a}?,{2 * a}\n" for a in range(1, 13)))
    page = train_tab(browser, url)
    # The page's timer sets the cookie that lets an instructor's upload through (no password needed here).
    wait_until(lambda: [c for c in page.context.cookies() if c["name"] == app.UPLOAD_COOKIE], 30, "the upload cookie")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload dataset").click()
    chooser.value.set_files(csv)
    dataset = page.get_by_label("Dataset (dataset)")
    wait_until(lambda: dataset.input_value().endswith(".csv"), 30, "the dataset set to the upload")
    spec = dataset.input_value()
    assert spec.startswith(f"file:{store.uploads_dir()}/")
    page.get_by_label("Job name").fill("from-csv")
    page.get_by_label("base_model").fill(str(tiny_model_dir))
    page.get_by_role("button", name="Optimization").click()
    page.get_by_label("max_steps").fill("2")
    page.get_by_label("per_device_batch_size").fill("2")
    page.get_by_role("button", name="Launch training").click()
    wait_until(lambda: [s for s in jobs.list_jobs() if s["name"] == "from-csv"], 60, "the job created")
    (status,) = [s for s in jobs.list_jobs() if s["name"] == "from-csv"]
    path = jobs.job_dir(status["id"])
    assert store.read_config(path).dataset == spec
    wait_until(lambda: jobs.refresh(path)["state"] in ("completed", "failed"), 600, "the job finished")
    assert jobs.refresh(path)["state"] == "completed", store.tail(path)
    assert store.has_adapter(path)
    page.close()


def test_evaluate_it_queues_an_evaluation_that_the_evaluate_tab_shows(studio, tiny_model_dir):
    url, browser = studio
    done = make_job(store.data_root(), "20250501-100000-graded-aa01", tiny_model_dir, seed=1, name="graded")
    with queue_held():
        page = train_tab(browser, f"{url}/?job={done.name}")
        page.locator("#job-facts", has_text="graded").wait_for(timeout=30_000)
        page.get_by_role("button", name="Evaluate it").click()
        page.locator("#next-step-note", has_text="Queued evaluation").wait_for(timeout=30_000)
        (evaluation,) = [s for s in jobs.list_jobs() if s.get("kind") == "eval"]
        assert store.read_status(jobs.job_dir(evaluation["id"]))["state"] == "queued"
        page.get_by_role("tab", name="Evaluate").click()
        summary = page.locator("#eval-summary")
        summary.get_by_text(f"eval adapter:{done.name}").wait_for(timeout=30_000)  # picked there, with its state
        assert summary.inner_text().endswith("queued")
        assert page.get_by_label("Evaluation jobs").input_value().startswith(f"eval adapter:{done.name}")
        page.close()


def test_a_new_adapter_is_in_the_tutors_picker_without_a_refresh(studio, tiny_model_dir):
    url, browser = studio
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)  # the Tutor's tab
    picker = page.get_by_label("Model", exact=True)
    picker.wait_for(timeout=30_000)
    make_job(store.data_root(), "20250501-110000-fresh-bb02", tiny_model_dir, seed=2, name="fresh")  # done meanwhile
    picker.click()  # opening the list, no "Refresh models"
    page.get_by_role("option", name=re.compile(r"^fresh")).click(timeout=30_000)
    wait_until(lambda: picker.input_value().startswith("fresh"), 30, "the new adapter picked")
    page.close()


def test_compare_runs_overlays_the_loss_curves_of_two_jobs(studio):
    url, browser = studio
    losses = {a_job("small-rank", "completed", JobConfig(max_samples=8, lora_r=8)): [2.5, 1.9, 1.4],
              a_job("big-rank", "completed", JobConfig(max_samples=8, lora_r=32)): [2.4, 1.2]}
    for job, values in losses.items():
        for step, loss in enumerate(values, 1):
            store.append_progress(jobs.job_dir(job), {"step": step, "loss": loss, "time": store.now()})
    page = train_tab(browser, url)
    page.get_by_text("Compare runs").click()
    chooser = page.get_by_label("Jobs to compare")
    for job in losses:
        chooser.click()
        page.get_by_role("option", name=job).click()
    page.get_by_role("button", name="Compare", exact=True).click()
    points = page.locator("#compare-plot [aria-label^='step: ']")

    def labels() -> set[str]:  # the plot's own data, as its marks describe it: "step: 1; loss: 2.5; job: <id>"
        return set(points.evaluate_all("marks => marks.map(m => m.getAttribute('aria-label'))"))

    wait_until(lambda: len(labels()) == 5, 30, "five points plotted")
    plotted = {}
    for label in labels():
        fields = dict(part.split(": ", 1) for part in label.split("; "))
        plotted.setdefault(fields["job"], []).append((int(fields["step"]), float(fields["loss"])))
    assert {job: sorted(rows) for job, rows in plotted.items()} == {
        job: list(enumerate(values, 1)) for job, values in losses.items()}
    axis = page.locator("#compare-plot [aria-label^='Y-axis']").get_attribute("aria-label")
    assert "linear scale" in axis
    legend = page.locator("#compare-plot [aria-label^='Symbol legend']")  # a colour per job: both lines are drawn
    wait_until(lambda: "with 2 values" in (legend.get_attribute("aria-label") or ""), 30, "a colour for each job")
    settings = page.locator("#compare-settings")
    assert "lora_r" in settings.inner_text() and "max_samples" not in settings.inner_text()
    page.close()
