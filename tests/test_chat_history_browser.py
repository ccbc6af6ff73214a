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


def badges(chat) -> int:
    """How many replies have ended: each ends with the app's notice (its answer badge, or no final answer)."""
    text = chat.inner_text()
    return sum(text.count(mark) for mark in ("Verified", "Does not check", "Uncertain", "No final answer"))


def test_editing_an_earlier_question_answers_it_again_and_drops_what_followed(data_root, tmp_path):
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=16)
        chat = page.locator("#tutor-chat")
        send = page.get_by_role("button", name="Send")
        for asked, question in enumerate(("What is 5 + 7?", "And what is 2 + 2?"), start=1):
            page.locator("#tutor-input textarea").fill(question)
            send.click()
            wait_until(lambda: badges(chat) == asked and send.is_enabled(), 600, f"the reply to {question}")

        first = chat.get_by_test_id("user").first
        first.hover()
        chat.get_by_role("button", name="Edit").first.click()
        chat.locator("textarea").first.fill("What is 8 + 9?")
        chat.get_by_role("button", name="Submit").first.click()
        wait_until(lambda: "8 + 9" in chat.inner_text() and badges(chat) == 1 and send.is_enabled(), 600,
                   "the edited question's reply")
        assert chat.get_by_test_id("user").count() == 1, chat.inner_text()  # the later exchange is gone
        assert "5 + 7" not in chat.inner_text()

        page.get_by_role("button", name="Export as Markdown").click()  # what the model sees now, not only the display
        link = page.locator("#tutor-export a").first
        link.wait_for(timeout=60_000)
        exported = page.request.get(link.get_attribute("href")).text()
        assert "What is 8 + 9?" in exported and "5 + 7" not in exported and "2 + 2" not in exported, exported
        assert exported.count("## Tutor") == 1, exported
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]
