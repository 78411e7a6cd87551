"""The machine and software a benchmark ran on, recorded next to every result."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess

import torch

__all__ = ["machine_info", "bf16_gpu", "require_bf16_gpu"]


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine_info() -> dict:
    """GPU, driver, CUDA/cuDNN, torch, triton and Python versions, and the UTC date (JSON-able)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None,
        "gpu_count": 0,
        "driver": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["driver"] = _driver_version()
        cap = torch.cuda.get_device_capability(0)
        info["compute_capability"] = f"{cap[0]}.{cap[1]}"
    return info


def bf16_gpu() -> bool:
    """Whether a CUDA GPU is here that multiplies bfloat16 natively (compute capability 8.0 or newer: A100,
    L4, H100/H200, ...; not Colab's free T4, 7.5), as the benchmarks' bfloat16 kernels need."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def require_bf16_gpu(suite: str) -> None:
    """Raise a RuntimeError naming the GPU if the ``suite`` benchmark (bfloat16 throughout) cannot run here."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"the {suite} benchmark times CUDA kernels: no CUDA GPU is available")
    if not bf16_gpu():
        major, minor = torch.cuda.get_device_capability()
        raise RuntimeError(f"the {suite} benchmark runs in bfloat16, which needs a GPU of compute capability 8.0 or "
                           f"newer; this {torch.cuda.get_device_name()} is {major}.{minor} (its stored results "
                           "are in attnlib/bench/results/)")
