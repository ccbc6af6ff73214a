"""tutor/eval_view.py: the Evaluate tab's accuracy charts and the comparison of every evaluation, from reports written
by the real writers into real evaluation jobs."""

import pytest
from matplotlib.container import BarContainer

from trainer import jobs, store
from trainer.store import State
from tutor.eval_view import accuracy_figure, comparison_figure, comparison_table, completed_reports
from tutor.evaluate import EvalConfig, accuracy_interval, write_report

BASE = "SmolLM2-135M-Instruct (embedded default)"


def report(source: str, problems: int, **runs: tuple[str, int]) -> dict:
    """A report as tutor/evaluate.py writes one: runs maps a role to (model, correct)."""
    summary = {role: {"model": model, "accuracy": correct / problems, "correct": correct, "total": problems}
               for role, (model, correct) in runs.items()}
    return {"benchmark": "gsm8k", "data": {"source": source, "problems": problems}, "summary": summary}


def finished_evaluation(name: str, finished: str, *reports: dict) -> None:
    job = jobs.create_job(EvalConfig(), name=name, kind="eval")
    for index, value in enumerate(reports):
        write_report(value, store.report_file(job, "gsm8k").with_name(f"gsm8k-{index}.json"))
    store.update_status(job, state=State.COMPLETED, finished=finished)


def bars(figure) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(test set, model) -> (height, error bar bottom, error bar top) of every bar in the chart."""
    axes = figure.axes[0]
    groups = {round(tick): label.get_text() for tick, label in zip(axes.get_xticks(), axes.get_xticklabels())}
    found = {}
    for container in (c for c in axes.containers if isinstance(c, BarContainer)):
        (segments,) = [c.get_segments() for c in container.errorbar.lines[2]]
        for patch, segment in zip(container.patches, segments):
            center = patch.get_x() + patch.get_width() / 2
            found[groups[round(center)], container.get_label()] = (patch.get_height(), segment[0][1], segment[1][1])
    return found


def test_every_model_on_every_test_set_is_a_bar_with_its_wilson_interval(data_root):
    test = "file:/data/gsm8k/test.jsonl"
    finished_evaluation("older", "2025-06-01T10:00:00+00:00", report(test, 50, base=(BASE, 1), adapter=("job-a", 3)))
    pending = jobs.create_job(EvalConfig(), name="still queued", kind="eval")  # not completed: not shown
    write_report(report(test, 50, base=(BASE, 40)), store.report_file(pending, "gsm8k"))
    finished_evaluation("newer", "2025-06-02T10:00:00+00:00", report(test, 50, base=(BASE, 2), adapter=("job-b", 9)),
                        report("builtin:basic-math", 20, base=(BASE, 20), adapter=("job-b", 20)))

    evaluations = completed_reports()
    assert list(comparison_table(evaluations)["evaluation"]) == ["newer", "newer", "older"]  # every one in the table
    found = bars(comparison_figure(evaluations))
    gsm8k, basic = "gsm8k/test.jsonl\n50 problems", "builtin:basic-math\n20 problems"
    assert set(found) == {(gsm8k, BASE), (gsm8k, "job-a"), (gsm8k, "job-b"), (basic, BASE), (basic, "job-b")}
    for (test_set, model), correct, total in [((gsm8k, BASE), 2, 50), ((gsm8k, "job-a"), 3, 50),
                                              ((gsm8k, "job-b"), 9, 50), ((basic, "job-b"), 20, 20)]:
        low, high = accuracy_interval(correct, total)  # the base's newest run (2 of 50), not the older 1 of 50
        assert found[test_set, model] == pytest.approx((100 * correct / total, 100 * low, 100 * high))
    assert comparison_figure([]) is None


def test_the_evaluate_tab_shows_the_table_and_the_chart_of_every_evaluation(data_root, monkeypatch):
    import app

    monkeypatch.setenv("INSTRUCTOR_PASSWORD", "secret")
    finished_evaluation("one", "2025-06-01T10:00:00+00:00", report("builtin:basic-math", 20, base=(BASE, 3)))
    table, chart = app.evaluation_comparison("secret")
    assert list(table["base accuracy"]) == ["15.0% (5.2%–36.0%)"] and list(bars(chart)) == [
        ("builtin:basic-math\n20 problems", BASE)]
    assert app.evaluation_comparison("wrong") == (None, None)  # nothing for a student


def labels_and_title(figure):
    figure.canvas.draw()  # Agg: the text's places on the page are known only once drawn
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    labels = [text.get_window_extent(renderer) for text in axes.texts]
    return labels, axes.title.get_window_extent(renderer)


@pytest.mark.parametrize("chart", ["one evaluation", "every evaluation"])
def test_a_bar_at_100_percent_keeps_its_label_clear_of_the_title(chart):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    perfect = report("builtin:basic-math", 20, base=(BASE, 20), adapter=("job-b", 20))
    figure = accuracy_figure(perfect) if chart == "one evaluation" else comparison_figure([({}, perfect)])
    FigureCanvasAgg(figure)
    labels, title = labels_and_title(figure)
    assert [text.get_text() for text in figure.axes[0].texts] == ["100.0%" if chart == "one evaluation" else "100%"] * 2
    assert len(labels) == 2 and all(label.y1 < title.y0 for label in labels)
    assert max(figure.axes[0].get_yticks()) == 100  # the room above is for the labels: no 110% tick
