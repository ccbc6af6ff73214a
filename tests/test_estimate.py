"""trainer/estimate.py: steps as the Trainer counts them, peak memory by its parts, throughput measured here before a
rough one, and the words that say whether a job fits."""

import dataclasses
import math

import pytest

from trainer import estimate, jobs, store
from trainer.config import ALL_PROJECTIONS, PRESETS, JobConfig
from trainer.estimate import DataSize, Machine, ModelShape, Run, Throughput

# SmolLM2-135M's sizes (the embedded model), as model_shape reads them
SHAPE = ModelShape(params=134_515_008, quantizable=106_168_320, hidden=576, layers=30, lora_per_rank=305_280)
DATA = DataSize(examples=64, mean_tokens=144, longest=190, at_least=False)
CPU = Machine("CPU (2 cores)", gpus=0, cores=2, bf16=False, free_bytes=8 * estimate.GiB)


def peak(config: JobConfig, device: str = "gpu") -> float:
    return sum(estimate.peak_memory(config, SHAPE, estimate.micro_batch_tokens(config, DATA), 2, device).values())


def test_memory_falls_with_quantization_and_checkpointing_and_rises_with_the_batch():
    config = JobConfig(per_device_batch_size=4, quantization="4bit", gradient_checkpointing="on")
    assert peak(config) < peak(dataclasses.replace(config, quantization="8bit")) < peak(
        dataclasses.replace(config, quantization="none"))
    assert peak(config, "cpu") == peak(dataclasses.replace(config, quantization="none"), "cpu")  # read whole there
    assert peak(config) < peak(dataclasses.replace(config, gradient_checkpointing="off"))
    assert peak(config) < peak(dataclasses.replace(config, per_device_batch_size=16))
    assert peak(config) < peak(dataclasses.replace(config, lora_r=256))
    assert peak(config) < peak(dataclasses.replace(config, packing=True))  # full rows of max_seq_length


def test_the_adapters_parameters_are_peft_s(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = estimate.model_shape(str(tiny_model_dir), ALL_PROJECTIONS)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.params == model.num_parameters() and (shape.hidden, shape.layers) == (64, 2)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=ALL_PROJECTIONS))
    assert shape.lora_per_rank * 4 == lora.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("changes, steps", [
    ({}, 16),  # the offline default: 64 examples, 3 held out, 61 in batches of 4 for one epoch
    ({"gradient_accumulation_steps": 3}, 6),  # 16 batches, 3 a step, the last one short
    ({"num_epochs": 2.5}, 40),
    ({"max_steps": 5}, 5),
    ({"eval_fraction": 0.0, "per_device_batch_size": 64}, 1),
])
def test_steps_are_counted_as_the_trainer_counts_them(changes, steps):
    config = dataclasses.replace(PRESETS["offline-default"], **changes)
    assert estimate.training_steps(config, DATA)[0] == steps


def test_tokens_are_the_examples_trained_times_their_mean_length():
    config = PRESETS["offline-default"]
    assert estimate.training_steps(config, DATA)[1] == 61 * 144
    assert estimate.training_steps(dataclasses.replace(config, max_steps=5), DATA)[1] == 5 * 4 * 144
    assert estimate.training_steps(config, DATA, processes=2)[0] == math.ceil(31 / 4)


def test_a_capped_preview_says_at_least():
    config = JobConfig(max_samples=0, max_seq_length=100)
    data = estimate.data_size({"lengths": [50, 150], "count": estimate.PREVIEW_LIMIT}, config)
    assert data == DataSize(estimate.PREVIEW_LIMIT, 75, 100, True)  # cut at max_seq_length
    assert not estimate.data_size({"lengths": [50], "count": 64}, JobConfig(max_samples=64)).at_least


def run(job_id: str, tokens_per_s: float, device: str = CPU.name, **changes) -> Run:
    return Run(job_id, device, dataclasses.replace(PRESETS["offline-default"], **changes), tokens_per_s)


def test_measured_throughput_is_this_machines_on_the_same_base_with_the_closest_settings():
    config = PRESETS["offline-default"]
    runs = [run("a-same", 30), run("b-batch", 50, per_device_batch_size=8), run("c-same-newer", 33),
            run("d-gpu", 9000, device="1 x NVIDIA H200"), run("e-other-base", 70, base_model="org/other")]
    measured = estimate.measured_throughput(config, CPU.name, runs)
    assert measured.tokens_per_s == 33 and "job c-same-newer (same settings)" in measured.source
    measured = estimate.measured_throughput(dataclasses.replace(config, per_device_batch_size=8), CPU.name, runs)
    assert measured.tokens_per_s == 50
    measured = estimate.measured_throughput(dataclasses.replace(config, lora_r=64), CPU.name, runs[:2])
    assert "(its lora_r differ)" in measured.source
    assert estimate.measured_throughput(config, "2 x NVIDIA H200", runs) is None
    rough = estimate.rough_throughput(SHAPE, CPU)
    assert rough.source.startswith("rough") and rough.tokens_per_s == pytest.approx(2 * 10e9 / (6 * SHAPE.params))


