"""benchmarks/calibration.py: the app's badge for sampled replies, the figures it reports, a run on a tiny model."""

import json

from benchmarks.calibration import badge_of, main, summarize
from tests.test_tutor_models import make_job

WORD = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in all?"
QUADRATIC = "Solve $x^2-5x+6=0$."


def test_a_badge_is_verified_when_samples_agree_and_an_equation_is_checked_exactly():
    agreed = badge_of(WORD, ["48 + 24 = 72, so \\boxed{72}", "The answer is 72.", "She sold 72 clips"], on_gpu=False)
    assert (agreed["status"], agreed["how"], agreed["answer"]) == ("verified", "sampling", "72")
    split = badge_of(WORD, ["\\boxed{72}", "\\boxed{96}", "The answer is 72.0"], on_gpu=False)
    assert (split["status"], split["answer"]) == ("uncertain", "72")  # 2 of 3 is under the 80% threshold
    assert "disagree" in split["badge"]
    right = badge_of(QUADRATIC, ["So x = 2 or x = 3: \\boxed{2, 3}", "\\boxed{1}", "\\boxed{1}"], on_gpu=True)
    assert (right["status"], right["how"], right["answer"]) == ("verified", "symbolic", "x = 2, x = 3")
    half = badge_of(QUADRATIC, ["\\boxed{x = 2}", "\\boxed{2, 3}", "\\boxed{2, 3}"], on_gpu=True)
    assert half["status"] == "does not check"  # one root of two: the reply's answer is checked, not the samples'


def test_precision_counts_right_among_verified_and_coverage_verified_among_right():
    def record(status, right, replies):
        return {"status": status, "how": "sampling", "right": right, "replies_right": replies}

    records = [record("verified", True, [True, True]), record("verified", True, [True, False]),
               record("verified", False, [False, False]), record("uncertain", True, [True, False]),
               record("uncertain", False, [False, False])]
    summary = summarize(records)
    assert summary["badges"] == {"uncertain": 2, "verified": 3}
    assert (summary["precision_of_verified"]["hits"], summary["precision_of_verified"]["of"]) == (2, 3)
    assert (summary["coverage_of_right"]["hits"], summary["coverage_of_right"]["of"]) == (2, 3)
    assert summary["accuracy"]["value"] == 0.6 and summary["single_reply_accuracy"]["value"] == 0.4
    low, high = summary["precision_of_verified"]["ci95"]
    assert 0 < low < 2 / 3 < high < 1


def test_a_run_samples_the_last_problems_for_a_base_and_its_adapter(data_root, tiny_model_dir, tmp_path):
    make_job(data_root, "job-a", tiny_model_dir, seed=1)
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {n} apples and buys 2 more. How many now?",
                                        "answer": f"{n} + 2 = {n + 2}\n#### {n + 2}"}) + "\n" for n in (3, 5, 7)))
    out = tmp_path / "calibration.json"
    assert main(["--adapter", "job-a", "--data-file", str(data), "--limit", "2", "--samples", "2",
                 "--max-new-tokens", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["base", "adapter"]
    assert report["runs"]["base"]["model"] == str(tiny_model_dir)  # the adapter's own base
    for run in report["runs"].values():
        assert [p["gold"] for p in run["problems"]] == ["7", "9"]  # the last two: held out from a "first N"
        assert all(len(p["replies"]) == 2 and len(p["answers"]) == 2 for p in run["problems"])
        assert sum(run["summary"]["badges"].values()) == 2
        assert run["summary"]["single_reply_accuracy"]["of"] == 4
