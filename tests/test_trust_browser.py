"""In a real browser: a chat problem with two roots is graded as a set (never as the tutor said), find my mistake
marks the planted wrong step, a word problem's answer is verified only by agreeing samples, and the hint ladder
climbs three rungs without giving the answer away."""

import re

import pytest

from tests.browser import app_page, set_generation
from tests.test_tutor_browser import send, wait_until
from trainer.answers import extract_answer, is_equivalent

pytestmark = [pytest.mark.browser, pytest.mark.slow]
NUMBER_RE = re.compile(r"\d*\.?\d+")


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


WORD_PROBLEM = "Tom has 3 bags with 4 apples in each bag. How many apples does he have?"


def test_a_word_problem_is_uncertain_until_agreeing_samples_verify_its_answer(data_root, tmp_path):
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=32)
        for label in ("temperature (0 = greedy)", "top-p"):  # 0.05 both: samples that agree
            page.get_by_label(label).last.fill("0.05")
            page.get_by_label(label).last.press("Enter")
        send(page, WORD_PROBLEM)
        chat = page.locator("#tutor-chat")
        wait_until(lambda: "Uncertain" in chat.inner_text(), 600, "the reply's badge")
        assert "not checked" in chat.inner_text()  # no equation or arithmetic to check a word problem against

        verdict = page.locator("#answer-verdict")
        page.locator("#student-answer textarea").fill("12")
        page.get_by_role("button", name="Check", exact=True).click()
        wait_until(lambda: "can't be checked" in verdict.inner_text(), 60, "no grading against the tutor's reply")

        page.get_by_role("button", name="Verify by sampling").click()
        sampled = page.locator("#sample-verdict")
        wait_until(lambda: "Verified" in sampled.inner_text(), 600, "the sampled solutions' badge")
        words = sampled.inner_text()
        assert "3 of 3 sampled solutions agreeing" in words and "fewer on a CPU" in words, words
        agreed = re.search(r"agreeing on (.+?) \(3 samples", words).group(1)
        for answer, mark in [(agreed, "✅"), (agreed + "1", "❌")]:  # graded against the agreed answer now
            page.locator("#student-answer textarea").fill(answer)
            page.get_by_role("button", name="Check", exact=True).click()
            wait_until(lambda: verdict.inner_text().startswith(mark), 60, f"{answer}: {mark}")
            assert mark == "❌" or "3 of 3 sampled solutions agreeing" in verdict.inner_text()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_three_hints_climb_the_ladder_without_stating_the_roots(data_root, tmp_path):
    problem, roots = "Solve $x^2-5x+6=0$.", ["2", "3"]
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=16)
        send(page, problem)
        chat = page.locator("#tutor-chat")
        wait_until(lambda: any(mark in chat.inner_text() for mark in ("Verified", "Does not check", "Uncertain",
                                                                      "No final answer")), 600, "the reply's badge")
        hint = page.locator("#hint")
        for rung in (1, 2, 3):
            page.get_by_role("button", name="Give me a hint").click()
            wait_until(lambda: f"Hint {rung}," in hint.inner_text(), 300, f"hint {rung}")
        text = hint.inner_text()
        hints = re.split(r"Hint \d, ", text)[1:]
        assert [h.split(":")[0] for h in hints] == ["the idea", "the setup", "the next step"], text
        given = set(NUMBER_RE.findall(problem))
        for words in hints:
            body = words.split(":", 1)[1]
            stated = extract_answer(body, strict=True)
            assert not (stated and is_equivalent(stated, "x = 2, x = 3")), words
            new = [n for n in NUMBER_RE.findall(body) if n not in given]  # the problem's own numbers tell nothing
            assert not any(is_equivalent(n, root) for n in new for root in roots), words
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]
