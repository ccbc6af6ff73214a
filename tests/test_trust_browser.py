"""In a real browser: a chat problem with two roots is graded as a set (never as the tutor said), and find my
mistake marks the planted wrong step."""

import pytest

from tests.browser import app_page, set_generation
from tests.test_tutor_browser import send, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_two_roots_are_graded_as_a_set_and_a_planted_error_is_found(data_root, tmp_path):
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=16)
        send(page, "Solve $x^2-5x+6=0$.")
        send_button = page.get_by_role("button", name="Send")
        wait_until(send_button.is_disabled, 60, "Send disabled while the reply streams")
        chat = page.locator("#tutor-chat")
        wait_until(lambda: any(mark in chat.inner_text() for mark in ("Verified", "Does not check", "Uncertain",
                                                                      "No final answer")), 600, "the reply's badge")
        assert send_button.is_enabled()

        verdict = page.locator("#answer-verdict")
        for answer, mark in [("x = 2, x = 3", "✅"), ("x = 2", "❌"), ("{3, 2}", "✅")]:
            page.locator("#student-answer textarea").fill(answer)
            page.get_by_role("button", name="Check", exact=True).click()
            wait_until(lambda: verdict.inner_text().startswith(mark) and (answer != "x = 2" or "solutions" in
                                                                           verdict.inner_text()), 60, f"{answer}: {mark}")

        page.locator("#find-mistake").get_by_text("Find my mistake").first.click()
        page.locator("#mistake-problem textarea").fill("If 3x + 7 = 22, what is x?")
        page.locator("#mistake-solution textarea").fill("3x + 7 = 22\n3x = 22 - 7 = 15\nx = 15/3 = 6\nSo x = 6")
        page.locator("#find-mistake-button").click()
        result = page.locator("#mistake-result")
        wait_until(lambda: "Step 3" in result.inner_text(), 60, "the first wrong step")
        assert "15/3 = 5, not 6" in result.inner_text()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]
