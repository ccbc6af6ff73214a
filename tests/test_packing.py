"""Padding-free batches keep examples apart: every token's loss is the loss it has when its example is alone.

The batch comes from the worker's own trainer (`trainer.train.build_trainer` with the app's defaults: padding-free,
attention chosen for this machine, sdpa on a CPU), so this checks the path that training takes, on a 4-bit base (what
quantization auto picks for every base of 1B parameters or more; it would train this tiny one unquantized). The GPU's varlen
path runs here too, with a per-example stand-in for torch's flash kernel (which has no CPU version); the kernel
itself is compared on the GPU by benchmarks/train_throughput.py --check-packing.

Packed and alone are the same arithmetic in another order, so their losses agree up to rounding, and the rounding
that counts is bf16's: TRL keeps QLoRA adapters in bf16, and PEFT rounds each adapter's input to bf16, where a last-bit
difference in the fp32 attention before it (one long masked row against one short causal one) can tip a value to its
neighbour 2^-8 away. The tolerance is twice that rounding (packed and alone each carry it), measured on this machine
(`bf16_rounding`) rather than fixed: kernels differ between CPUs, and so do the values that happen to tip.
"""

import torch.nn.attention.varlen
import pytest
import torch
import torch.nn.functional as F

from trainer import jobs
from trainer.config import JobConfig
from trainer.train import attention_for, build_trainer, varlen_attention, varlen_parameters


def varlen_stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                    enable_gqa=False):
    """torch.nn.attention.varlen.varlen_attn for a CPU: causal sdpa over each sequence on its own."""
    assert window_size == (-1, 0) and torch.equal(cu_seq_q, cu_seq_k) and enable_gqa
    out = torch.empty_like(query)
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist()):
        q, k, v = (t[start:end].transpose(0, 1)[None] for t in (query, key, value))
        out[start:end] = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                        enable_gqa=True)[0].transpose(0, 1)
    return out


@pytest.fixture(params=["auto", "varlen"])
def packed(request, tiny_model_dir, tmp_path, monkeypatch):
    """The worker's trainer on the tiny model with non-zero adapters, and its first padding-free batch."""
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path / "studio"))
    if request.param == "varlen":
        monkeypatch.setattr(torch.nn.attention.varlen, "varlen_attn", varlen_stand_in)
        varlen_parameters.cache_clear()
    config = JobConfig(base_model=str(tiny_model_dir), dataset="builtin:basic-math", max_samples=6, eval_fraction=0,
                       per_device_batch_size=6, max_steps=1, attention=request.param, lora_dropout=0,
                       quantization="4bit")
    trainer, _ = build_trainer(config, jobs.create_job(config, name="packing"))
    torch.manual_seed(1)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # zero at the start: make the adapters change the output, so they are checked too
            param.data.normal_(0, 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    yield trainer, trainer.model.train(), batch  # as the optimizer step runs it (deterministic without dropout)
    varlen_parameters.cache_clear()


def token_losses(model, input_ids, labels, **extra):
    """Per-token negative log-likelihood through the fused LM head, as SFTTrainer.compute_loss takes it."""
    with torch.no_grad():
        return -model(input_ids=input_ids, labels=labels, fused_lm_head=True, **extra).log_probs[0]


def alone(model, batch, start, end):
    """The losses of the example at [start, end) of the row, given on its own (a batch of one example)."""
    bounds = torch.tensor([0, end - start], dtype=torch.int32)
    return token_losses(model, batch["input_ids"][:, start:end], batch["labels"][:, start:end],
                        cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=end - start, max_length_k=end - start)


def bf16_rounding(model, batch):
    """How far bf16 rounding moves a token's loss in this computation: the largest change in the row's losses when the
    adapters, kept in bf16 as trained, are computed in fp32 instead (bf16 to fp32 and back is exact)."""
    adapters = [param for name, param in model.named_parameters() if "lora_" in name]
    assert {param.dtype for param in adapters} == {torch.bfloat16}
    as_trained = token_losses(model, **batch)
    for param in adapters:
        param.data = param.data.float()
    in_fp32 = token_losses(model, **batch)
    for param in adapters:
        param.data = param.data.bfloat16()
    return (as_trained - in_fp32).abs().max().item()


def test_a_padding_free_batch_gives_every_token_its_unpacked_loss(packed):
    trainer, model, batch = packed
    assert attention_for(JobConfig()) == "sdpa"  # "auto" on a CPU
    assert model.config._attn_implementation in ("sdpa", "varlen")
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one row, no padding
    starts = batch["cu_seq_lens_q"].tolist()
    assert len(starts) == 7  # the six examples, end to end

    tolerance = 2 * bf16_rounding(model, batch)  # some 5e-3; a leak moves losses by 0.1 and more (next test)
    packed_losses = token_losses(model, **batch)
    for start, end in zip(starts[:-1], starts[1:]):
        learned = batch["labels"][0, start + 1 : end] != -100
        assert learned.sum() > 5  # the answer's tokens
        torch.testing.assert_close(packed_losses[start : end - 1], alone(model, batch, start, end), atol=tolerance,
                                   rtol=0)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()  # the mean the optimizer steps on
    assert loss == pytest.approx(packed_losses.sum().item() / (batch["labels"][:, 1:] != -100).sum().item(), abs=1e-4)


def test_the_check_fails_when_examples_see_each_other(packed):
    """The same row with one running position (plain causal attention over the row) gives other losses."""
    _, model, batch = packed
    tolerance = 2 * bf16_rounding(model, batch)  # the previous test's
    model.set_attn_implementation("sdpa")
    starts = batch["cu_seq_lens_q"].tolist()
    mixed = token_losses(model, batch["input_ids"], batch["labels"],
                         position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    second = slice(starts[1], starts[2] - 1)
    assert (mixed[second] - alone(model, batch, starts[1], starts[2])).abs().max() > 10 * tolerance


@pytest.mark.parametrize("packed", ["auto"], indirect=True)
def test_an_evaluation_leaves_the_gradients_of_training_as_they_were(packed):
    """bitsandbytes runs 4-bit layers in eval mode on CPUs with AVX512-BF16 through an inference kernel without a
    backward; the evaluations between training steps must not leave training on it (a no-op on other machines)."""
    trainer, model, batch = packed

    def gradients():
        model.zero_grad()
        trainer.compute_loss(model, dict(batch)).backward()
        return [param.grad.clone() for param in model.parameters() if param.requires_grad]

    before = gradients()
    model.eval()
    token_losses(model, **batch)  # as Trainer.evaluate runs it: eval mode, no gradients
    model.train()
    assert all(torch.equal(grad, again) for grad, again in zip(before, gradients(), strict=True))


def test_varlen_attention_refuses_padded_batches():
    query = torch.zeros(2, 4, 8, 16)
    with pytest.raises(ValueError, match="padding_free"):
        varlen_attention(torch.nn.Module(), query, query, query, None)
