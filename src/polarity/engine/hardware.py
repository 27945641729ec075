"""What a job ran on: recorded with every trial (``trials.hardware``)."""
from __future__ import annotations

import functools
import os
import platform
import sys
from typing import Any


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: str = "cpu") -> dict[str, Any]:
    """Host, platform, CPU model and count, torch threads, device (and GPU name on CUDA)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "device": device,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception:  # pragma: no cover - torch missing or broken
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for reports."""
    parts = [info.get("cpu", "?"), f"{info.get('cpus', '?')} CPUs"]
    if "threads" in info:
        parts.append(f"{info['threads']} torch thread(s)")
    parts.append(f"device {info.get('device', '?')}")
    if info.get("gpu"):
        parts.append(str(info["gpu"]))
    parts.append(f"torch {info.get('torch', '?')}")
    return ", ".join(parts)
