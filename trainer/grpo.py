"""Reinforcement from verified answers: GRPO jobs, trained by TRL's GRPOTrainer in the worker of trainer/train.py.

Every example of the dataset spec that has a gold answer becomes a prompt (the system prompt and the problem, as
the model's chat template takes them). TRL samples `num_generations` replies to each and scores them with

    answer_reward   1 when the reply's final answer (extract_answer) equals the gold one (is_equivalent: exact for
                    plain numbers, else math-verify in a worker process with a deadline), else 0
    format_reward   0.5 for reasoning in <think>...</think> at the start, 0.5 for a \\boxed{} answer after it

weighted by answer_reward_weight and format_reward_weight (a weight of 0 leaves that reward out). The policy is a
LoRA adapter on the base (4-bit where quantization says so) or a completed job's adapter trained on (init_adapter),
at grpo_learning_rate as written. On a CPU a step holds one group of replies, and two defaults change (on_this_machine).
"""

import dataclasses
import functools
import logging
import re
from pathlib import Path

import torch
from transformers import TrainerCallback

from trainer.answers import extract_answer, is_equivalent, last_boxed
from trainer.config import JobConfig
from trainer.data import DataError, fit_messages, load_examples, to_messages
from trainer.store import (
    JobError, State, adapter_dir, append_samples, has_adapter, job_dir, read_config, read_status,
)
from trainer.train import JobCallback, load_base, load_tokenizer, lora_config, trainer_args

log = logging.getLogger("trainer")
THINK_RE = re.compile(r"\s*<think>.*?</think>", re.S)
MAX_SAMPLES = 8  # replies written to the job's samples per generation: the first problem's group
# On a CPU generating the replies is most of a step: 4 replies of 128 tokens took 39 s of CPU through the LoRA'd
# embedded model in fp32, of a 60 s step, and bitsandbytes' 4-bit CPU kernels generate at about half that speed
# (2 cores, load 11, 2026-12-02). Settings left at JobConfig's defaults take these values there, so that the plain
# config of 2 steps finishes in about five minutes (235 s wall, 87 s of CPU at that load; 413 s and 183 s before).
# quantization auto thus means unquantized on a CPU whatever the base's size; on a GPU the size decides
# (trainer/models.py, sized_for_base).
CPU_DEFAULTS = {"quantization": "none", "max_completion_length": 64}


