"""GRPO jobs: the rewards, their settings and samples without a model; then (slow) the plain config on the embedded
model through the CLI, and GRPO from a finished SFT job's adapter on the tiny model, cancelled and resumed."""

import json

import pytest

from tests.test_training import cli, wait_until
from trainer import jobs, publish
from trainer.config import ConfigError, JobConfig
from trainer.data import DataError
from trainer.grpo import (
    CPU_DEFAULTS, Samples, answer_reward, format_reward, on_this_machine, prompt_dataset, reward_functions,
    starting_adapter,
)
from trainer.store import adapter_dir, append_progress, append_samples, read_progress, read_samples
from trainer.train import attention_for, last_checkpoint, reward_columns

GOOD = "<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}."


def test_the_answer_reward_checks_the_final_answer_against_the_gold_one():
    replies = [GOOD, "<think>3 + 4 = 8</think> \\boxed{8}", "So it is 7.", "I cannot tell.", [{"role": "assistant",
                                                                                                  "content": GOOD}]]
    assert answer_reward(replies, answer=["7"] * 5) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert answer_reward(["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{2}"], answer=["0.5", "1/2", "\\sqrt{4}"]) \
        == [1.0, 1.0, 1.0]  # the last through math-verify, in the checker's worker process


def test_the_format_reward_gives_half_for_thinking_first_and_half_for_a_boxed_answer_after_it():
    replies = [GOOD, "<think>3 + 4 = 7</think> It is 7.", "The answer is \\boxed{7}.", "7",
               "It is <think>7</think> \\boxed{7}", "<think>\\boxed{7}</think> so 7"]
    assert format_reward(replies) == [1.0, 0.5, 0.5, 0.0, 0.5, 0.5]


def test_rewards_with_weight_zero_are_left_out_and_the_settings_are_checked():
    assert [(f.__name__, w) for f, w in reward_functions(JobConfig(method="grpo"))] == [
        ("answer_reward", 1.0), ("format_reward", 0.2)]
    assert [f.__name__ for f, _ in reward_functions(JobConfig(method="grpo", format_reward_weight=0))] == [
        "answer_reward"]
    for changes, named in [({"num_generations": 1}, "num_generations ="),
                           ({"per_device_batch_size": 6}, "per_device_batch_size = 6"),
                           ({"answer_reward_weight": 0, "format_reward_weight": 0}, "answer_reward_weight"),
                           ({"beta": -1}, "beta ="), ({"temperature": 0}, "temperature ="),
                           ({"method": "ppo"}, "method = 'ppo'")]:
        with pytest.raises(ConfigError, match=named):
            JobConfig(**{"method": "grpo", **changes}).validate()
    JobConfig(method="grpo", per_device_batch_size=2, gradient_accumulation_steps=2, num_generations=4).validate()
    JobConfig(per_device_batch_size=6).validate()  # sft has no groups
    with pytest.raises(ConfigError, match="init_adapter"):
        JobConfig(init_adapter="some-job").validate()


def test_progress_rows_carry_the_reward_and_its_parts_under_their_own_names():
    logs = {"loss": 0.1, "reward": 0.6, "reward_std": 0.2, "frac_reward_zero_std": 0.5, "kl": 0.01,
            "completions/mean_length": 80.0, "rewards/answer_reward/mean": 0.5, "rewards/format_reward/mean": 0.5,
            "rewards/answer_reward/std": 0.4}
    assert reward_columns(logs) == {"reward": 0.6, "reward_std": 0.2, "zero_std_share": 0.5, "completion_length": 80.0,
                                    "kl": 0.01, "reward_answer": 0.5, "reward_format": 0.5}
    assert reward_columns({"loss": 0.1}) == {}  # SFT rows are as they were


