"""In a real browser, a student asks a question, clicks the chat's Retry, and gets a new reply in its place."""

import pytest

from tests.browser import app_env, app_server, chromium, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_retry_regenerates_the_reply_and_keeps_one_exchange(data_root, tmp_path):
    with app_server(app_env(), tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text("Generation settings").click()
        page.get_by_label("temperature (0 = greedy)").last.fill("1.5")  # a new sample differs from the old one
        page.get_by_label("temperature (0 = greedy)").last.press("Enter")
        page.get_by_label("max new tokens").last.fill("32")
        page.get_by_label("max new tokens").last.press("Enter")
        page.locator("#tutor-input textarea").fill("What is 5 + 7?")
        page.get_by_role("button", name="Send").click()

        chat = page.locator("#tutor-chat")
        send = page.get_by_role("button", name="Send")
        retry = chat.get_by_role("button", name="Retry")
        retry.last.wait_for(timeout=600_000)  # shown once the reply is done
        wait_until(send.is_enabled, 60, "Send enabled after the reply")
        first = chat.get_by_test_id("bot").first.inner_text()
        retry.last.click()
        wait_until(lambda: chat.get_by_test_id("bot").count() > 0
                   and chat.get_by_test_id("bot").first.inner_text() != first
                   and send.is_enabled(), 600, "a regenerated reply")
        assert chat.get_by_test_id("user").count() == 1, chat.inner_text()  # one exchange, not two
        assert "5 + 7" in chat.get_by_test_id("user").first.inner_text()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]
