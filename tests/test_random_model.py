"""The random-weight models the GPU benchmarks time (benchmarks/train_throughput.py write_random_model)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.train_throughput import SHAPES, check_trains, model_config, write_random_model
from trainer.config import TUTOR_PROMPT


def test_a_random_model_writes_only_words_that_stream(embedded_dir, tmp_path):
    """Every id it samples starts a word, so a streamer that shows text up to its last space shows a reply as it
    grows: the tutor benchmarks time replies, not text held back."""
    folder = write_random_model("tiny-gemma3", str(embedded_dir), tmp_path / "tiny-gemma3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = tokenizer("What is 15% of 80?", return_tensors="pt")
    torch.manual_seed(0)
    ids = model.generate(**prompt, do_sample=True, temperature=0.7, max_new_tokens=40, min_new_tokens=40)
    reply = ids[0, prompt["input_ids"].shape[1]:].tolist()
    assert len(reply) == 40
    assert all(tokenizer.decode([token]).startswith(" ") for token in reply), tokenizer.decode(reply)


DEEP = dict(SHAPES["tiny"], num_hidden_layers=48)  # deep enough for a gradient that grows per layer to overflow


def chat_ids(tokenizer):
    chat = [{"role": "system", "content": TUTOR_PROMPT}, {"role": "user", "content": "What is 15% of 80?"},
            {"role": "assistant", "content": "<think>80 x 0.15 = 12</think> \\boxed{12}"}]
    return tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True)["input_ids"]


def test_a_deep_random_model_has_finite_gradients(embedded_dir, tmp_path, monkeypatch):
    """Issue 18: the written model trains. A chat starts with ids that start no word ('<|im_start|>system'); with
    their tied rows zeroed, those positions stayed zero through every layer and their gradient overflowed (NaN)."""
    monkeypatch.setitem(SHAPES, "deep", DEEP)
    folder = write_random_model("deep", str(embedded_dir), tmp_path / "deep")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = chat_ids(tokenizer)
    embeddings = model.get_input_embeddings().weight
    assert (embeddings[ids[0]].abs().sum(-1) > 0).all()  # no prompt position reads a zero vector
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_check_trains_refuses_zeroed_prompt_rows(embedded_dir, monkeypatch):
    """The writer's own check catches what the issue saw: rows of the ids a chat starts with zeroed, as written
    before, give a gradient that is not finite on the deep shape."""
    monkeypatch.setitem(SHAPES, "deep", DEEP)
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("deep"), dtype=torch.float32)
    check_trains(model, tokenizer)  # random rows everywhere: finite
    with torch.no_grad():
        model.get_input_embeddings().weight[chat_ids(tokenizer)[0, :4]] = 0  # '<|im_start|>system\nYou'
    with pytest.raises(ValueError, match="gradients are not finite"):
        check_trains(model, tokenizer)
