"""tutor.models: choices, loading adapters on a shared base, errors, the cache bound, thread safety."""

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from trainer import publish, store
from trainer.config import JobConfig
from tutor import models
from tutor.chat import encode
from tutor.models import EMBEDDED, ModelLoadError, list_choices, load_model


def make_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter on `base_dir` with random (non-zero) weights, so it visibly changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def make_job(root: Path, job_id: str, base_dir: Path, seed: int, state="completed", name=None) -> Path:
    """A job folder as the trainer leaves it (status, config, adapter), written with the store's own writers."""
    job = root / "jobs" / job_id
    job.mkdir(parents=True)
    store.write_status(job, {"id": job_id, "name": name or job_id, "state": state, "created": "2025-05-01T10:00:00",
                             "finished": "2025-05-01T10:30:00" if state == "completed" else None})
    JobConfig(base_model=str(base_dir)).save(store.config_file(job))
    if state in ("completed", "cancelled"):
        make_adapter(base_dir, store.adapter_dir(job), seed)
    return job


@pytest.fixture(autouse=True)
def empty_cache():
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.fixture
def counted_loads(monkeypatch) -> list[str]:
    loads = []
    real = models.load_base

    def counting(path, four_bit=False):
        loads.append(path)
        return real(path, four_bit)

    monkeypatch.setattr(models, "load_base", counting)
    return loads


def last_logits(loaded, text="What is 2 + 3?") -> torch.Tensor:
    ids = encode(loaded.tokenizer, [{"role": "user", "content": text}])
    with loaded.activated() as model:
        return model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float().cpu()


