"""What the Evaluate tab shows of evaluation reports: accuracy bars with their 95% intervals, the problems (all,
wrong, or where base and adapter disagree) with each reply, and every evaluation side by side. Pure functions of the
reports that tutor/evaluate.py writes and trainer/store.py keeps."""

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
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, max(10.0, min(100.0, max(s + h for s, h in zip(shares, highs)) * 1.3)))
    axes.set_title(f"{report['benchmark']}: {report['data']['problems']} problems, 95% intervals")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


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


def comparison_table() -> pd.DataFrame:
    """Every completed evaluation job's report, newest first: across jobs and models, with 95% intervals."""
    rows = []
    for job in reversed(store.job_folders()):
        status = store.status_or_damage(job)
        if status.get("kind") != "eval" or status["state"] != store.State.COMPLETED:
            continue
        for report in store.read_reports(job):
            summary = report.get("summary") or {}
            base, adapter = summary.get("base"), summary.get("adapter")
            gain = f"{adapter['accuracy'] - base['accuracy']:+.1%}" if base and adapter else ""
            rows.append([status.get("name") or job.name, str(status.get("finished") or "")[:16].replace("T", " "),
                         report.get("data", {}).get("source", ""), report.get("data", {}).get("problems", ""),
                         (base or {}).get("model", ""), accuracy_text(base), (adapter or {}).get("model", ""),
                         accuracy_text(adapter), gain])
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)
