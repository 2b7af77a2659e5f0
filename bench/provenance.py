"""Where a result came from: git revision, package versions, device."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scipy")
ROOT = Path(__file__).resolve().parent.parent


GENERATED = "results"  # generated evidence, not code: exporting results during a sweep leaves its runs clean


def git_revision() -> str:
    """HEAD, with "+dirty" when a tracked file outside ``results/`` differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){GENERATED}"], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if rev.returncode != 0:
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows: floating-point results
    of the same code can differ between CPU models, so a record names its CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(device: torch.device) -> dict[str, Any]:
    return {"git": git_revision(), "packages": package_versions(), "device": device_name(device),
            "cpu": cpu_model(), "host": platform.node()}
