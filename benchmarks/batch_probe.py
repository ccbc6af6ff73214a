"""transformers' own continuous batching on the tutor's loaded model, without the tutor's loop or the web server.

    MATH_STUDIO_TUTOR_4BIT=0 python benchmarks/batch_probe.py --model /tmp/tt/gemma3-4b --sizes 1 8 32 --out probe.json

For each size N: `model.generate_batch` on N copies of one tutor prompt, with tutor.serving's cache and generation
settings (greedy unless --sampled), with PyTorch's cuDNN attention off (as the tutor runs) and on. The time includes creating the
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


def batch(model, prompt: list[int], size: int, new_tokens: int, sampled: bool) -> dict:
    config = serving.cache_config()
    generation = serving.generation_config(model, sampled)
    generation.max_new_tokens = new_tokens
    sync()
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=[list(prompt)] * size, generation_config=generation,
                                   continuous_batching_config=config)
    seconds = time.perf_counter() - started
    tokens = sum(len(output.generated_tokens) for output in outputs.values())
    return {"size": size, "sampled": sampled, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}


def profile(model, prompt: list[int], size: int, new_tokens: int, sampled: bool) -> dict:
    """Where the time of one generate_batch of `size` replies goes: the busiest Python functions of the manager's loop
    thread (cProfile), the busiest GPU kernels (torch.profiler) and their total against the wall time: far less means
    the host sets the pace, not the GPU."""
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager

    loop, host = ContinuousBatchingManager._run_generation_loop, cProfile.Profile()
    ContinuousBatchingManager._run_generation_loop = lambda manager: host.runcall(loop, manager)
    gpu = torch.cuda.is_available()
    try:
        with torch_profile(activities=[ProfilerActivity.CUDA] if gpu else [ProfilerActivity.CPU]) as kernels:
            report = batch(model, prompt, size, new_tokens, sampled)
    finally:
        ContinuousBatchingManager._run_generation_loop = loop
    table = io.StringIO()
    pstats.Stats(host, stream=table).sort_stats("tottime").print_stats(25)
    report["loop_functions"] = table.getvalue()
    if gpu:
        events = kernels.key_averages()
        report["gpu_ops"] = events.table(sort_by="self_device_time_total", row_limit=15)
        report["gpu_kernel_s"] = round(sum(event.self_device_time_total for event in events) / 1e6, 2)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="any model choice the tutor takes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--sampled", action="store_true", help="the tutor's sampling instead of greedy")
    parser.add_argument("--profile", type=int, metavar="N", help="first profile one batch of N replies")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    loaded = load_model(args.model)
    model = loaded.model
    prompt = fit_prompt(loaded, build_messages([{"role": "user", "content": "What is 15% of 80?"}], TUTOR_PROMPT),
                        args.new_tokens)
    report = {"command": " ".join(["python", *sys.argv]), "device": str(model.device), "dtype": str(model.dtype),
              "prompt_tokens": len(prompt), "rows": []}
    if args.profile:
        report["profile"] = profile(model, prompt, args.profile, args.new_tokens, args.sampled)
        print(report["profile"]["loop_functions"], report["profile"].get("gpu_ops", ""), flush=True)
        print(json.dumps({key: value for key, value in report["profile"].items() if "\n" not in str(value)}), flush=True)
    batch(model, prompt, 1, 4, args.sampled)  # warm-up: the first batch of a process pays one-time costs
    for cudnn in (False, True):  # PyTorch's cuDNN attention: off as the tutor loads models (tutor/models.py), and on
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        for size in args.sizes:
            report["rows"].append({"cudnn_attention": cudnn,
                                   **batch(model, prompt, size, args.new_tokens, args.sampled)})
            print(json.dumps(report["rows"][-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=1))
        ids = torch.tensor([prompt], device=model.device)
        sync()
        started = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                       min_new_tokens=args.new_tokens, do_sample=False)
        sync()
        report["rows"].append({"cudnn_attention": cudnn, "generate_one_reply_tokens_per_s":
                               round(args.new_tokens / (time.perf_counter() - started), 1)})
        print(json.dumps(report["rows"][-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
