"""The random-weight models the GPU benchmarks time (benchmarks/train_throughput.py write_random_model)."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.train_throughput import write_random_model


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
