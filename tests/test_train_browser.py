"""In a real browser, an instructor previews the offline default, launches it, watches it, cancels, resumes, finishes."""

import re
import time

import pytest

from tests.browser import app_env, app_server, chromium
from trainer import jobs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for_state(page, state, timeout_s=600):
    page.locator("#job-facts").get_by_text(f"`{state}`", exact=False)
    end = time.time() + timeout_s
    while time.time() < end:
        if f"{state}" in page.locator("#job-facts").inner_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"job never became {state}: {page.locator('#job-facts').inner_text()}")


def shown_step(page) -> int:
    return int(page.locator("#job-progress .job-progress").get_attribute("data-step"))


def test_instructor_trains_the_offline_default_in_the_browser(data_root, tmp_path):
    with app_server(app_env(), tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.get_by_label("max_samples").fill("32")
        page.get_by_label("heldout_problems").fill("0")  # the preset's held-out scoring is tested in test_training.py
        page.get_by_role("button", name="Optimization").click()  # a closed group of the form
        page.get_by_label("per_device_batch_size").fill("4")

        page.get_by_role("button", name="Preview data").click()
        examples = page.locator("#preview-examples")
        examples.get_by_text("<|im_start|>assistant", exact=False).first.wait_for(timeout=120_000)
        assert "<think>" in examples.inner_text() and "\\boxed{" in examples.inner_text()
        assert re.search(r"would be truncated at max_seq_length 512", page.content())

        page.get_by_role("button", name="Launch training").click()
        page.locator(".job-progress").wait_for(timeout=60_000)
        wait_for_state(page, "running", 120)
        end = time.time() + 600
        while shown_step(page) < 3 and time.time() < end:  # the bar moves as steps finish
            time.sleep(1)
        assert shown_step(page) >= 3
        assert "tokens/s" in page.locator("#job-facts").inner_text()
        assert page.locator("#job-facts").inner_text().count("loss") >= 1

        page.get_by_role("button", name="Cancel").click()
        wait_for_state(page, "cancelled")
        (job,) = jobs.list_jobs()
        path = jobs.job_dir(job["id"])
        stopped = job["step"]
        assert (path / "adapter" / "adapter_model.safetensors").exists()

        page.reload()  # a reload (or a second browser) shows the same job, read from disk
        page.get_by_role("tab", name="Train").click()
        page.get_by_label("Monitor job").click()
        page.get_by_role("option", name=job["id"]).click()
        wait_for_state(page, "cancelled", 30)
        page.get_by_role("button", name="Resume").click()
        wait_for_state(page, "completed", 900)
        assert shown_step(page) == job["total_steps"] > stopped

    losses = [r["loss"] for r in jobs.read_progress(path) if r.get("loss") is not None]
    steps = [r["step"] for r in jobs.read_progress(path) if r.get("loss") is not None]
    assert steps == list(range(1, job["total_steps"] + 1))  # one curve, continued after the resume
    assert min(losses[-3:]) < losses[0]  # the loss fell
    assert (path / "adapter" / "adapter_config.json").exists() and (path / "metrics.json").exists()
