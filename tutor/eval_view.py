"""What the Evaluate tab shows of evaluation reports: accuracy bars with their 95% intervals, the problems (all,
wrong, or where base and adapter disagree) with each reply, and every evaluation side by side. Pure functions of the
reports that tutor/evaluate.py writes and trainer/store.py keeps."""

from pathlib import PurePosixPath

import pandas as pd

from trainer import store
from tutor.evaluate import accuracy_interval

SHOW = ["all", "wrong", "base and adapter disagree"]
COMPARE_COLUMNS = ["evaluation", "finished", "test set", "problems", "base", "base accuracy", "adapter",
                   "adapter accuracy", "gain"]


def accuracy_figure(report: dict):
    """Bars of accuracy per model with the 95% Wilson interval as error bars, on a 0-100% axis."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in the web process's threads

    figure = Figure(figsize=(6, 2.8), dpi=100)
    axes = figure.subplots()
    roles = list(report["summary"])
    shares, lows, highs = [], [], []
    for role in roles:
        run = report["summary"][role]
        low, high = accuracy_interval(run["correct"], run["total"])
        shares.append(100 * run["accuracy"])
        lows.append(100 * (run["accuracy"] - low))
        highs.append(100 * (high - run["accuracy"]))
    axes.bar(roles, shares, yerr=[lows, highs], capsize=8, color=["#94a3b8", "#2563eb"][: len(roles)])
    for x, share in enumerate(shares):
        axes.annotate(f"{share:.1f}%", (x, share), textcoords="offset points", xytext=(14, 4))
    accuracy_axis(axes, [s + h for s, h in zip(shares, highs)])
    axes.set_title(f"{report['benchmark']}: {report['data']['problems']} problems, 95% intervals")
    figure.tight_layout()
    return figure


def accuracy_axis(axes, tops: list[float]) -> None:
    """A 0-100% axis up to a little above the highest bar (with its interval), and room above that for the bars'
    labels, which would otherwise run into the title at 100%."""
    top = max(10.0, min(100.0, max(tops, default=0) * 1.3))
    axes.set_ylim(0, top * 1.12)
    axes.set_yticks([tick for tick in axes.get_yticks() if 0 <= tick <= top])
    axes.set_ylabel("accuracy (%)")
    axes.grid(axis="y", alpha=0.3)


def comparison_figure(evaluations: list[tuple[dict, dict]]):
    """Bars of every model's accuracy per test set with 95% Wilson intervals: a group per test set (and number of
    problems: a run of 50 problems is not compared with one of 1,319), a bar per model from its newest evaluation
    there. `evaluations`: (status, report) newest first, as `completed_reports` gives them. None when there are none."""
    from matplotlib.figure import Figure

    groups: dict[str, dict[str, dict]] = {}  # test set -> model -> its newest run there
    for _, report in evaluations:
        data = report.get("data") or {}
        test_set = f"{test_set_name(str(data.get('source', '')))}\n{data.get('problems', '?')} problems"
        for run in (report.get("summary") or {}).values():
            groups.setdefault(test_set, {}).setdefault(run["model"], run)
    if not groups:
        return None
    models = list(dict.fromkeys(model for runs in groups.values() for model in runs))
    width = 0.8 / len(models)
    figure = Figure(figsize=(8, 3.4), dpi=100)
    axes = figure.subplots()
    tops = []
    for index, model in enumerate(models):
        placed = [(x, runs[model]) for x, runs in enumerate(groups.values()) if model in runs]
        xs = [x - 0.4 + width * (index + 0.5) for x, _ in placed]
        shares = [100 * run["accuracy"] for _, run in placed]
        intervals = [accuracy_interval(run["correct"], run["total"]) for _, run in placed]
        lows = [share - 100 * low for share, (low, _) in zip(shares, intervals)]
        highs = [100 * high - share for share, (_, high) in zip(shares, intervals)]
        axes.bar(xs, shares, width * 0.9, yerr=[lows, highs], capsize=3, label=model, color=f"C{index}")
        for x, share, high in zip(xs, shares, highs):
            axes.annotate(f"{share:.0f}%", (x, share + high), textcoords="offset points", xytext=(0, 2),
                          ha="center", fontsize=7)
        tops += [share + high for share, high in zip(shares, highs)]
    axes.set_xticks(range(len(groups)), list(groups), fontsize=8)
    accuracy_axis(axes, tops)
    axes.set_title("Every evaluation: accuracy per test set, 95% intervals")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return figure


def test_set_name(source: str) -> str:
    """A test set as the chart's axis names it: a file by its folder and name (gsm8k/test.jsonl), else as recorded."""
    if source.startswith("file:"):
        return "/".join(PurePosixPath(source.removeprefix("file:")).parts[-2:])
    return source


def problem_table(report: dict, show: str = "all") -> pd.DataFrame:
    """One row per problem: the gold answer, then each model's answer, verdict and whole reply."""
    runs = {role: run["problems"] for role, run in report.get("runs", {}).items()}
    columns = ["id", "question", "gold"]
    for role in runs:
        columns += [f"{role} answer", f"{role} right", f"{role} reply"]
    rows = []
    for index, base in enumerate(runs.get("base", [])):
        results = {role: problems[index] for role, problems in runs.items()}
        verdicts = [r["correct"] for r in results.values()]
        if show == "wrong" and all(verdicts) or show == SHOW[2] and len(set(verdicts)) < 2:
            continue
        row = [base["id"], base["question"], base["gold"]]
        for result in results.values():
            row += [result["extracted"] or "", "yes" if result["correct"] else "no", result["output"]]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def accuracy_text(run: dict | None) -> str:
    if not run:
        return ""
    low, high = accuracy_interval(run["correct"], run["total"])
    return f"{run['accuracy']:.1%} ({low:.1%}–{high:.1%})"


def completed_reports() -> list[tuple[dict, dict]]:
    """(status, report) of every completed evaluation job's reports, the job finished last first."""
    found = []
    for job in store.job_folders():
        status = store.status_or_damage(job)
        if status.get("kind") == "eval" and status["state"] == store.State.COMPLETED:
            found += [(status, report) for report in reversed(store.read_reports(job))]
    return sorted(found, key=lambda pair: str(pair[0].get("finished") or ""), reverse=True)  # stable: ties keep order


def comparison_table(evaluations: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Every completed evaluation job's report (`completed_reports`), newest first: across jobs and models, with 95%
    intervals."""
    rows = []
    for status, report in evaluations:
        summary = report.get("summary") or {}
        base, adapter = summary.get("base"), summary.get("adapter")
        gain = f"{adapter['accuracy'] - base['accuracy']:+.1%}" if base and adapter else ""
        finished = str(status.get("finished") or "")[:16].replace("T", " ")
        rows.append([status.get("name") or status.get("id", ""), finished,
                     report.get("data", {}).get("source", ""), report.get("data", {}).get("problems", ""),
                     (base or {}).get("model", ""), accuracy_text(base), (adapter or {}).get("model", ""),
                     accuracy_text(adapter), gain])
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)
