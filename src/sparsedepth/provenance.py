"""Where a result came from: code version, library versions and hardware, as a JSON-ready dict."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

_PACKAGES = ("sparsedepth", "torch", "numpy", "tokenizers", "datasets", "transformers", "xformers", "wandb")


def source_hash(package: str | os.PathLike | None = None) -> str:
    """SHA-256 over the package's Python sources (relative path and bytes of every ``*.py``, sorted).

    Names the code that ran even where the commit cannot: a copy of the tree without ``.git``, or a checkout
    whose dirty flag is set only because untracked outputs or left-behind files differ."""
    root = Path(package) if package else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path`` (default: this package; nulls outside git),
    and ``src_sha256``, the hash of the package's sources (:func:`source_hash`), always."""
    where = Path(path) if path else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    src = source_hash()
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "src_sha256": src}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None, "src_sha256": src}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if out.get("sparsedepth") is None:  # running from a source tree without installing
        from . import __version__

        out["sparsedepth"] = __version__
    return out


def device_info(device: Any = None) -> dict[str, Any]:
    """Name and count of the accelerator in use (or the CPU), plus torch's CUDA version."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info: dict[str, Any] = {"type": dev.type, "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        info.update(name=torch.cuda.get_device_name(dev), count=torch.cuda.device_count(), cuda=torch.version.cuda)
    else:
        info["name"] = info["cpu"] or "cpu"
    return info


def collect(device: Any = None, **extra: Any) -> dict[str, Any]:
    """Git state, versions, device and platform, with ``extra`` fields merged on top."""
    return {
        "git": git_info(),
        "versions": versions(),
        "device": device_info(device),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