def test_samples_keep_the_first_group_of_a_generation_with_its_rewards(tmp_path):
    class Args:
        num_generations = 2

    class State:
        is_world_process_zero, global_step = True, 3

    samples = Samples(tmp_path, {"answer_reward": 1.0, "format_reward": 0.2})
    prompts = [[{"role": "user", "content": "3 + 4?"}]] * 2 + [[{"role": "user", "content": "2 + 2?"}]] * 2
    replies, problems = [GOOD, "8", "4", GOOD], ["3 + 4?"] * 2 + ["2 + 2?"] * 2
    for reward in (answer_reward, format_reward):
        scored = samples.recorded(reward)  # called as TRL calls it, with the dataset's other columns
        assert scored(prompts=prompts, completions=replies, completion_ids=[], answer=["7", "7", "4", "4"],
                      problem=problems, trainer_state=None) == reward(replies, answer=["7", "7", "4", "4"])
        assert scored.__name__ == reward.__name__
    samples.on_log(Args, State, None, logs={"loss": 0.0})
    samples.on_log(Args, State, None, logs={"loss": 0.0})  # nothing new generated: nothing written again
    assert read_samples(tmp_path) == [
        {"step": 3, "problem": "3 + 4?", "answer": "7", "reply": GOOD, "answer_reward": 1.0, "format_reward": 1.0,
         "reward": 1.2},
        {"step": 3, "problem": "3 + 4?", "answer": "7", "reply": "8", "answer_reward": 0.0, "format_reward": 0.0,
         "reward": 0.0},
    ]