def test_the_summary_says_what_it_is_based_on_and_warns_when_it_will_not_fit():
    config = PRESETS["offline-default"]
    measured = Throughput(25.0, "measured on this machine in job x (same settings)")
    fits = estimate.estimate(config, DATA, SHAPE, CPU, measured)
    text = estimate.summary(fits)
    assert fits.fits and "16 steps" in text and "8,784 tokens" in text and "about 6 min" in text
    assert "measured on this machine in job x" in text and "RAM free" in text and "Will not fit" not in text
    small = dataclasses.replace(CPU, free_bytes=int(0.5 * estimate.GiB))
    tight = estimate.estimate(config, DATA, SHAPE, small, measured)
    assert not tight.fits and "**Will not fit:**" in estimate.summary(tight)
    assert "lower per_device_batch_size" in estimate.summary(tight) and "quantize" not in estimate.summary(tight)
    unchecked = dataclasses.replace(config, gradient_checkpointing="off", quantization="none")
    gpu = Machine("1 x GPU", gpus=1, cores=8, bf16=True, free_bytes=int(0.5 * estimate.GiB))
    text = estimate.summary(estimate.estimate(unchecked, DATA, SHAPE, gpu, measured))
    assert "turn on gradient_checkpointing; quantize to 4bit" in text and "GPU memory free" in text


def test_past_runs_are_read_from_completed_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    done, running = (jobs.create_job(JobConfig(max_samples=8), name=name) for name in ("done", "running"))
    for path, state in [(done, "completed"), (running, "running")]:
        store.update_status(path, state=state, device=CPU.name,
                            resolved={"quantization": "none", "gradient_checkpointing": "off"})
        for row in ROWS:
            store.append_progress(path, row)
    (only,) = estimate.past_runs()
    assert (only.job_id, only.device, only.tokens_per_s, only.config.max_samples) == (done.name, CPU.name, 20.0, 8)
    assert (only.config.quantization, only.config.gradient_checkpointing) == ("none", "off")  # as it trained


def test_the_estimate_decides_auto_as_the_worker_does():
    measured = Throughput(25.0, "measured")
    small = estimate.estimate(JobConfig(per_device_batch_size=4), DATA, SHAPE, CPU, measured)
    chosen = JobConfig(per_device_batch_size=4, quantization="none", gradient_checkpointing="off")
    assert small.memory == estimate.estimate(chosen, DATA, SHAPE, CPU, measured).memory
    assert "quantization none, gradient checkpointing off" in estimate.summary(small)
    gpu = Machine("1 x GPU", gpus=1, cores=8, bf16=True, free_bytes=80 * estimate.GiB)
    big_shape = dataclasses.replace(SHAPE, params=3_000_000_000, quantizable=2_800_000_000)
    big = estimate.estimate(JobConfig(per_device_batch_size=4), DATA, big_shape, gpu, measured)
    qlora = JobConfig(per_device_batch_size=4, quantization="4bit", gradient_checkpointing="on")
    assert big.memory == estimate.estimate(qlora, DATA, big_shape, gpu, measured).memory
    assert "quantization 4bit, gradient checkpointing on" in estimate.summary(big)
    kept = estimate.estimate(chosen, DATA, big_shape, gpu, measured)  # explicit choices stay on a large base
    assert kept.settings == {"quantization": "none", "gradient_checkpointing": "off"}


# A run that loaded its model for 8 s, then trained 20 tokens/s: 40 tokens at 10 s, 240 at 20 s; then an evaluation
ROWS = [{"step": 1, "loss": 2.0, "tokens_per_second": 4.0, "elapsed_s": 10.0},
        {"step": 2, "loss": 1.5, "tokens_per_second": 12.0, "elapsed_s": 20.0},
        {"step": 2, "loss": None, "eval_loss": 1.6, "tokens_per_second": 10.0, "elapsed_s": 24.0}]


def test_the_steady_rate_leaves_out_loading_and_evaluation():
    assert estimate.steady_rate(ROWS) == 20.0
    assert estimate.steady_rate(ROWS[:1]) == 4.0 and estimate.steady_rate([]) == 0.0


def test_the_preview_shows_the_estimate_measured_here_once_a_job_ran(tmp_path, monkeypatch, tiny_model_dir):
    import app

    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    for name in ("INSTRUCTOR_PASSWORD", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    config = JobConfig(base_model=str(tiny_model_dir), max_samples=16, per_device_batch_size=4, num_epochs=1)
    *_, guess = app.preview_data("", *app.form_values(config))
    assert guess.startswith("**Estimate for this machine:** 4 steps") and "(rough: " in guess
    done = jobs.create_job(config, name="ran")
    store.update_status(done, state="completed", device=estimate.this_machine().name,  # as its worker records them:
                        resolved={"quantization": "none", "gradient_checkpointing": "off"})  # auto on this tiny base
    for row in ROWS:
        store.append_progress(done, row)
    *_, guess = app.preview_data("", *app.form_values(config))
    assert f"at 20 tokens/s (measured on this machine in job {done.name} (same settings))" in guess
