"""Ways to decode the CPU evaluation's first batch faster, measured against the evaluation's own loop (issue 12).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_decode.py --variant eager|packed|bf16|int4|compiled

Every variant generates greedily for the first `--limit` GSM8K test problems in one batch, as
`python -m tutor eval --benchmark gsm8k --limit 4` does, and prints its generation's wall and CPU seconds, each reply's
tokens and why it ended, and whether the replies are the evaluation's own (`eager`, tutor.evaluate.generate_batch):

- packed: every linear layer through MKL's packed fp32 GEMM (torch.ops.mkl._mkl_linear), the same fp32 weights.
- bf16: the whole model in bfloat16.
- int4: the 30 layers' linear weights packed as 4-bit (they are exactly 4-bit: the embedded checkpoint is the GGUF's
  Q4_1, 32 weights per scale and minimum) through torch's int4 CPU kernel, which is fast only with bfloat16 inputs.
- compiled: a static KV cache and torch.compile (inductor) of the decoding step; the prefill runs eagerly; the first
  compiled step's time (compiling; inductor keeps what it built on disk for later processes) is printed apart.
Not part of the app: the evaluation keeps `eager`; see benchmarks/README.md (issue 12) for the figures.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers.cache_utils import StaticCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tutor.chat import encode  # noqa: E402
from tutor.evaluate import EvalConfig, Reply, end_token_ids, generate_batch, load_problems, prompt_messages, stop_reason
from tutor.models import load_for_evaluation

GROUP = 32  # weights per scale and minimum in the embedded checkpoint's 4-bit (Q4_1) layers


class PackedLinear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, rows: int):
        super().__init__()
        self.weight, self.bias, self.rows = linear.weight, linear.bias, rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(linear.weight.detach(), rows)

    def forward(self, x):
        out = torch.ops.mkl._mkl_linear(x.reshape(-1, x.shape[-1]), self.packed, self.weight, self.bias, self.rows)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Int4Linear(torch.nn.Module):
    """A linear layer whose weights are 4-bit with a scale and minimum per GROUP (checked exact), in bf16 arithmetic."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        rows, cols = weight.shape
        groups = weight.reshape(rows, cols // GROUP, GROUP)
        low = groups.amin(-1)
        step = (groups.amax(-1) - low) / 15
        levels = ((groups - low[..., None]) / step.clamp(min=1e-30)[..., None]).round()
        assert torch.equal(levels * step[..., None] + low[..., None], groups), "weights that are not 4-bit"
        self.packed = torch._convert_weight_to_int4pack_for_cpu(levels.to(torch.int32).reshape(rows, cols), 1)
        # the kernel computes (level - 8) * scale + zero
        self.scales = torch.stack([step, low + 8 * step], -1).transpose(0, 1).contiguous().to(torch.bfloat16)

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales)
        return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def replace_linears(model, make) -> None:
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, make(child))


def compiled_batch(loaded, prompts: list[list[int]], max_new_tokens: int) -> tuple[list[Reply], float]:
    """generate_batch's greedy loop and stop rules on a StaticCache, every step after the prefill compiled; rows stay
    in the batch (static shapes). Returns the replies and the seconds the first compiled step took."""
    tokenizer, pad = loaded.tokenizer, loaded.tokenizer.pad_token_id
    width, length = max(map(len, prompts)), max(map(len, prompts)) + max_new_tokens
    replies, tokens_of, compile_s = [Reply("", 0, "limit") for _ in prompts], [[] for _ in prompts], 0.0
    with loaded.activated() as model:
        step = torch.compile(model, dynamic=False)
        ends = set(end_token_ids(model, tokenizer))
        cache = StaticCache(config=model.config, max_cache_len=length)
        tokens = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * (length - width + len(ids)) for ids in prompts])
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        ended = [False] * len(prompts)
        for index in range(max_new_tokens):
            started = time.perf_counter()
            out = (step if index else model)(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                             past_key_values=cache, use_cache=True, logits_to_keep=1)
            tokens = out.logits[:, -1].argmax(-1, keepdim=True)
            if index == 1:
                compile_s = time.perf_counter() - started
            for i, token in enumerate(tokens[:, 0].tolist()):
                if ended[i]:
                    continue
                if token in ends:
                    ended[i], replies[i].stop = True, "end"
                    continue
                tokens_of[i].append(token)
                piece = tokenizer.decode([token], skip_special_tokens=True)
                replies[i].text += piece
                replies[i].stop = stop_reason(replies[i].text, piece) or "limit"
                ended[i] = replies[i].stop != "limit"
            if all(ended):
                break
            positions = positions[:, -1:] + 1
    texts = tokenizer.batch_decode(tokens_of, skip_special_tokens=True)
    return [Reply(text, len(ids), reply.stop) for text, ids, reply in zip(texts, tokens_of, replies)], compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=["eager", "packed", "bf16", "int4", "compiled"], default="eager")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=EvalConfig.max_new_tokens)
    args = parser.parse_args()
    loaded = load_for_evaluation("embedded:smollm2-135m-instruct")
    problems, _ = load_problems("gsm8k", "", args.limit)
    prompts = sorted((encode(loaded.tokenizer, prompt_messages(p)) for p in problems), key=lambda ids: -len(ids))
    started, cpu_started = time.perf_counter(), time.process_time()
    reference = [(r.text, r.stop) for r in generate_batch(loaded, prompts, args.max_new_tokens)]
    print(f"eager (the evaluation's loop, first): generation {time.perf_counter() - started:.1f} s "
          f"({time.process_time() - cpu_started:.1f} CPU s)", flush=True)
    model = loaded.base.model
    with torch.inference_mode():
        if args.variant == "packed":
            replace_linears(model, lambda linear: PackedLinear(linear, len(prompts)))
            model.lm_head = PackedLinear(model.lm_head, len(prompts))
        elif args.variant == "bf16":
            model.to(torch.bfloat16)
        elif args.variant == "int4":
            replace_linears(model, Int4Linear)
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.variant == "compiled":
        replies, compile_s = compiled_batch(loaded, prompts, args.max_new_tokens)
    else:
        replies, compile_s = generate_batch(loaded, prompts, args.max_new_tokens), 0.0
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"{args.variant}: generation {wall:.1f} s ({cpu:.1f} CPU s), of which compiling {compile_s:.1f} s; "
          f"tokens {[r.tokens for r in replies]}; stops {[r.stop for r in replies]}; the evaluation's replies: "
          f"{[(r.text, r.stop) for r in replies] == reference}")


if __name__ == "__main__":
    main()
