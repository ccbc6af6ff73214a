"""The trainer's command line; the app runs exactly these commands.

    python -m trainer train --config FILE [--set key=value ...] [--preset NAME] [--name NAME]
    python -m trainer list | show JOB | cancel JOB | resume JOB | delete JOB | presets | worker
    python -m trainer merge JOB [--name N] | push JOB --repo OWNER/NAME [--merged] [--public]
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

# Before torch loads OpenMP: its threads sleep at a barrier instead of spinning, as in `python -m tutor` and the app
# (see there). The worker runs this CLI: a job on a CPU that other processes share waits less. ACTIVE: they spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trainer import jobs, publish, store
from trainer.config import PRESETS, ConfigError, JobConfig


LIST_HEADER = ("CREATED", "ID", "NAME", "STATE", "STEP")


def config_keys_help() -> str:
    """The config keys with their defaults and help, for `train --help` (the same words as the Train form's)."""
    return "config keys (--set KEY=VALUE):\n" + "\n".join(
        f"  {f.name} = {value!r}\n      {f.metadata.get('help', '')}"
        for f, value in zip(dataclasses.fields(JobConfig), JobConfig().to_dict().values()))


def cmd_train(args) -> int:
    from trainer.train import run_job

    if args.job:  # started by the app's queue (or by hand) for a job folder that already exists
        path = jobs.job_dir(args.job)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise jobs.JobError("Under accelerate launch every process would create its own job: create the job first "
                            "(the app's queue does), then pass --job JOB.")
    else:
        config = PRESETS[args.preset] if args.preset else JobConfig()
        if args.config:
            config = JobConfig.load(args.config)
        path = jobs.create_job(config.with_overrides(args.set), name=args.name)
        print(f"job {path.name} in {path}", flush=True)
    return run_job(path)


def cmd_list(args) -> int:
    """Every job, oldest first by creation date, under a header."""
    rows = [(str(s.get("created") or "")[:19].replace("T", " "), s["id"], s.get("name", ""),
             f"{s['state']} #{s['queue_place']}" if "queue_place" in s else s["state"],
             f"{s.get('step', 0)}/{s.get('total_steps') or '?'}") for s in jobs.list_jobs()]
    rows.sort(key=lambda row: row[0])
    widths = [max([len(head), *(len(row[i]) for row in rows)]) for i, head in enumerate(LIST_HEADER)]
    for row in [LIST_HEADER, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_show(args) -> int:
    path = jobs.job_dir(args.job)
    print(json.dumps(jobs.refresh(path), indent=1))
    rows = jobs.read_progress(path)
    if rows:
        print(f"last log: {json.dumps(rows[-1])}")
    print(store.read_config(path).to_yaml())
    return 0


def cmd_cancel(args) -> int:
    print(jobs.cancel_job(args.job)["state"])
    return 0


def cmd_resume(args) -> int:
    print(jobs.resume_job(args.job)["state"])
    return 0


def cmd_delete(args) -> int:
    jobs.delete_job(args.job)
    print("deleted")
    return 0


def cmd_presets(args) -> int:
    for name, config in PRESETS.items():
        print(f"# {name}\n{config.to_yaml()}")
    return 0


def cmd_worker(args) -> int:
    """Run the queue without the web app: start queued jobs one after another."""
    while True:
        jobs.reap()
        started = jobs.schedule()
        if started:
            print(f"started {started}", flush=True)
        time.sleep(2)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m trainer", description="QLoRA fine-tuning jobs for math tutors.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run a training job in the foreground", epilog=config_keys_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="a config.yaml (keys of JobConfig)")
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset recipe")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    train.add_argument("--name", default="", help="a name for the job")
    train.add_argument("--job", help="train this existing job folder (what the app's queue runs)")
    train.set_defaults(func=cmd_train)
    sub.add_parser("list", help="list jobs").set_defaults(func=cmd_list)
    for name, func in [("show", cmd_show), ("cancel", cmd_cancel), ("resume", cmd_resume), ("delete", cmd_delete)]:
        command = sub.add_parser(name, help=f"{name} a job")
        command.add_argument("job")
        command.set_defaults(func=func)
    sub.add_parser("presets", help="print the preset recipes").set_defaults(func=cmd_presets)
    sub.add_parser("worker", help="run queued jobs without the app").set_defaults(func=cmd_worker)
    push = sub.add_parser("push", help="push a completed job's adapter (or merged model) to the Hugging Face Hub")
    publish.add_push_args(push)  # JOB --repo OWNER/NAME [--merged] [--private | --public]; token from HF_TOKEN
    push.set_defaults(func=publish.main_push)
    merge = sub.add_parser("merge", help="merge a completed job's adapter into its base as a standalone model")
    publish.add_merge_args(merge)  # JOB [--name N]
    merge.set_defaults(func=publish.main_merge)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except (ConfigError, jobs.JobError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m trainer presets | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
