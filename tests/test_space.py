"""Running as a Space: ZeroGPU (generation wrapped, training refused with a reason) and a data root on /data."""

import gradio as gr
import pytest

import app
from trainer import store


def component(demo: gr.Blocks, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_gpu_helper_leaves_functions_alone_without_zero_gpu():
    def reply(message):
        yield message

    assert app.gpu(reply) is reply
    assert app.gpu(duration=120)(reply) is reply


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("", False), ("false", False)])
def test_zero_gpu_is_read_from_the_space_variable(monkeypatch, value, expected):
    monkeypatch.setenv("SPACES_ZERO_GPU", value)
    assert app.on_zero_gpu() is expected


def test_zero_gpu_refuses_training_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(gr.Error, match="training needs dedicated GPU hardware"):
        app.launch_job("", "a job", *app.preset_values("offline-default"))
    with pytest.raises(gr.Error, match="training needs dedicated GPU hardware"):
        app.job_action("", "resume", "some-job")
    assert not (tmp_path / "studio" / "jobs").exists()  # no job was created
    note = component(app.build_app(), "train-notes")
    assert note.visible and "training needs dedicated GPU hardware" in note.value


def test_no_note_on_ordinary_hardware(monkeypatch, tmp_path):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert app.train_notes() == ""
    assert component(app.build_app(), "train-notes").visible is False


def test_data_root_without_persistent_storage_on_a_space(monkeypatch, tmp_path):
    (tmp_path / "data").write_text("not a folder")  # like /data on a Space without storage: nothing can go there
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "data" / "math-agent-studio"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "local"))
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    with pytest.warns(UserWarning, match="lost when the Space restarts"):
        root = store.data_root()
    assert root == tmp_path / "local" / "math-agent-studio"
    with pytest.warns(UserWarning):
        assert store.jobs_dir() == root / "jobs" and store.jobs_dir().is_dir()
        warning = store.storage_warning()
        assert str(tmp_path / "data" / "math-agent-studio") in warning and "persistent storage" in warning
        assert warning in app.train_notes()


def test_data_root_that_cannot_be_written_elsewhere_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "data").write_text("not a folder")
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "data" / "studio"))
    monkeypatch.delenv("SPACE_ID", raising=False)
    with pytest.raises(PermissionError, match="cannot be written: make it writable, or set MATH_STUDIO_HOME"):
        store.data_root()


def test_writable_data_root_is_used_as_set(monkeypatch, tmp_path):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    monkeypatch.setenv("SPACE_ID", "alice/studio")
    assert store.data_root() == tmp_path / "studio" and (tmp_path / "studio").is_dir()
    assert store.storage_warning() == ""
