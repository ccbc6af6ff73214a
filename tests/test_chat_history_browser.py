"""In a real browser, a student asks a question, clicks the chat's Retry, and gets a new reply in its place."""

import pytest

from tests.browser import app_page, set_generation, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_retry_regenerates_the_reply_and_keeps_one_exchange(data_root, tmp_path):
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=32)
        page.get_by_label("temperature (0 = greedy)").last.fill("1.5")  # a new sample differs from the old one
        page.get_by_label("temperature (0 = greedy)").last.press("Enter")
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
