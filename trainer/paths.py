"""Where the app writes: one data root, set by MATH_STUDIO_HOME, default a per-user data folder.

On a Space, the deploy command points MATH_STUDIO_HOME at persistent storage under /data. A Space without that
storage cannot write /data; there the app uses the default folder instead, warning that it is lost on restart,
so that it still starts and students can still use the Tutor. Anywhere else a MATH_STUDIO_HOME that cannot be
written is an error.
"""

import os
import warnings
from pathlib import Path


def default_root() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")).expanduser() / "math-agent-studio"


def configured_root() -> Path:
    return Path(os.environ.get("MATH_STUDIO_HOME") or default_root()).expanduser().resolve()


def writable(path: Path) -> bool:
    """Create `path` if needed; True when this process can write there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # permission denied, a read-only file system, a file in the way
        return False
    return os.access(path, os.W_OK)


def data_root() -> Path:
    root = configured_root()
    if writable(root):
        return root
    if not os.environ.get("SPACE_ID"):
        raise PermissionError(f"The data root {root} cannot be written: make it writable, or set MATH_STUDIO_HOME "
                              "to a folder you can write to.")
    warnings.warn(storage_message(root))  # shown once: Python's default filter repeats no warning
    fallback = default_root().resolve()
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def storage_message(configured: Path) -> str:
    return (f"MATH_STUDIO_HOME={configured} cannot be written (is persistent storage mounted at /data?): "
            f"using {default_root()} instead, which is lost when the Space restarts. Give the Space persistent "
            "storage at /data to keep jobs and models.")


def storage_warning() -> str:
    """The warning to show when the data root in use is not the configured one, else ''."""
    return storage_message(configured_root()) if data_root() != configured_root() else ""


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
