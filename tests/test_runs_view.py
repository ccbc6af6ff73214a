"""tutor/runs_view.py: Compare runs' loss curves (numeric axes, a curve per job), the settings that differ, and the
evaluation results side by side, from job folders written with the real writers."""

import gradio as gr
import pytest

import app
from trainer import jobs, store
from trainer.config import JobConfig
from tutor import runs_view
from tutor.evaluate import write_report


def report(benchmark: str, correct: int, total: int, base_correct: int | None = None) -> dict:
    """A report's parts that the comparison reads, in tutor/evaluate.py's layout."""
    summary = {"adapter": {"model": "adapter", "correct": correct, "total": total, "accuracy": correct / total}}
    if base_correct is not None:
        summary["base"] = {"model": "base", "correct": base_correct, "total": total, "accuracy": base_correct / total}
    return {"benchmark": benchmark, "data": {"source": benchmark, "problems": total}, "summary": summary}


def test_loss_curves_have_a_curve_per_job_on_numeric_axes():
    frame = runs_view.loss_curves({"a": [{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.9},
                                         {"step": 2, "loss": 1.5}], "b": [{"step": 1, "loss": 3}]})
    assert frame.values.tolist() == [[1, 2.0, "a"], [2, 1.5, "a"], [1, 3.0, "b"]]
    for rows in ({}, {"a": []}, {"a": [{"step": 1, "loss": 1}]}):
        plotted = gr.LinePlot(x="step", y="loss", color="job").postprocess(runs_view.loss_curves(rows))
        assert plotted.datatypes == {"step": "quantitative", "loss": "quantitative", "job": "nominal"}


def test_only_the_settings_that_differ_are_shown():
    a, b = JobConfig(lora_r=16).to_dict(), JobConfig(lora_r=64, target_modules=["q_proj", "v_proj"]).to_dict()
    table = runs_view.config_differences({"a": a, "b": b})
    assert table.columns.tolist() == ["setting", "a", "b"]
    assert table.values.tolist() == [["lora_r", "16", "64"], ["target_modules", ", ".join(a["target_modules"]),
                                                               "q_proj, v_proj"]]
    assert runs_view.config_differences({"a": a, "same": dict(a)}).empty


def test_evaluation_results_side_by_side_with_their_intervals():
    table = runs_view.eval_results({"a": [report("gsm8k", 10, 50, base_correct=4)], "b": [report("math500", 3, 20)]})
    assert table.columns.tolist() == ["benchmark", "model", "a", "b"]
    rows = {(r[0], r[1]): r[2:] for r in table.values.tolist()}
    assert rows[("gsm8k", "adapter")] == ["20.0% (11.2%–33.0%) of 50", ""]
    assert rows[("gsm8k", "base")][0].startswith("8.0% (")
    assert rows[("math500", "adapter")] == ["", "15.0% (5.2%–36.0%) of 20"]


def test_compare_runs_reads_the_job_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    for name in ("INSTRUCTOR_PASSWORD", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    a, b = jobs.create_job(JobConfig(lora_r=16), name="a"), jobs.create_job(JobConfig(lora_r=32), name="b")
    for path, losses in [(a, [2.0, 1.4]), (b, [2.1, 1.2, 0.9])]:
        for step, loss in enumerate(losses, 1):
            store.append_progress(path, {"step": step, "loss": loss})
    write_report(report("gsm8k", 5, 10), store.report_file(a, "gsm8k"))
    curves, differences, results = app.compare_jobs("", [a.name, b.name])
    assert curves.groupby("job")["loss"].count().to_dict() == {a.name: 2, b.name: 3}
    assert app.compare_legend([a.name, b.name]).constructor_args["colors_in_legend"] == [a.name, b.name]
    assert differences["setting"].tolist() == ["lora_r"]
    assert results.values.tolist() == [["gsm8k", "adapter", "50.0% (23.7%–76.3%) of 10", ""]]
    with pytest.raises(gr.Error, match="No job"):
        app.compare_jobs("", [a.name, "20990101-000000-none-0000"])
    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "secret")
    with pytest.raises(gr.Error, match="Instructor login needed"):
        app.compare_jobs("wrong", [a.name])
