"""Where the app writes: one data root, set by MATH_STUDIO_HOME, default a per-user cache folder."""

import os
from pathlib import Path


def data_root() -> Path:
    default = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "math-agent-studio"
    root = Path(os.environ.get("MATH_STUDIO_HOME") or default).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def jobs_dir() -> Path:
    path = data_root() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_root() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def inside(root: Path, path: Path) -> bool:
    """True when `path` resolves to somewhere under `root` (no `..` or symlink escape)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())
