"""In a real browser, a student chats with the embedded model, sees LaTeX and reasoning, and switches to an adapter."""

import subprocess
import sys

import pytest

from tests.browser import ROOT, app_env, app_page, app_server, chromium, set_generation, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]
QUESTION = r"Solve $2x + 3 = 7$ for $x$. We have $$2x = 7 - 3 = 4.$$ What is $x$?"


@pytest.fixture
def finished_job(data_root):
    """A real (short) QLoRA job on the embedded model, trained through the CLI."""
    subprocess.run([sys.executable, "-m", "trainer", "train", "--name", "tutor-test", "--set", "max_steps=2",
                    "--set", "max_samples=8", "--set", "per_device_batch_size=2", "--set", "eval_fraction=0"],
                   cwd=ROOT, check=True, capture_output=True, timeout=900)
    (job,) = (data_root / "jobs").iterdir()
    return job.name


def bot_messages(page):
    return page.locator("#tutor-chat .message.bot, #tutor-chat [data-testid='bot']")


def send(page, text):
    page.locator("#tutor-input textarea").fill(text)
    page.get_by_role("button", name="Send").click()


def test_student_chats_with_latex_reasoning_and_an_adapter(finished_job, tmp_path):
    with app_server(app_env(), tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text("Generation settings").click()
        page.get_by_label("Think first").check()  # the reply opens with <think>, as the adapters were trained
        page.get_by_label("max new tokens").last.fill("48")
        page.get_by_label("max new tokens").last.press("Enter")
        send(page, QUESTION)

        chat = page.locator("#tutor-chat")
        chat.locator(".katex-display").first.wait_for(timeout=60_000)  # display formula rendered by KaTeX
        assert chat.locator(".katex").count() >= 3  # and the inline ones
        thought = chat.get_by_text("Thinking", exact=False).first
        thought.wait_for(timeout=300_000)  # the reasoning section, open, while the model thinks
        lengths = []
        def grows():
            lengths.append(len(chat.inner_text()))
            return len(set(lengths)) >= 3
        wait_until(grows, 300, "streamed text")  # the reply arrives token by token, not at once
        chat.get_by_text("Thought for", exact=False).first.wait_for(timeout=600_000)  # closed when done
        assert chat.get_by_text("Thinking", exact=False).count() == 0

        page.get_by_role("button", name="Refresh models").click()
        page.get_by_label("Model").first.click()
        page.get_by_role("option", name="tutor-test", exact=False).click()
        page.get_by_role("button", name="New chat").click()
        wait_until(lambda: "Thought for" not in chat.inner_text(), 60, "the new chat")  # the old one is gone
        send(page, "What is 5 + 7?")
        wait_until(lambda: "Thought for" in chat.inner_text(), 600, "the adapter's full reply")
        assert "5 + 7" in chat.inner_text() and "Solve" not in chat.inner_text()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_compare_streams_the_base_and_an_adapter_in_two_columns(data_root, embedded_dir, tmp_path):
    from tests.test_tutor_models import make_job

    make_job(data_root, "tiny-job", embedded_dir, seed=1, name="tiny-adapter")  # random LoRA weights on the base
    with app_page(tmp_path) as page:
        set_generation(page, max_new_tokens=32)
        page.get_by_label("temperature (0 = greedy)").last.fill("0")  # greedy: only the weights tell them apart
        page.get_by_label("temperature (0 = greedy)").last.press("Enter")
        page.get_by_text("Compare two models").click()
        page.get_by_label("Model B").click()
        page.get_by_role("option", name="tiny-adapter", exact=False).click()
        page.locator("#compare-input textarea").fill("What is 5 + 7?")
        page.get_by_role("button", name="Ask both").click()

        columns = {side: page.locator(f"#compare-{side}") for side in "ab"}
        seen = {side: [] for side in columns}

        def replies() -> dict[str, str]:
            return {side: (column.get_by_test_id("bot").first.inner_text()
                           if column.get_by_test_id("bot").count() else "") for side, column in columns.items()}

        def both_stream_and_end() -> bool:
            for side, text in replies().items():
                seen[side].append(text)
            settled = all(len(texts) > 20 and texts[-1] and len(set(texts[-20:])) == 1 for texts in seen.values())
            return settled and all(len({t for t in texts if t}) >= 3 for texts in seen.values())

        wait_until(both_stream_and_end, 600, "two replies, each arriving piece by piece")  # then 5 s unchanged
        final = replies()
        assert final["a"] != final["b"], final  # base and adapter, not one model twice
        for column in columns.values():
            assert "5 + 7" in column.get_by_test_id("user").first.inner_text()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]