def test_on_a_cpu_a_step_holds_one_group_and_defaults_take_the_cpu_values_but_chosen_ones_stay(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plain = on_this_machine(JobConfig(method="grpo"))
    assert (plain.quantization, plain.max_completion_length) == (CPU_DEFAULTS["quantization"],
                                                                 CPU_DEFAULTS["max_completion_length"])
    assert (plain.per_device_batch_size, plain.gradient_accumulation_steps) == (plain.num_generations, 1)
    chosen = JobConfig(method="grpo", quantization="8bit", max_completion_length=96, num_generations=8,
                       per_device_batch_size=16, gradient_accumulation_steps=4)
    assert on_this_machine(chosen) == JobConfig(method="grpo", quantization="8bit", max_completion_length=96,
                                                num_generations=8, per_device_batch_size=8)
    one_group = JobConfig(method="grpo", quantization="none", max_completion_length=16, per_device_batch_size=4)
    assert on_this_machine(one_group) == one_group
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert on_this_machine(JobConfig(method="grpo")) == JobConfig(method="grpo")  # a GPU trains the settings as written


def test_grpo_attends_with_sdpa_on_a_bf16_gpu_where_sft_takes_the_varlen_kernel(monkeypatch):
    import torch

    for name, value in [("is_available", True), ("is_bf16_supported", True), ("get_device_capability", (9, 0))]:
        monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
    assert attention_for(JobConfig()) == "varlen"  # SFT's padding-free batches
    assert attention_for(JobConfig(method="grpo")) == "sdpa"  # generation and scoring take padded batches
    with pytest.raises(ConfigError, match="attention = 'varlen'.*grpo generates and scores padded batches"):
        JobConfig(method="grpo", attention="varlen").validate()


@pytest.mark.slow
def test_the_plain_grpo_config_trains_the_embedded_model_through_the_cli(data_root, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = tmp_path / "grpo.yaml"
    config.write_text("base_model: embedded:smollm2-135m-instruct\ndataset: builtin:basic-math\nmethod: grpo\n"
                      "max_samples: 8\nmax_steps: 2\n")
    cli("train", "--config", str(config), "--name", "grpo")
    (job,) = list((data_root / "jobs").iterdir())
    assert jobs.read_status(job)["state"] == "completed"
    rows = read_progress(job)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["reward"] <= 1.2 and {"reward_answer", "reward_format", "completion_length", "kl"} <= set(row)
    samples = read_samples(job)
    assert samples and {s["step"] for s in samples} == {1, 2} and all(s["reply"] for s in samples)
    assert "method: grpo" in cli("show", job.name).stdout
    base = AutoModelForCausalLM.from_pretrained(data_root / "models" / "embedded" / "smollm2-135m-instruct")
    model = PeftModel.from_pretrained(base, adapter_dir(job))
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.slow
def test_grpo_from_a_finished_sft_adapter_cancels_and_resumes_on_one_curve(data_root, tiny_model_dir):
    tiny = {"base_model": str(tiny_model_dir), "quantization": "none", "max_samples": 8, "eval_fraction": 0,
            "per_device_batch_size": 4}
    sft = jobs.create_job(JobConfig(**tiny, max_steps=2), name="sft")
    jobs.schedule()
    assert wait_until(sft, lambda s: s["state"] in ("completed", "failed"))["state"] == "completed"
    wait_until(sft, lambda s: not jobs.worker_alive(s))  # the queue starts the next job once this worker has exited
    path = jobs.create_job(JobConfig(**tiny, method="grpo", init_adapter=sft.name, max_steps=4, save_steps=1,
                                     max_completion_length=16), name="grpo")
    assert jobs.schedule() == path.name
    wait_until(path, lambda s: s["step"] >= 1)
    jobs.cancel_job(path.name)
    stopped_at = wait_until(path, lambda s: s["state"] == "cancelled")["step"]
    assert last_checkpoint(path).name == f"checkpoint-{stopped_at}" and stopped_at < 4
    jobs.resume_job(path.name)
    jobs.schedule()
    status = wait_until(path, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "completed", status["reason"]
    rows = read_progress(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("reward" in r and "kl" in r for r in rows)
    sft_config = json.loads((adapter_dir(sft) / "adapter_config.json").read_text())
    assert json.loads((adapter_dir(path) / "adapter_config.json").read_text())["r"] == sft_config["r"]
    assert not (adapter_dir(path) / "ref").exists()  # TRL's frozen reference copy of it is not saved
    assert "from the adapter of job" in publish.model_card(path, merged=False)


def test_a_missing_or_unfinished_starting_adapter_is_refused_by_name(data_root):
    with pytest.raises(jobs.JobError, match="No job 'nope'"):
        starting_adapter(JobConfig(method="grpo", init_adapter="nope"))
    queued = jobs.create_job(JobConfig(max_steps=1))
    with pytest.raises(jobs.JobError, match="not completed"):
        starting_adapter(JobConfig(method="grpo", init_adapter=queued.name))


def test_prompts_carry_the_problem_and_its_gold_answer_and_chat_only_data_is_refused(embedded_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    dataset = prompt_dataset(JobConfig(method="grpo", max_samples=3), tokenizer)
    assert len(dataset) == 3 and dataset.column_names == ["prompt", "problem", "answer"]
    for row in dataset:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][1]["content"] == row["problem"]
        assert row["answer"]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Hello"}]}) + "\n")
    with pytest.raises(DataError, match="no examples with a gold answer"):
        prompt_dataset(JobConfig(method="grpo", dataset=f"file:{chats}"), tokenizer)


def test_the_monitor_shows_the_reward_its_parts_and_the_last_sampled_replies(tmp_path):
    import app

    append_progress(tmp_path, {"step": 1, "loss": 0.0, **reward_columns({
        "reward": 0.6, "frac_reward_zero_std": 0.5, "kl": 0.002, "completions/mean_length": 80.0,
        "rewards/answer_reward/mean": 0.5, "rewards/format_reward/mean": 0.5})})
    append_samples(tmp_path, [{"step": 1, "problem": "old", "answer": "1", "reply": "x", "reward": 0.0}])
    append_samples(tmp_path, [{"step": 2, "problem": "3 + 4?", "answer": "7", "reply": GOOD, "reward": 1.2}])
    (text,) = app.reward_facts(read_progress(tmp_path), read_samples(tmp_path))
    assert "**reward 0.600** (answer 0.50, format 0.50, no-signal groups 50%, replies 80 tokens, KL 0.002)" in text
    assert "step 2 to: 3 + 4?" in text and "- reward 1.20: `<think> 3 + 4 = 7 </think> The answer is" in text
    assert "old" not in text
    assert app.reward_facts([{"step": 1, "loss": 0.5}], []) == []  # an SFT job's monitor is as it was
