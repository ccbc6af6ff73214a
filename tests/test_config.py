"""JobConfig: validation names the field and what would work; YAML and --set round-trip; presets are the seeds."""

import dataclasses
import importlib.util
import json

import pytest
import yaml

from tests.conftest import ROOT, SHARED_DATA
from trainer import jobs, store
from trainer.config import ALL_PROJECTIONS, ATTENTION_PROJECTIONS, PRESETS, ConfigError, JobConfig
from trainer.models import ModelError, check_model_fit, sized_for_model
from trainer.train import build_trainer, trainer_args

SEED_PRESETS = ["gemma3-4b-mathx-qlora", "gemma3-27b-mathx-lora", "tinyllama-math-mix-lora", "llama3.2-3b-gsm8k-qlora"]


@pytest.mark.parametrize("key, value, words", [
    ("lora_r", 0, "positive rank"),
    ("lora_alpha", -1, "positive alpha"),
    ("lora_dropout", 1.0, "[0, 1)"),
    ("learning_rate", -1e-4, "positive rate"),
    ("max_seq_length", 8, "at least 32"),
    ("per_device_batch_size", 0, "1 or more"),
    ("gradient_accumulation_steps", 0, "1 or more"),
    ("quantization", "3bit", "4bit"),
    ("gradient_checkpointing", "sometimes", "'auto', 'on', 'off'"),
    ("optimizer", "adam9000", "paged_adamw_8bit"),
    ("lr_scheduler", "zigzag", "cosine"),
    ("warmup_ratio", 1.5, "[0, 1)"),
    ("eval_fraction", 0.9, "[0, 0.5)"),
    ("heldout_problems", -1, "0 (off)"),
    ("max_steps", 0, "-1"),
    ("target_modules", [], "at least one module"),
    ("base_model", " ", "embedded default"),
])
def test_impossible_values_are_refused_naming_the_field(key, value, words):
    config = dataclasses.replace(JobConfig(), **{key: value})
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert key in str(info.value) and words in str(info.value)


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    config = JobConfig().validate()
    config.save(tmp_path / "config.yaml")
    assert JobConfig.load(tmp_path / "config.yaml") == config


def test_overrides_parse_types_and_refuse_unknown_keys():
    config = JobConfig().with_overrides(["lora_r=8", "learning_rate=1e-4", "packing=true",
                                         "target_modules=q_proj,v_proj", "max_steps=5"])
    assert (config.lora_r, config.learning_rate, config.packing, config.max_steps) == (8, 1e-4, True, 5)
    assert config.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="Unknown config keys"):
        JobConfig().with_overrides(["lora_rank=8"])
    with pytest.raises(ConfigError, match="lora_r"):
        JobConfig().with_overrides(["lora_r=eight"])
    with pytest.raises(ConfigError, match="key=value"):
        JobConfig().with_overrides(["lora_r"])


def test_presets_reproduce_the_seed_recipes():
    gemma = PRESETS["gemma3-4b-mathx-qlora"]
    assert (gemma.lora_r, gemma.lora_alpha, gemma.lora_dropout, gemma.target_modules) == (16, 32, 0.05, ALL_PROJECTIONS)
    assert (gemma.quantization, gemma.double_quant, gemma.max_seq_length) == ("4bit", True, 2048)
    assert (gemma.per_device_batch_size, gemma.gradient_accumulation_steps, gemma.learning_rate) == (2, 8, 2e-4)
    assert (gemma.lr_scheduler, gemma.warmup_ratio, gemma.optimizer, gemma.num_epochs) == ("cosine", 0.03, "paged_adamw_8bit", 1)
    assert gemma.max_samples == 10_000 and gemma.dataset == "hub:XenArcAI/MathX-5M"
    big = PRESETS["gemma3-27b-mathx-lora"]
    assert (big.quantization, big.bf16, big.gradient_checkpointing, big.lora_r) == ("none", True, "on", 16)
    tiny = PRESETS["tinyllama-math-mix-lora"]
    assert (tiny.lora_r, tiny.lora_alpha, tiny.lora_dropout, tiny.learning_rate) == (32, 64, 0.1, 1e-4)
    assert (tiny.weight_decay, tiny.warmup_ratio, tiny.num_epochs, tiny.optimizer) == (0.05, 0.05, 2, "paged_adamw_32bit")
    assert [p.split("*")[1] for p in tiny.dataset.split("+")] == ["3000", "5000", "1000"]
    llama = PRESETS["llama3.2-3b-gsm8k-qlora"]
    assert (llama.lora_r, llama.lora_alpha, llama.target_modules, llama.max_seq_length) == (32, 64, ATTENTION_PROJECTIONS, 512)
    assert (llama.per_device_batch_size, llama.gradient_accumulation_steps, llama.optimizer) == (4, 4, "paged_adamw_32bit")
    for name in ["gemma3-4b-mathx-qlora", "gemma3-27b-mathx-lora", "tinyllama-math-mix-lora", "llama3.2-3b-gsm8k-qlora"]:
        assert (PRESETS[name].padding_free, PRESETS[name].gradient_checkpointing) == (False, "on")  # padded, as seeded
    assert PRESETS["offline-default"].base_model.startswith("embedded:")
    for config in PRESETS.values():
        config.validate()


