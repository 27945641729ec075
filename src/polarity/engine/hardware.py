"""What a job ran on: recorded with every trial (``trials.hardware``).

Besides the machine, the record names what decides which CPU kernels ran, and so which numbers
are bit-reproducible where (README, "Running experiments"): the CPU's vector extensions
(``cpu_isa``), the instruction set torch's own CPU kernels were dispatched for
(``torch_cpu_capability``, capped by ``ATEN_CPU_CAPABILITY``), the cap on oneDNN's
(``onednn_max_isa``: ``ONEDNN_MAX_CPU_ISA``, "default" when unset), and numba's compile target
(``numba_target``: ``NUMBA_CPU_NAME`` or the host's; the XOR-5D kernels give the same bits on
every target).
"""
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


_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


@functools.lru_cache(maxsize=1)
def _cpu_isa() -> str:
    """The vector extensions among :data:`_ISA_FLAGS` the CPU reports (Linux), space-separated."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(x for x in _ISA_FLAGS if x in have)
    except OSError:
        pass
    return "?"


def _numba_target() -> str | None:
    try:
        import llvmlite.binding as llvm
        from numba.core import config
    except Exception:  # pragma: no cover - numba missing or broken
        return None
    return config.CPU_NAME or llvm.get_host_cpu_name()


def hardware_info(device: str = "cpu") -> dict[str, Any]:
    """Host, platform, CPU model, vector extensions and count, torch threads, device (and GPU
    name on CUDA), and what picks the CPU kernels (module docstring)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "device": device,
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "default",
    }
    target = _numba_target()
    if target is not None:
        info["numba_target"] = target
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
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
