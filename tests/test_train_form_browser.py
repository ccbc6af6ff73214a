"""The Train tab in a real browser: a reload keeps the monitored job, the loss axis is numeric from the first step,
Delete asks first, and a CSV uploaded from the page trains a job. Jobs are written with the real writers
(trainer/jobs.py, trainer/store.py); one app serves the whole module."""

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import app
from tests.browser import app_env, app_server, chromium, wait_until
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


def a_job(name: str, state: str) -> str:
    path = jobs.create_job(JobConfig(max_samples=8), name=name)
    store.update_status(path, state=state)
    return path.name


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
    wait_until(lambda: page.locator("#loss-plot [aria-label^='step: 1;']").count() > 0, 30, "step 1 plotted")
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
    for _ in range(3):  # the pick from ?job= fires the picker's change, which closes a question asked just before it
        page.get_by_role("button", name="Delete").click()
        try:
            question.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            continue
    question.wait_for(timeout=5_000)
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
