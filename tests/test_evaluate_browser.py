"""In a real browser, an instructor queues an evaluation of the embedded model and watches it move batch by batch,
then reads its accuracy chart, its wrong answers and the comparison of every evaluation."""

import json
import time

import pytest

from tests.browser import app_env, app_server, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def shown_step(page) -> int:
    bar = page.locator("#eval-progress .job-progress")
    return int(bar.get_attribute("data-step")) if bar.count() else 0


def test_an_evaluation_job_shows_progress_per_batch_and_its_report(data_root, tmp_path):
    problems = tmp_path / "sums.jsonl"
    problems.write_text("".join(json.dumps({"question": f"What is {a} + {a}?", "answer": f"{a} and {a}.\n#### {2 * a}"})
                                + "\n" for a in range(1, 5)))
    with app_server(app_env(), tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Evaluate").click()
        page.get_by_label("Test file on the server (optional)").fill(str(problems))
        page.get_by_label("Problems (0 for all)").fill("4")
        page.get_by_label("Batch size (0: as many as fit)").fill("1")
        page.get_by_label("Max new tokens").fill("24")
        page.get_by_role("button", name="Queue evaluation").click()

        seen, end = set(), time.time() + 600
        while "completed" not in page.locator("#eval-summary").inner_text() and time.time() < end:
            seen.add(shown_step(page))
            time.sleep(0.3)
        assert "completed" in page.locator("#eval-summary").inner_text()
        assert len(seen - {0, 4}) >= 2, seen  # the bar moved between batches, not only at the end
        summary = page.locator("#eval-summary").inner_text()
        assert "95% interval" in summary and "4 problems" in summary
        assert page.locator("img, canvas, svg").count() > 0  # the accuracy chart is drawn

        page.get_by_label("wrong").check()  # only the problems the model got wrong, each with its reply
        time.sleep(3)
        page.get_by_text("Every evaluation, side by side").click()
        page.get_by_text(str(problems), exact=False).first.wait_for(timeout=30_000)
