"""The worker's command: one process on a CPU or one GPU, `accelerate launch` data parallel on several GPUs."""

import sys
from pathlib import Path

from trainer import jobs
from trainer.__main__ import main


def test_one_gpu_or_none_trains_in_one_process():
    path = Path("/data/jobs/20250101-000000-job-abcd")
    for gpus in (0, 1):
        assert jobs.worker_command(path, gpus=gpus) == [
            sys.executable, "-m", "trainer", "train", "--config", str(path / "config.yaml"), "--job", path.name]


def test_several_gpus_train_data_parallel_through_accelerate_launch():
    path = Path("/data/jobs/20250101-000000-job-abcd")
    command = jobs.worker_command(path, gpus=4)
    assert command[:6] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]
    assert command[6:] == ["-m", "trainer", "train", "--config", str(path / "config.yaml"), "--job", path.name]


def test_a_launched_process_without_a_job_folder_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MATH_STUDIO_HOME", str(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--set", "max_steps=1"]) == 2
    assert "--job" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())