def greedy(loaded, text: str, n=12) -> list[int]:
    ids = encode(loaded.tokenizer, [{"role": "user", "content": text}])
    with loaded.activated() as model:
        out = model.generate(input_ids=torch.tensor([ids], device=model.device), max_new_tokens=n, do_sample=False,
                             pad_token_id=loaded.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def test_list_choices_shows_embedded_completed_jobs_and_merged_with_its_base(data_root, tiny_model_dir):
    make_job(data_root, "job-a", tiny_model_dir, seed=1, name="Algebra run")
    make_job(data_root, "job-b", tiny_model_dir, seed=2, state="running")
    make_job(data_root, "job-c", tiny_model_dir, seed=3, state="cancelled")  # a partial adapter: not offered
    publish.merge_job(data_root / "jobs" / "job-a", "algebra-merged")  # the real writer of merge records

    choices = list_choices()
    values = [value for _, value in choices]
    assert values == [EMBEDDED, "adapter:job-a", "merged:algebra-merged"]
    labels = {v: l for l, v in choices}
    assert "Algebra run" in labels["adapter:job-a"] and tiny_model_dir.name in labels["adapter:job-a"]
    assert "2025-05-01 10:30" in labels["adapter:job-a"]
    assert labels["merged:algebra-merged"] == f"algebra-merged (merged from {tiny_model_dir.name})"


def test_damaged_records_cost_a_label_not_the_list(data_root, tiny_model_dir):
    job = make_job(data_root, "job-a", tiny_model_dir, seed=1)
    merged = publish.merge_job(job, "m")
    (merged / "merge.json").write_bytes(b"\xff{")
    store.config_file(job).write_text("base_model: [unclosed")
    labels = {v: l for l, v in list_choices()}
    assert labels["merged:m"] == "m (merged)" and "adapter:job-a" in labels


def test_switching_adapters_of_one_base_loads_the_base_once(data_root, tiny_model_dir, counted_loads):
    make_job(data_root, "job-a", tiny_model_dir, seed=1)
    make_job(data_root, "job-b", tiny_model_dir, seed=2)
    base = load_model(str(tiny_model_dir))
    plain = last_logits(base)
    a, b = load_model("adapter:job-a"), load_model("adapter:job-b")
    assert len(counted_loads) == 1
    assert a.base is b.base is base.base and a.adapter != b.adapter

    logits_a, logits_b = last_logits(a), last_logits(b)
    assert not torch.allclose(logits_a, plain) and not torch.allclose(logits_b, logits_a)
    assert torch.allclose(last_logits(base), plain)  # the base choice runs with every adapter switched off
    assert torch.allclose(last_logits(a), logits_a)  # switching back gives the same model
    assert load_model("adapter:job-a") is a and len(counted_loads) == 1


def test_adapter_folder_and_job_folder_are_choices_too(data_root, tiny_model_dir):
    job = make_job(data_root, "job-a", tiny_model_dir, seed=1)
    by_id = load_model("adapter:job-a")
    assert load_model(str(job / "adapter")).adapter == by_id.adapter  # same adapter folder: loaded once
    assert load_model(str(job)).adapter == by_id.adapter


def test_missing_adapter_and_unfinished_job_say_what_to_do(data_root, tiny_model_dir):
    make_job(data_root, "job-r", tiny_model_dir, seed=1, state="running")
    with pytest.raises(ModelLoadError, match="no adapter yet.*running"):
        load_model("adapter:job-r")
    with pytest.raises(ModelLoadError, match="No adapter 'nope'"):
        load_model("adapter:nope")
    with pytest.raises(ModelLoadError, match="No merged model"):
        load_model("merged:../jobs")


@pytest.mark.parametrize("first", [True, False], ids=["first-on-base", "after-another"])
def test_broken_adapter_raises_and_the_base_stays_usable(data_root, tiny_model_dir, first):
    good = make_job(data_root, "good", tiny_model_dir, seed=1)
    broken = make_job(data_root, "broken", tiny_model_dir, seed=2)
    (broken / "adapter" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    base = load_model(str(tiny_model_dir))
    plain = last_logits(base)
    if not first:
        good_logits = last_logits(load_model("adapter:good"))

    with pytest.raises(ModelLoadError, match="broken"):
        load_model("adapter:broken")

    assert torch.allclose(last_logits(load_model(str(tiny_model_dir))), plain)
    if not first:
        assert torch.allclose(last_logits(load_model("adapter:good")), good_logits)
    else:
        assert not torch.allclose(last_logits(load_model("adapter:good")), plain)


def test_adapter_without_a_usable_base_is_refused(data_root, tiny_model_dir, tmp_path):
    job = make_job(data_root, "job-a", tiny_model_dir, seed=1)
    config_path = job / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="needs base model"):
        load_model("adapter:job-a")


def test_cache_keeps_at_most_max_bases(data_root, tiny_model_dir, monkeypatch, counted_loads):
    monkeypatch.setattr(models, "MAX_BASES", 2)
    copies = []
    for name in ("one", "two", "three"):
        copies.append(data_root / "models" / "merged" / name)
        shutil.copytree(tiny_model_dir, copies[-1])
    first = load_model("merged:one")
    load_model("merged:two")
    load_model("merged:three")
    assert len(models._bases) == 2 and first.base.key not in models._bases
    assert load_model("merged:three") is load_model("merged:three") and len(counted_loads) == 3
    assert load_model("merged:one") is not first and len(counted_loads) == 4  # evicted, so loaded again


def test_two_students_on_adapters_of_one_base_do_not_disturb_each_other(data_root, tiny_model_dir):
    make_job(data_root, "job-a", tiny_model_dir, seed=1)
    make_job(data_root, "job-b", tiny_model_dir, seed=2)
    choices = ["adapter:job-a", "adapter:job-b", str(tiny_model_dir)]
    questions = {c: f"Question for {c[-5:]}: what is 7 * 8?" for c in choices}
    expected = {c: greedy(load_model(c), questions[c]) for c in choices}
    assert len({tuple(v) for v in expected.values()}) == 3  # the three really differ

    results, errors = [], []

    def student(choice):
        try:
            for _ in range(4):
                results.append((choice, greedy(load_model(choice), questions[choice])))
        except Exception as exc:  # noqa: BLE001 — surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=student, args=(c,)) for c in choices for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 24 and all(out == expected[choice] for choice, out in results)


def test_attaching_an_adapter_waits_for_its_base_only(data_root, tiny_model_dir):
    make_job(data_root, "job-a", tiny_model_dir, seed=1)
    shutil.copytree(tiny_model_dir, data_root / "models" / "merged" / "other")
    base, other = load_model(str(tiny_model_dir)), load_model("merged:other")
    attached = []
    with base.base.lock:  # a reply in progress on the tiny base
        attaching = threading.Thread(target=lambda: attached.append(load_model("adapter:job-a")))
        attaching.start()
        attaching.join(timeout=1.0)
        assert attaching.is_alive() and not attached  # the adapter waits for that reply to end...
        others = threading.Thread(target=lambda: attached.append(load_model("merged:other")))
        others.start()
        others.join(timeout=60)
        assert not others.is_alive() and attached == [other]  # ...while the other base's students carry on
    attaching.join()
    assert attached[-1].adapter and attached[-1].base is base.base


def test_a_gpu_loads_an_adapters_base_as_the_adapter_was_trained(data_root, tiny_model_dir, monkeypatch):
    """An adapter runs on the very weights it learned on: 4-bit where its job trained in 4-bit, 16-bit where "auto"
    decided none (the embedded model's adapter, trained on bf16 weights, scored 32.6% instead of 54.8% on 4-bit ones);
    a base alone by the training rule (4-bit from 1B parameters: the tiny model is far below)."""
    monkeypatch.delenv("MATH_STUDIO_TUTOR_4BIT", raising=False)
    assert models.in_4bit(str(tiny_model_dir), None) is False  # a CPU: full precision always
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: True)
    qlora, auto = (make_job(data_root, name, tiny_model_dir, seed=1) for name in ("qlora", "auto"))
    JobConfig(base_model=str(tiny_model_dir), quantization="4bit").save(store.config_file(qlora))
    store.update_status(auto, resolved={"quantization": "none", "gradient_checkpointing": "off"})
    assert models.in_4bit(str(tiny_model_dir), store.adapter_dir(qlora)) is True
    assert models.in_4bit(str(tiny_model_dir), store.adapter_dir(auto)) is False
    assert models.in_4bit(str(tiny_model_dir), None) is False
    monkeypatch.setenv("MATH_STUDIO_TUTOR_4BIT", "1")
    assert models.in_4bit(str(tiny_model_dir), store.adapter_dir(auto)) is True