def test_model_fit_refuses_unknown_modules_and_requantizing(tiny_model_dir):
    check_model_fit(JobConfig(), str(tiny_model_dir))
    with pytest.raises(ModelError, match=r"\['qkv_proj'\].*q_proj"):
        check_model_fit(JobConfig(target_modules=["q_proj", "qkv_proj"]), str(tiny_model_dir))
    (tiny_model_dir.parent / "quantized").mkdir(exist_ok=True)
    import json, shutil
    quantized = tiny_model_dir.parent / "quantized"
    shutil.copy(tiny_model_dir / "config.json", quantized / "config.json")
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="already quantized"):
        check_model_fit(JobConfig(quantization="4bit"), str(quantized))
    check_model_fit(JobConfig(), str(quantized))  # the default, auto, takes it as it is
    assert sized_for_model(JobConfig(), str(quantized)).quantization == "none"


def test_the_learning_rate_follows_the_batch_by_the_square_root_rule():
    rate = 2e-3
    assert JobConfig(learning_rate=rate).scaled_learning_rate() == rate  # the reference batch (64): as written
    assert JobConfig(learning_rate=rate, per_device_batch_size=16).scaled_learning_rate() == pytest.approx(rate / 2)
    assert JobConfig(learning_rate=rate, per_device_batch_size=32,
                     gradient_accumulation_steps=8).scaled_learning_rate() == pytest.approx(rate * 2)
    assert JobConfig(learning_rate=rate, per_device_batch_size=16).scaled_learning_rate(processes=4) == pytest.approx(
        rate)
    assert JobConfig(learning_rate=rate, per_device_batch_size=16, lr_reference_batch=0).scaled_learning_rate() == rate
    with pytest.raises(ValueError, match="still auto"):  # the default, 0, is decided for the base first
        JobConfig().scaled_learning_rate()
    for name in SEED_PRESETS:  # the seeds' rates stay as they wrote them, at their own batches
        assert PRESETS[name].scaled_learning_rate() == PRESETS[name].learning_rate
    with pytest.raises(ConfigError, match="lr_reference_batch"):
        JobConfig(lr_reference_batch=-1).validate()


