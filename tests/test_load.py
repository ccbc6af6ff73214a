"""Load, in CI's short form: 6 students chatting with the embedded model through the real server for 20 s, then a
burst beyond what the queue holds. The 2-minute form (20 students while a job trains) is a documented command:
`python benchmarks/load_students.py --students 20 --seconds 120 --train` (figures in docs/reliability.md)."""

import threading

import pytest

from benchmarks.load_students import BUSY, app_process, ask, run_load
from trainer.models import EMBEDDED

pytestmark = pytest.mark.slow
QUEUE_SIZE = 8  # requests that may wait (6 students arriving at once fit); with the chat's 8 at work, 16 in all


def test_students_are_served_and_a_full_queue_says_busy(data_root, tmp_path):
    from gradio_client import Client

    with app_process(data_root, tmp_path / "app.log", env={"MATH_STUDIO_QUEUE_SIZE": str(QUEUE_SIZE)}) as (url, pid):
        report = run_load(url, students=6, seconds=20, max_new_tokens=24, app_pid=pid)
        print({k: v for k, v in report.items() if k != "memory"}, report["memory"][-1])
        assert report["errors"] == [] and report["busy"] == 0
        assert report["served"] >= 6  # each student got at least one full reply
        for figure in ("queue_s", "first_token_s", "total_s"):
            assert report[figure]["p50"] is not None and report[figure]["p95"] >= report[figure]["p50"]
        assert report["memory"] and report["memory"][-1]["app_mib"] > 0

        client = Client(url, verbose=False)  # 32 at once: 8 at work, QUEUE_SIZE waiting, the others told "busy"
        results = [None] * 32
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(client, "What is 2 + 2?",
                                                                                    EMBEDDED, 16)))
                   for i in range(len(results))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        errors = [r["error"] for r in results if "error" in r]
        assert errors and all(BUSY in e for e in errors), errors  # refused at once, with the busy message
        assert len(results) - len(errors) >= 8  # those taken in were all answered
        assert "error" not in ask(client, "What is 3 + 4?", EMBEDDED, 8)  # and the next student is served
    assert "Traceback" not in (tmp_path / "app.log").read_text()
