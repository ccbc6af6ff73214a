"""What the Train tab's "Compare runs" shows of several training jobs: their loss curves in one plot, the settings that
differ between them, and their evaluation results side by side (accuracy per benchmark with its 95% interval). Pure
functions of what trainer/store.py keeps, and `compare_runs` that reads it."""

import pandas as pd

from trainer import store
from trainer.publish import eval_reports
from tutor.eval_view import accuracy_text


def loss_curves(progress: dict[str, list[dict]]) -> pd.DataFrame:
    """step, loss, job: each job's training loss, one curve per job. Numeric columns even when empty (Gradio's plots
    take their axis type from the dtypes)."""
    frame = pd.DataFrame([(r["step"], r["loss"], job) for job, rows in progress.items() for r in rows
                          if isinstance(r.get("loss"), (int, float))], columns=["step", "loss", "job"])
    return frame.astype({"step": "int64", "loss": "float64", "job": "str"})


def shown(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def config_differences(configs: dict[str, dict]) -> pd.DataFrame:
    """One row per setting whose value is not the same in every job, one column per job."""
    keys = list(dict.fromkeys(key for config in configs.values() for key in config))
    rows = [[key, *[shown(config.get(key, "")) for config in configs.values()]] for key in keys
            if len({shown(config.get(key, "")) for config in configs.values()}) > 1]
    return pd.DataFrame(rows, columns=["setting", *configs])


def eval_results(reports: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per benchmark and model (the adapter, and the base it was compared with), one column per job: the
    accuracy with its 95% interval and the number of problems, from each job's latest report per benchmark."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for job, job_reports in reports.items():
        for report in job_reports:
            for role in ("adapter", "base"):
                run = report["summary"].get(role)
                if run:
                    cells.setdefault((report["benchmark"], role), {})[job] = (
                        f"{accuracy_text(run)} of {run['total']}")
    rows = [[benchmark, role, *[cells[benchmark, role].get(job, "") for job in reports]]
            for benchmark, role in sorted(cells)]
    return pd.DataFrame(rows, columns=["benchmark", "model", *reports])


def compare_runs(job_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(loss curves, differing settings, evaluation results) of the jobs, read from their folders. Raises
    store.JobError for an id that is no job; a damaged config shows as such."""
    paths = {job_id: store.job_dir(job_id) for job_id in job_ids}
    configs = {}
    for job_id, path in paths.items():
        try:
            configs[job_id] = store.read_config(path).to_dict()
        except store.Damaged:
            configs[job_id] = {"config": "damaged"}
    return (loss_curves({job_id: store.read_progress(path) for job_id, path in paths.items()}),
            config_differences(configs), eval_results({job_id: eval_reports(path) for job_id, path in paths.items()}))
