"""Publishing a finished job: merge its adapter into the base, write its model card, push it to the Hub.

    merge_job(job_dir, name)      -> <data_root>/models/merged/<name>/ (standalone checkpoint + merge.json)
    model_card(job_dir, merged)   -> README.md text (YAML header + what is known about the run)
    push_job(job_dir, repo_id)    -> the repo URL, after uploading the adapter (or merged model) with its card

The token comes from the argument or HF_TOKEN and is only ever handed to huggingface_hub, which sends it in the
Authorization header; it is never written to disk, logged, or put into a message. HF_ENDPOINT is read at call
time, so a local stand-in for the Hub can be used without reimporting huggingface_hub.
"""

import getpass
import json
import os
import re
import shutil
import sys
from pathlib import Path

import httpx2  # huggingface_hub 2.4's HTTP client: its TransportError is how network failures arrive
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCardData, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.repocard import metadata_load

from trainer.config import JobConfig
from trainer.models import EMBEDDED, resolve_model
from trainer.store import (
    State, adapter_dir, config_as_trained, config_file, has_adapter, job_dir as find_job, loss_plot_file, merged_dir,
    merged_folders, read_merge_record, read_metrics, read_progress, read_reports, status_or_damage, write_merge_record,
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
HUB_DATASET_RE = re.compile(r"hub:([A-Za-z0-9][\w.-]*/[\w.-]+)")
EMBEDDED_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was made from
EMBEDDED_LICENSE = "apache-2.0"
TOKENS_URL = "https://huggingface.co/settings/tokens"
HUB_FAILURES = (HfHubHTTPError, httpx2.TransportError, OfflineModeIsEnabled)  # what a Hub request can fail with


class PublishError(ValueError):
    """A merge or push that cannot be done, with what to do about it. Never contains the token."""


# ---------------------------------------------------------------- small pure helpers

def check_name(name: str) -> str:
    """A merged model's folder name: letters, digits, '.', '_' and '-', not starting with '.' or '-'."""
    if not NAME_RE.fullmatch(name or ""):
        raise PublishError(f"{name!r} is not a usable name: use letters, digits, '.', '_' and '-' "
                           "(starting with a letter or digit), e.g. gsm8k-tutor-v1.")
    return name


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID_RE.fullmatch(repo_id or ""):
        raise PublishError(f"{repo_id!r} is not a Hub repo id: use owner/name, e.g. your-username/math-tutor.")
    return repo_id


def hub_datasets(spec: str) -> list[str]:
    """The Hub dataset ids in a dataset spec such as `hub:openai/gsm8k:main*3000+builtin:basic-math`."""
    return list(dict.fromkeys(HUB_DATASET_RE.findall(spec or "")))


def base_hub_id(base_model: str) -> str | None:
    """The base's Hub id for the card's `base_model`, or None for a local folder (which has no Hub id)."""
    if base_model == EMBEDDED:
        return EMBEDDED_ORIGIN
    if Path(base_model).expanduser().exists() or not REPO_ID_RE.fullmatch(base_model):
        return None
    return base_model


def base_license(base_model: str) -> str | None:
    """The base's license from its README header: a local folder, the local Hub cache, or the embedded model."""
    if base_model == EMBEDDED:
        return EMBEDDED_LICENSE
    folder = Path(base_model).expanduser()
    if folder.is_dir():
        readme = folder / "README.md"
    elif REPO_ID_RE.fullmatch(base_model):
        cached = try_to_load_from_cache(base_model, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    else:
        readme = None
    if readme is None or not readme.exists():
        return None
    return (metadata_load(readme) or {}).get("license")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "[token]") if secret else text


# ---------------------------------------------------------------- the job's files

def finished_status(job_dir: Path) -> dict:
    """The status of a completed job with an adapter; anything else cannot be merged or pushed."""
    status = status_or_damage(job_dir)
    if status["state"] != State.COMPLETED:
        raise PublishError(f"Job {status['id']} is {status['state']}: only completed jobs can be merged or pushed. "
                           f"{status.get('reason') or ''}".strip())
    if not has_adapter(job_dir):
        raise PublishError(f"Job {status['id']} has no adapter in {adapter_dir(job_dir)}: train it again.")
    return status


def job_config(job_dir: Path) -> JobConfig:
    """The job's config as it trained: "auto" settings as its worker decided them for the base (its status)."""
    try:
        return config_as_trained(job_dir, status_or_damage(job_dir))
    except ValueError as exc:  # Damaged: the message says which file and what is wrong
        raise PublishError(str(exc)) from None


def eval_reports(job_dir: Path) -> list[dict]:
    """The latest report per benchmark, as tutor/evaluate.py writes them (benchmark, data, protocol and a summary
    per role: base, adapter)."""
    latest = {}
    for report in read_reports(job_dir):
        if report.get("benchmark") and isinstance(report.get("summary"), dict):
            latest[report["benchmark"]] = report
    return list(latest.values())


def render_loss_plot(job_dir: Path) -> Path | None:
    """Draw progress.jsonl's train and eval loss to `<job>/loss.png`. None when no loss was logged."""
    rows = read_progress(job_dir)
    train = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
    evals = [(r["step"], r["eval_loss"]) for r in rows if isinstance(r.get("eval_loss"), (int, float))]
    if not train and not evals:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in the web process's threads

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    for points, label in [(train, "train loss"), (evals, "eval loss")]:
        if points:
            axes.plot(*zip(*points), label=label, marker="o" if len(points) < 30 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    path = loss_plot_file(job_dir)
    figure.savefig(path, bbox_inches="tight")
    return path


# ---------------------------------------------------------------- merge

def list_merged() -> list[dict]:
    """Every merged model: its merge record plus `name` and `path`, newest first."""
    return sorted(map(read_merge_record, merged_folders()), key=lambda m: str(m.get("created", "")), reverse=True)


def merge_job(job_dir: Path, name: str | None = None) -> Path:
    """Merge a completed job's adapter into its base loaded in 16-bit (bf16 on GPU, fp32 on CPU), never into
    4-bit weights, and save a standalone checkpoint to `<data_root>/models/merged/<name>/`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job_dir = Path(job_dir)
    status = finished_status(job_dir)
    name = check_name(name or status["id"])
    target = merged_dir() / name
    if target.exists():
        raise PublishError(f"A merged model named {name!r} already exists ({target}): pick another name or delete it.")
    config = job_config(job_dir)
    base_path = resolve_model(config.base_model)
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, device_map="auto" if gpu else None)
    if getattr(model, "hf_quantizer", None) is not None:
        raise PublishError(f"{config.base_model} is a quantized checkpoint: merging needs its 16-bit weights. "
                           "Use the adapter as it is, or train on an unquantized base.")
    adapter = adapter_dir(job_dir)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").exists() else base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    tmp = merged_dir() / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # safetensors, config.json, generation_config.json
    tokenizer.save_pretrained(tmp)  # tokenizer files and the chat template
    shutil.copy(config_file(job_dir), config_file(tmp))
    write_merge_record(tmp, job_id=status["id"], job_name=status.get("name"), base_model=config.base_model,
                       base_path=base_path, dtype=str(dtype).removeprefix("torch."))
    tmp.rename(target)  # a folder with this name is always a complete model
    return target


def merged_for_job(job_id: str) -> Path | None:
    return next((Path(m["path"]) for m in list_merged() if m.get("job_id") == job_id), None)


# ---------------------------------------------------------------- model card

def model_card(job_dir: Path, merged: bool, repo_id: str = "REPO_ID") -> str:
    """The README model card, from config.yaml, metrics.json, progress.jsonl (rendered to loss.png beside the
    job) and the evaluation reports in eval/."""
    job_dir = Path(job_dir)
    config = job_config(job_dir)
    metrics = read_metrics(job_dir)
    status = status_or_damage(job_dir)
    base_id, license_ = base_hub_id(config.base_model), base_license(config.base_model)
    datasets = hub_datasets(config.dataset)
    tags = ["math", "math-agent-studio", "trl", config.method, "lora"]
    tags += ["qlora"] if config.quantization == "4bit" else []
    # PEFT's own card tags an adapter with its base (the Hub links the two by it); ours keeps them.
    tags += ["merged"] if merged else ["transformers"] + ([f"base_model:adapter:{base_id}"] if base_id else [])
    results = eval_results(eval_reports(job_dir))
    card_data = ModelCardData(base_model=base_id, library_name="transformers" if merged else "peft",
                              pipeline_tag="text-generation", license=license_, datasets=datasets or None, tags=tags,
                              model_name=repo_id.split("/")[-1] if results else None, eval_results=results or None)
    base_text = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"the local model `{config.base_model}`"
    kind = "a LoRA adapter merged into its base (a standalone model)" if merged else "a LoRA adapter (PEFT)"
    plot = render_loss_plot(job_dir)
    qlora = " (QLoRA: the base was loaded in 4-bit while training)" if config.quantization == "4bit" else ""
    embedded = "" if config.base_model != EMBEDDED else (
        " It was trained on the Q4_1 GGUF build of that model (shipped with Math Agent Studio), dequantized; "
        "its weights differ slightly from the original's.")
    method = "supervised fine-tuning" if config.method == "sft" else (
        "reinforcement from verified answers (GRPO: sampled replies rewarded when their final answer checks out"
        + (f", starting from the adapter of job {config.init_adapter}" if config.init_adapter else "") + ")")
    held_out = f", {config.eval_fraction:.0%} held out for evaluation loss" if config.method == "sft" else ""
    sections = [
        f"# {repo_id.split('/')[-1]}\n\n{repo_id} is {kind} for {base_text}, trained by {method} "
        f"on math problems with Math Agent Studio{qlora}.{embedded}",
        "## Training data\n\n" + "\n".join([
            f"- Dataset spec: `{config.dataset}` (split `{config.dataset_split}`)",
            f"- Examples used: {metrics.get('train_examples', 'unknown')} for training"
            f" (max_samples = {config.max_samples or 'all'}){held_out}",
            f"- Tokens seen: {metrics.get('train_tokens', 'unknown')}",
        ]),
        "## Training\n\n" + "\n".join([
            f"- Hardware: {metrics.get('hardware') or status.get('device') or 'unknown'}",
            f"- Training time: {duration(metrics.get('train_runtime_s'))}, "
            f"{metrics.get('steps', status.get('step', '?'))} steps",
            f"- Final training loss: {fmt(metrics.get('final_loss'))} (first logged: {fmt(metrics.get('first_loss'))})",
        ]) + ("\n\n![Training loss](loss.png)" if plot else "")
        + "\n\nEvery setting of the run (`config.yaml`, also in this repo):\n\n```yaml\n" + config.to_yaml() + "```",
        eval_section(eval_reports(job_dir)),
        "## Intended use and limits\n\n"
        "Meant for step-by-step help with school and competition math in a tutoring setting, where a person reads "
        "the answers. It is a small fine-tune: it makes arithmetic and reasoning mistakes, can state wrong answers "
        "confidently, and inherits the limits and biases of its base model and training data. Check its answers "
        "before relying on them; do not use it to grade students or for decisions about people.",
        "## How to load it\n\n```python\n" + load_snippet(repo_id, merged, config.system_prompt) + "```",
    ]
    body = "\n\n".join(s for s in sections if s)
    return f"---\n{card_data.to_yaml()}\n---\n\n{body}\n"


def eval_results(reports: list[dict]) -> list[EvalResult]:
    """The fine-tuned model's accuracy per benchmark, for the card's model-index (the base's is in the text)."""
    return [EvalResult(task_type="text-generation", dataset_type=r["benchmark"], dataset_name=r["benchmark"],
                       metric_type="accuracy", metric_value=r["summary"]["adapter"]["accuracy"],
                       metric_name=f"accuracy ({r['summary']['adapter']['total']} problems, "
                                   f"{r.get('protocol', {}).get('shots', 0)}-shot)")
            for r in reports if r["summary"].get("adapter")]


def fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "unknown"


def eval_section(reports: list[dict]) -> str:
    """A table of base vs fine-tuned accuracy, and each benchmark's protocol."""
    if not reports:
        return ""
    rows, protocols = [], []
    for r in reports:
        summary, protocol = r["summary"], r.get("protocol", {})
        rows.append(f"| {r['benchmark']} | {r.get('data', {}).get('problems', '?')} | "
                    f"{accuracy(summary.get('base'))} | {accuracy(summary.get('adapter'))} |")
        protocols.append(f"- {r['benchmark']}: "
                         f"{protocol.get('shots', '?')}-shot, {protocol.get('decoding', 'greedy')}, "
                         f"max_new_tokens {protocol.get('max_new_tokens', '?')}, the tutor system prompt and the "
                         f"model's chat template; the final answer is extracted and checked for mathematical "
                         f"equivalence with the reference (math-verify). Device: {protocol.get('device', '?')}.")
    return ("## Evaluation\n\n| benchmark | problems | base model | fine-tuned |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n\nProtocol (the same for base and fine-tuned):\n\n" + "\n".join(protocols))


def accuracy(run: dict | None) -> str:
    return f"{run['accuracy']:.1%} ({run['correct']}/{run['total']})" if run else "not evaluated"


def load_snippet(repo_id: str, merged: bool, system_prompt: str) -> str:
    if merged:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n')
    else:
        load = ("from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")  # loads the base, then the adapter\n')
    return (load + f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
            f"messages = [{{\"role\": \"system\", \"content\": {json.dumps(system_prompt)}}},\n"
            '            {"role": "user", "content": "What is 15% of 80?"}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\","
            " return_dict=True)\n"
            "output = model.generate(**inputs, max_new_tokens=512)\n"
            'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n')


# ---------------------------------------------------------------- push

def hub_api(token: str) -> HfApi:
    """An HfApi for this token, at HF_ENDPOINT as set now (huggingface_hub reads it only at import)."""
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def hub_error(exc: Exception, repo_id: str, user: str | None, endpoint: str) -> str:
    """What a failed Hub request means for the user, in words they can act on."""
    if isinstance(exc, OfflineModeIsEnabled):
        return "Offline mode is on (HF_HUB_OFFLINE is set): unset it to push to the Hugging Face Hub."
    if isinstance(exc, httpx2.TransportError):
        return (f"Cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: {exc}). "
                "Check the network connection and try again.")
    code = exc.response.status_code
    if code == 401:
        return (f"The Hugging Face token was rejected (401): it is invalid, expired or revoked. "
                f"Create a token with write access at {TOKENS_URL} and try again.")
    if code == 403:
        who = f" (signed in as {user})" if user else ""
        return (f"Your token{who} may not write to {repo_id}: the repo or its namespace belongs to someone else, "
                f"or the token is read-only. Push to a repo under your own name (or an organization you can "
                f"write to) with a write token from {TOKENS_URL}.")
    detail = exc.server_message or exc.response.reason_phrase
    return f"The Hugging Face Hub refused the request for {repo_id} (HTTP {code}: {detail}). Try again later."


def upload_plan(job_dir: Path, folder: Path, card: str) -> dict[str, Path | bytes]:
    """path in repo -> local file or bytes: the model folder, then config.yaml, loss.png and the card."""
    files: dict[str, Path | bytes] = {
        p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    files.pop("README.md", None)  # PEFT's template card; ours replaces it
    base_id = base_hub_id(job_config(job_dir).base_model)
    if "adapter_config.json" in files and base_id:
        # The adapter names the base by the local path it was trained from; on the Hub it must be the Hub id.
        adapter_config = json.loads(files["adapter_config.json"].read_text())
        adapter_config["base_model_name_or_path"] = base_id
        files["adapter_config.json"] = json.dumps(adapter_config, indent=2).encode()
    files[config_file(job_dir).name] = config_file(job_dir)
    if loss_plot_file(job_dir).exists():
        files[loss_plot_file(job_dir).name] = loss_plot_file(job_dir)
    files["README.md"] = card.encode()
    return files


def push_job(job_dir: Path, repo_id: str, token: str | None = None, merged: bool = False, private: bool = True,
             progress=None) -> str:
    """Push a completed job's adapter (or its merged model, merged now if needed) with its model card,
    config.yaml and loss.png to `repo_id`, creating the repo if needed. Returns the repo URL.

    `progress(fraction, message)` is called as work goes (a gr.Progress fits). Raises PublishError."""
    job_dir = Path(job_dir)
    report = progress or (lambda fraction, message: None)
    token = (token or os.environ.get("HF_TOKEN") or "").strip()
    if not token:
        raise PublishError(f"No Hugging Face token: set HF_TOKEN or enter a write token (from {TOKENS_URL}).")
    check_repo_id(repo_id)
    status = finished_status(job_dir)
    folder = adapter_dir(job_dir)
    if merged:
        folder = merged_for_job(status["id"])
        if folder is None:
            report(0.02, "merging the adapter into its base")
            folder = merge_job(job_dir)
    report(0.08, "writing the model card")
    files = upload_plan(job_dir, folder, model_card(job_dir, merged, repo_id))
    api = hub_api(token)
    user = None
    try:
        report(0.1, "checking the token")
        user = api.whoami()["name"]
        report(0.15, f"creating {repo_id} (if needed) as {user}")
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=source) for path, source in files.items()]
        for i, operation in enumerate(operations, 1):
            api.preupload_lfs_files(repo_id, additions=[operation])  # large files go up now, small ones in the commit
            report(0.15 + 0.75 * i / len(operations), f"uploaded {operation.path_in_repo} ({i}/{len(operations)})")
        api.create_commit(repo_id, operations, commit_message=f"Upload {'merged model' if merged else 'adapter'} "
                          f"from Math Agent Studio job {status['id']}")
    except HUB_FAILURES as exc:
        raise PublishError(redact(hub_error(exc, repo_id, user, api.endpoint), token)) from None
    report(1.0, f"pushed to {url}")
    return str(url)


# ---------------------------------------------------------------- command line (wired in trainer/__main__.py)

def add_push_args(parser) -> None:
    parser.add_argument("job", help="the job id (see `python -m trainer list`)")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the Hub repo to push to")
    parser.add_argument("--merged", action="store_true",
                        help="push the merged model (merging first if needed) instead of the adapter")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="create the repo private (the default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")


def add_merge_args(parser) -> None:
    parser.add_argument("job", help="the job id (see `python -m trainer list`)")
    parser.add_argument("--name", help="the merged model's name under models/merged/ (default: the job id)")


def main_push(args) -> int:
    """`python -m trainer push JOB --repo user/name [--merged] [--private|--public]`; the token from HF_TOKEN,
    or asked for without echo on a terminal (never a command-line argument: those show in `ps`)."""
    token = os.environ.get("HF_TOKEN") or (getpass.getpass("Hugging Face write token: ") if sys.stdin.isatty() else None)
    url = push_job(find_job(args.job), args.repo, token=token, merged=args.merged, private=args.private,
                   progress=print_progress)
    print(url)
    return 0


def print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


def main_merge(args) -> int:
    """`python -m trainer merge JOB [--name N]`: prints the merged model's folder."""
    print(merge_job(find_job(args.job), args.name))
    return 0
