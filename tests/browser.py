"""Helpers for tests that start the real app (`python app.py`) and drive it in Chromium through Playwright.

    with app_server(env={"MATH_STUDIO_HOME": str(root)}, log=tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
APP_START_S = 180  # importing gradio and transformers on 2 busy cores can be slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(**overrides: str) -> dict[str, str]:
    """This process's environment (MATH_STUDIO_HOME as a fixture set it) without secrets or Space settings that
    would change the app, plus `overrides`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "INSTRUCTOR_PASSWORD", "SPACE_ID", "SYSTEM", "SPACES_ZERO_GPU")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


@contextmanager
def app_server(env: dict[str, str], log: Path):
    """Start `python app.py` on a free port with `env` (see app_env); yield its URL once it answers; stop it.
    Its stdout and stderr go to `log`, which a failure to start quotes."""
    with app_process(env, log) as (_, url):
        yield url


@contextmanager
def app_process(env: dict[str, str], log: Path, python: str = sys.executable, app_dir: Path = ROOT):
    """app_server, yielding (process, url): stopped with Ctrl-C at the end unless the test killed it.
    `python` and `app_dir` run another interpreter on another copy of the app (the Space test's)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([python, "app.py"], cwd=app_dir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                env={**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"})
    try:
        wait_for(url, proc, log)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does: Gradio closes its server
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(check, timeout_s: float, what: str) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout_s`."""
    end = time.time() + timeout_s
    while time.time() < end:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for(url: str, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + APP_START_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode} while starting:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {APP_START_S} s:\n{log.read_text()[-4000:]}")


# Playwright reads a response's body only once it has ended, and Gradio's event stream (fetch-based SSE) stays
# open while anything is pending: this copies everything every fetch receives, as it arrives, into the page.
RECORD_FETCHES = """
window.__fetched = [];
const originalFetch = window.fetch;
window.fetch = async function (...args) {
  const response = await originalFetch.apply(window, args);
  const entry = {url: response.url, status: response.status, headers: [...response.headers].join("\\n"), text: ""};
  window.__fetched.push(entry);
  const copy = response.clone();
  if (copy.body) {
    const reader = copy.body.pipeThrough(new TextDecoderStream()).getReader();
    (async () => { for (;;) { const {done, value} = await reader.read(); if (done) break; entry.text += value; } })()
      .catch(() => { entry.text += "\\n[aborted by the page]"; });  // the page cancelled its own request
  }
  return response;
};
"""


def record_fetches(page) -> None:
    """From the next navigation on, keep what every fetch of the page receives (see `fetched`)."""
    page.add_init_script(RECORD_FETCHES)


def fetched(page) -> list[dict]:
    """{url, status, headers, text} of every fetch since `record_fetches`, streams as far as received so far."""
    return page.evaluate("window.__fetched")


@contextmanager
def chromium():
    """A headless Chromium (Debian's, with the flags this sandbox needs)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def set_generation(page, **settings) -> None:
    """Open the Tutor's generation settings and set each one, by its label ("max new tokens", ...) with _ for spaces."""
    page.get_by_text("Generation settings").click()
    for name, value in settings.items():
        field = page.get_by_label(name.replace("_", " ")).last
        field.fill(str(value))
        field.press("Enter")


@contextmanager
def app_page(tmp_path: Path, **env: str):
    """A Chromium page open on a freshly started app (`env` as app_env takes it); the app's log in tmp_path."""
    with app_server(app_env(**env), tmp_path / "app.log") as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url)
        yield page
