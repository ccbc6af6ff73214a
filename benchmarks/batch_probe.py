"""transformers' own continuous batching on the tutor's loaded model, without the tutor's loop or the web server.

    MATH_STUDIO_TUTOR_4BIT=0 python benchmarks/batch_probe.py --model /tmp/tt/gemma3-4b --sizes 1 8 32 --out probe.json

For each size N: `model.generate_batch` on N copies of one tutor prompt, with tutor.serving's cache and generation
settings (greedy unless --sampled), CUDA graphs as transformers decides and off. The time includes creating the
manager, as every new batch in the tutor does. Then one plain `generate()` reply for comparison. It tells apart what
transformers' batching costs from what tutor/serving.py and the app add (benchmarks/tutor_latency.py --direct, and
without --direct).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_throughput import sync  # noqa: E402
from trainer.config import TUTOR_PROMPT  # noqa: E402
from tutor import serving  # noqa: E402
from tutor.chat import build_messages, fit_prompt  # noqa: E402
from tutor.models import load_model  # noqa: E402


def batch(model, prompt: list[int], size: int, new_tokens: int, sampled: bool, graphs: bool | None) -> dict:
    config = serving.cache_config()
    config.use_cuda_graph = graphs
    generation = serving.generation_config(model, sampled)
    generation.max_new_tokens = new_tokens
    sync()
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=[list(prompt)] * size, generation_config=generation,
                                   continuous_batching_config=config)
    seconds = time.perf_counter() - started
    tokens = sum(len(output.generated_tokens) for output in outputs.values())
    return {"size": size, "sampled": sampled, "cuda_graphs": {None: "auto", True: "on", False: "off"}[graphs],
            "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="any model choice the tutor takes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--sampled", action="store_true", help="the tutor's sampling instead of greedy")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    loaded = load_model(args.model)
    model = loaded.model
    prompt = fit_prompt(loaded, build_messages([{"role": "user", "content": "What is 15% of 80?"}], TUTOR_PROMPT),
                        args.new_tokens)
    report = {"command": " ".join(["python", *sys.argv]), "device": str(model.device), "dtype": str(model.dtype),
              "prompt_tokens": len(prompt), "rows": []}
    for graphs in (None, False):
        for size in args.sizes:
            report["rows"].append(batch(model, prompt, size, args.new_tokens, args.sampled, graphs))
            print(json.dumps(report["rows"][-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=1))
    ids = torch.tensor([prompt], device=model.device)
    sync()
    started = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                   min_new_tokens=args.new_tokens, do_sample=False)
    sync()
    report["generate_one_reply_tokens_per_s"] = round(args.new_tokens / (time.perf_counter() - started), 1)
    print(json.dumps({"generate_one_reply_tokens_per_s": report["generate_one_reply_tokens_per_s"]}))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