def reply_text(completion) -> str:
    """A completion as text: TRL passes a chat prompt's completion as [{"role": "assistant", "content": ...}]."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def answer_reward(completions, answer, **_) -> list[float]:
    """1.0 for each reply whose final answer equals its gold answer, else 0.0."""
    return [float(is_equivalent(extract_answer(reply_text(c)), gold)) for c, gold in zip(completions, answer)]


def format_reward(completions, **_) -> list[float]:
    """0.5 for reasoning in <think>...</think> at the start of the reply, 0.5 for a \\boxed{} answer after it."""
    scores = []
    for completion in completions:
        text = reply_text(completion)
        think = THINK_RE.match(text)
        boxed = last_boxed(text[think.end():] if think else text) is not None
        scores.append(0.5 * bool(think) + 0.5 * boxed)
    return scores


def reward_functions(config: JobConfig) -> list[tuple]:
    """(reward function, weight) for every reward with a positive weight."""
    weighted = [(answer_reward, config.answer_reward_weight), (format_reward, config.format_reward_weight)]
    return [(reward, weight) for reward, weight in weighted if weight > 0]


class Samples(TrainerCallback):
    """Keeps the replies of the latest generation and their rewards (the rewards go through `recorded`), and adds
    the first problem's group of them to the job's samples at the next logged step, for the monitor."""

    def __init__(self, path: Path, weights: dict[str, float]):
        self.path, self.weights, self.batch = path, weights, {}

    def recorded(self, reward):
        @functools.wraps(reward)  # TRL logs each reward under its function's name
        def scored(completions, answer, problem, **kwargs):
            scores = reward(completions=completions, answer=answer, **kwargs)
            self.batch.update({"problem": problem, "answer": answer, "reply": [reply_text(c) for c in completions],
                               reward.__name__: scores})
            return scores

        return scored

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not self.batch:
            return
        group = min(args.num_generations, MAX_SAMPLES)
        rows = []
        for i in range(min(group, len(self.batch["reply"]))):
            parts = {name: self.batch[name][i] for name in self.weights}
            rows.append({"step": state.global_step, "problem": self.batch["problem"][i],
                         "answer": self.batch["answer"][i], "reply": self.batch["reply"][i], **parts,
                         "reward": sum(self.weights[name] * score for name, score in parts.items())})
        append_samples(self.path, rows)
        self.batch = {}  # with gradient accumulation a generation serves several steps: written once


def prompt_dataset(config: JobConfig, tokenizer):
    """A `datasets.Dataset` of chat prompts (system prompt, problem) with their problems and gold answers, which TRL
    passes on to the rewards."""
    from datasets import Dataset

    examples = load_examples(config.dataset, config.dataset_split, config.max_samples, config.seed)
    examples = [example for example in examples if "answer" in example]  # chat examples carry no gold answer
    if not examples:
        raise DataError(f"{config.dataset} has no examples with a gold answer: GRPO rewards replies by their final "
                        "answer, so give a spec with problems and answers (GSM8K, MATH, builtin:basic-math, ...).")
    prompts = [fit_messages(to_messages(example, config.system_prompt)[:-1], tokenizer) for example in examples]
    return Dataset.from_dict({"prompt": prompts, "problem": [example["problem"] for example in examples],
                              "answer": [example["answer"] for example in examples]})


def starting_adapter(config: JobConfig) -> Path:
    """The adapter of the completed job named by init_adapter, trained on this job's base model."""
    job = job_dir(config.init_adapter)
    if read_status(job)["state"] != State.COMPLETED or not has_adapter(job):
        raise JobError(f"init_adapter = {config.init_adapter!r} is not possible: that job has not completed with an "
                       "adapter; pick a completed job's id.")
    trained_on = read_config(job).base_model
    if trained_on != config.base_model:
        raise JobError(f"init_adapter = {config.init_adapter!r} was trained on {trained_on}, not on "
                       f"{config.base_model}: set base_model to {trained_on}.")
    return adapter_dir(job)


def on_this_machine(config: JobConfig) -> JobConfig:
    """The settings as this machine trains them: on a GPU as written. On a CPU a step holds one group of
    num_generations replies (no accumulation: the GPU default, 64 replies a step, would take most of an hour there),
    and the settings of CPU_DEFAULTS still at JobConfig's defaults take their CPU values; what a user chose is kept."""
    if torch.cuda.is_available():
        return config
    defaults = JobConfig()
    changes = {name: value for name, value in CPU_DEFAULTS.items() if getattr(config, name) == getattr(defaults, name)}
    if config.per_device_batch_size * config.gradient_accumulation_steps > config.num_generations:
        changes.update(per_device_batch_size=config.num_generations, gradient_accumulation_steps=1)
    changes = {name: value for name, value in changes.items() if getattr(config, name) != value}
    if changes:
        log.info("on a CPU: %s", ", ".join(f"{name} {getattr(config, name)} -> {value}"
                                           for name, value in changes.items()))
    return dataclasses.replace(config, **changes)


def build_grpo_trainer(config: JobConfig, path: Path):
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    config = on_this_machine(config)
    config, model_path, tokenizer = load_tokenizer(config, path)  # after on_this_machine: its CPU defaults first
    dataset = prompt_dataset(config, tokenizer)
    rewards = reward_functions(config)
    samples = Samples(path, {reward.__name__: weight for reward, weight in rewards})
    args = GRPOConfig(
        **{**trainer_args(config, path, config.per_device_batch_size), "learning_rate": config.grpo_learning_rate},
        num_generations=config.num_generations, max_completion_length=config.max_completion_length, beta=config.beta,
        temperature=config.temperature, reward_weights=[weight for _, weight in rewards],
    )
    model, lora = load_base(config, model_path), lora_config(config)
    if config.init_adapter:  # trained on as it is: its own LoRA settings, and with beta, a frozen copy as reference
        model, lora = PeftModel.from_pretrained(model, starting_adapter(config), is_trainable=True), None
    trainer = GRPOTrainer(model=model, reward_funcs=[samples.recorded(reward) for reward, _ in rewards], args=args,
                          train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                          callbacks=[JobCallback(path), samples])
    return trainer, tokenizer
