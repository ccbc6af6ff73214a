"""benchmarks/grpo_chain.py: GRPO's reward trace from a job's progress rows, and accuracies with their intervals."""

from benchmarks.grpo_chain import accuracy, reward_trace
from trainer.store import append_progress, read_progress


def test_the_reward_trace_compares_the_first_and_last_steps_and_counts_groups_without_signal(tmp_path):
    for step in range(1, 11):  # the reward climbs 0.1 a step; no-signal groups fall from 90% to 0%
        append_progress(tmp_path, {"step": step, "loss": 0.0, "reward": step / 10, "reward_answer": step / 20,
                                   "zero_std_share": (10 - step) / 10, "completion_length": 100.0, "kl": 0.01 * step,
                                   "elapsed_s": 30.0 + 12 * (step - 1)})
    trace = reward_trace(read_progress(tmp_path), window=3)
    assert trace["steps"] == 10 and trace["window"] == 3
    assert (trace["reward_first"], trace["reward_last"]) == (0.2, 0.9)
    assert (trace["reward_answer_first"], trace["reward_answer_last"]) == (0.1, 0.45)
    assert (trace["zero_std_share_first"], trace["zero_std_share_last"]) == (0.8, 0.1)
    assert trace["zero_std_share_all"] == 0.45
    assert trace["reward_format_first"] is None and trace["kl_last"] == 0.09
    assert (trace["first_step_s"], trace["step_s"]) == (30.0, 12.0)
    one = reward_trace(read_progress(tmp_path)[:1])
    assert one["window"] == 1 and one["reward_first"] == one["reward_last"] == 0.1 and one["step_s"] is None
    assert reward_trace([{"step": 1, "loss": 0.5}]) == {"steps": 0}  # an SFT job's rows carry no reward


def test_an_accuracy_carries_its_counts_and_the_wilson_interval():
    assert accuracy({"model": "m", "correct": 3, "total": 10, "accuracy": 0.3}) == {
        "model": "m", "correct": 3, "total": 10, "accuracy": 0.3, "ci95": [0.1078, 0.6032]}
    assert accuracy({"model": "m", "correct": 0, "total": 2})["ci95"] == [0.0, 0.6576]