def test_the_worker_trains_at_the_scaled_rate(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    config = JobConfig(base_model=str(tiny_model_dir), max_samples=6, eval_fraction=0, per_device_batch_size=4,
                       gradient_accumulation_steps=4, max_steps=1)
    path = jobs.create_job(config, name="rate")
    trainer, _ = build_trainer(config, path)
    assert trainer.args.learning_rate == pytest.approx(2e-3 / 2)  # auto's rate for a small base, at batch 16 of 64
    # auto, decided for this tiny base: unquantized, no checkpointing, and recorded for the monitor and the card
    assert store.read_status(path)["resolved"] == {"quantization": "none", "gradient_checkpointing": "off",
                                                   "learning_rate": 2e-3}
    assert not trainer.args.activation_checkpointing and not getattr(trainer.model, "is_loaded_in_4bit", False)


def test_the_cpu_default_and_the_gsm8k_preset_are_the_measured_recipes():
    offline = PRESETS["offline-default"]
    assert (offline.max_samples, offline.per_device_batch_size, offline.num_epochs, offline.lora_r) == (400, 4, 1, 16)
    assert offline.scaled_learning_rate() == 2e-3 and offline.heldout_problems == 100  # as measured on the CPU
    assert (offline.quantization, offline.gradient_checkpointing) == ("4bit", "off")  # as measured, not auto
    assert JobConfig().heldout_problems == 0 and PRESETS["gsm8k-embedded"].heldout_problems == 0  # GPU jobs: off
    gsm8k = PRESETS["gsm8k-embedded"]
    train = SHARED_DATA / "gsm8k" / "train.jsonl"
    assert gsm8k.dataset == (f"file:{train}" if train.is_file() else "hub:openai/gsm8k:main")
    assert gsm8k.base_model == JobConfig().base_model and gsm8k.max_samples == 0
    # The job that measured +6.8 points on GSM8K's test ran exactly these settings: change them with a new measurement.
    # Its 4-bit base and checkpointing stay as measured, written out now that the defaults are auto (issue 18).
    measured = json.loads((ROOT / "benchmarks" / "results" / "gsm8k_learning-h200.json").read_text())["job_config"]
    preset = gsm8k.to_dict()
    assert {k: v for k, v in measured.items() if k != "dataset"} == {
        k: preset[k] for k in measured if k != "dataset"} | {"gradient_checkpointing": True}
    assert (gsm8k.quantization, gsm8k.gradient_checkpointing) == ("4bit", "on")  # True then, as the field was a bool


@pytest.mark.parametrize("tracker", ["tensorboard", "trackio", "wandb"])
def test_report_to_needs_its_package_installed(tracker):
    assert JobConfig().report_to == "none" and JobConfig().validate().report_to == "none"
    if importlib.util.find_spec(tracker) is None:  # refused at launch with what to install
        with pytest.raises(ConfigError, match=f"report_to = '{tracker}'.*pip install {tracker}"):
            JobConfig(report_to=tracker).validate()
    else:
        assert JobConfig(report_to=tracker).validate().report_to == tracker
    with pytest.raises(ConfigError, match="report_to.*use one of"):
        JobConfig(report_to="mlflow").validate()


@pytest.mark.parametrize("tracker, reported", [("none", []), ("tensorboard", ["tensorboard"]), ("wandb", ["wandb"])])
def test_the_training_arguments_get_report_to(tracker, reported, tmp_path):
    from trl import SFTConfig

    args = SFTConfig(**trainer_args(JobConfig(report_to=tracker, gradient_checkpointing="off", learning_rate=2e-3), tmp_path / "job-1", 4))
    assert args.report_to == reported and args.run_name == "job-1"


def test_auto_decides_quantization_and_checkpointing_by_the_base_s_size(tiny_model_dir):
    from trainer.models import QLORA_FROM_PARAMS, sized_for_base, sized_for_model

    large, small = sized_for_base(JobConfig(), QLORA_FROM_PARAMS), sized_for_base(JobConfig(), QLORA_FROM_PARAMS - 1)
    assert (large.quantization, large.gradient_checkpointing, large.learning_rate) == ("4bit", "on", 2e-4)  # QLoRA's
    assert (small.quantization, small.gradient_checkpointing, small.learning_rate) == ("none", "off", 2e-3)
    assert sized_for_base(JobConfig(learning_rate=1e-3), QLORA_FROM_PARAMS).learning_rate == 1e-3  # a rate as written
    for quantization, checkpointing in [("4bit", "off"), ("8bit", "on"), ("none", "on")]:  # explicit choices are kept
        chosen = JobConfig(quantization=quantization, gradient_checkpointing=checkpointing, learning_rate=1e-3)
        for params in (QLORA_FROM_PARAMS - 1, QLORA_FROM_PARAMS):
            assert sized_for_base(chosen, params) == chosen
    assert sized_for_base(JobConfig(quantization="8bit"), 10**10).gradient_checkpointing == "on"  # one of two kept
    tiny = sized_for_model(JobConfig(), str(tiny_model_dir))  # counted from the config's shapes: a few million
    assert (tiny.quantization, tiny.gradient_checkpointing) == ("none", "off")


def test_configs_from_before_auto_with_boolean_checkpointing_still_load(tmp_path):
    old = JobConfig().to_dict() | {"quantization": "4bit", "gradient_checkpointing": True}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert JobConfig.load(tmp_path / "config.yaml").validate().gradient_checkpointing == "on"
    assert JobConfig.from_dict({"gradient_checkpointing": False}).gradient_checkpointing == "off"
    assert JobConfig().with_overrides(["gradient_checkpointing=on"]).gradient_checkpointing == "on"  # YAML's true
    assert JobConfig().with_overrides(["gradient_checkpointing=false"]).gradient_checkpointing == "off"
    assert JobConfig().with_overrides(["gradient_checkpointing=auto"]).gradient_checkpointing == "auto"
    chosen = JobConfig(gradient_checkpointing="off", quantization="none")
    assert JobConfig().with_overrides(chosen.overrides()) == chosen
    assert (JobConfig().quantization, JobConfig().gradient_checkpointing) == ("auto", "auto")
