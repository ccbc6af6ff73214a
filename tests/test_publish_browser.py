"""The Publish tab end to end: the real app in a subprocess, Chromium, the real huggingface_hub client pushing to
a local stand-in for the Hub, then a merge and a chat with the merged model in the Tutor tab; and the instructor
endpoints refusing API calls without the password."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import ROOT, app_env, app_server, chromium, fetched, record_fetches
from tests.hub_standin import HubStandin

TOKEN = "hf_FAKEbrowserToken5678SecretValue"
PASSWORD = "teach-math-42"


@pytest.fixture
def hub():
    with HubStandin(user="alice", token=TOKEN) as standin:
        yield standin


def train_tiny_job(tiny_model_dir: Path, data_root: Path) -> str:
    """A completed job in seconds: the trainer's own command line, on the 2-layer model, for 2 steps."""
    settings = [f"base_model={tiny_model_dir}", "quantization=none", "max_steps=2", "max_samples=16",
                "eval_fraction=0", "per_device_batch_size=2", "gradient_accumulation_steps=1"]
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--name", "tiny",
                           *[arg for s in settings for arg in ("--set", s)]],
                          cwd=ROOT, env=app_env(MATH_STUDIO_HOME=str(data_root)), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (job,) = [p for p in (data_root / "jobs").iterdir() if p.is_dir()]
    return job.name


def files_under(root: Path):
    """Every file under `root`, not following links (the embedded model is linked in, not written)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


@pytest.mark.slow
@pytest.mark.browser
def test_push_then_merge_in_the_browser(data_root, tiny_model_dir, hub, tmp_path):
    from playwright.sync_api import expect

    from tutor.models import list_choices

    job_id = train_tiny_job(tiny_model_dir, data_root)
    gradio_tmp = tmp_path / "gradio"
    env = app_env(MATH_STUDIO_HOME=str(data_root), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                  INSTRUCTOR_PASSWORD=PASSWORD, GRADIO_TEMP_DIR=str(gradio_tmp))
    log = tmp_path / "app.log"
    repo_url = f"{hub.url}/alice/tiny-tutor"
    with app_server(env, log) as url, chromium() as browser:
        page = browser.new_page()
        received = []  # every request whose response the page got in full
        page.on("requestfinished", lambda request: received.append(request))
        record_fetches(page)  # and what the page's fetches received, streams included, as it arrives
        page.goto(url)
        page.locator("#instructor-password input").fill(PASSWORD)
        page.get_by_role("tab", name="Publish").click()
        page.get_by_role("button", name="Refresh", exact=True).click()
        page.locator("#publish-job input").click()
        page.get_by_role("option", name=re.compile(job_id)).click()
        expect(page.locator("#card-preview")).to_contain_text("How to load it", timeout=60_000)
        expect(page.locator("#card-preview")).to_contain_text("library_name: peft")

        page.get_by_label("Repo id").fill("alice/tiny-tutor")
        page.locator("#publish-token input").press_sequentially(TOKEN)
        page.get_by_role("button", name="Push to the Hub").click()
        link = page.locator("#push-result a")
        expect(link).to_have_attribute("href", repo_url, timeout=120_000)
        expect(link).to_have_text(repo_url)
        expect(page.locator("#publish-token input")).to_have_value("")  # for this push only

        page.get_by_label("Merged model name").fill("tiny-merged")
        page.get_by_role("button", name="Merge into the base").click()
        expect(page.locator("#merge-result")).to_contain_text("tiny-merged (merged)", timeout=120_000)

        page.get_by_role("tab", name="Tutor").click()  # chat with the merged model
        page.get_by_role("button", name="Refresh models").click()
        page.get_by_label("Model").first.click()
        page.get_by_role("option", name=re.compile("tiny-merged")).click()
        page.locator("#tutor-input textarea").fill("What is 2 + 3?")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#tutor-chat [data-testid='bot']").first).not_to_have_text("", timeout=120_000)
        responses = [r for r in (request.response() for request in received) if r is not None]
        texts = ([response_text(r) for r in responses] + [str(r.all_headers()) for r in responses]
                 + [f["text"] + f["headers"] for f in fetched(page)] + [page.content()])

    repo = hub.repo("alice/tiny-tutor")
    assert repo.private is True  # the checkbox's default
    assert repo.files["adapter_model.safetensors"] == (data_root / "jobs" / job_id / "adapter"
                                                       / "adapter_model.safetensors").read_bytes()
    assert {"adapter_config.json", "config.yaml", "README.md"} <= set(repo.files)
    pushed = [r for r in hub.requests if r.path.startswith(("/api/whoami", "/api/repos/create", "/api/models/alice/"))]
    assert pushed and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in pushed)  # the typed token

    merged = data_root / "models" / "merged" / "tiny-merged"
    assert (merged / "merge.json").exists() and (merged / "model.safetensors").exists()
    assert "merged:tiny-merged" in [value for _, value in list_choices()]
    assert "Traceback" not in log.read_text()

    assert any(repo_url in text for text in texts)  # the capture saw what the page was sent...
    assert not [text for text in texts if TOKEN in text]  # ...and the token was never in it
    written = list(files_under(data_root)) + list(files_under(gradio_tmp)) + [log]
    assert any(p.name == "adapter_model.safetensors" for p in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path


def response_text(response) -> str:
    if 300 <= response.status < 400:
        return ""  # a redirect has no body to read
    return response.body().decode("utf-8", "replace")


INSTRUCTOR_ENDPOINTS = {  # api name -> arguments after the password (no job: the dropdown has no choices yet)
    "/publish_jobs": [None],
    "/publish_card": [None, "alice/tutor", False],
    "/publish_merge": [None, "name"],
    "/publish_push": [None, "alice/tutor", True, False, TOKEN],
    "/launch_job": ["a job name"],  # every config input keeps its default
    "/preview_data": [],
    "/job_action": [None], "/job_action_1": [None], "/job_action_2": [None],  # cancel, resume, delete
}


def test_instructor_endpoints_refuse_api_calls_without_the_password(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    env = app_env(MATH_STUDIO_HOME=str(tmp_path / "studio"), INSTRUCTOR_PASSWORD=PASSWORD)
    with app_server(env, tmp_path / "app.log") as url:
        client = Client(url, verbose=False)
        for api_name, args in INSTRUCTOR_ENDPOINTS.items():
            for wrong in ["", "not-the-password"]:
                with pytest.raises(AppError, match="Instructor login needed"):
                    client.predict(wrong, *args, api_name=api_name)
        # With the password the same calls get past the check, to the handlers' own answers:
        assert client.predict(PASSWORD, None, api_name="/publish_jobs")["choices"] == []  # no completed jobs
        with pytest.raises(AppError, match="Pick a completed job first"):
            client.predict(PASSWORD, None, "name", api_name="/publish_merge")
    assert not [p for p in (tmp_path / "studio" / "jobs").iterdir() if p.is_dir()]  # launch_job created no job
