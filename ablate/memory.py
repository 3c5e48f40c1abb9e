"""Memory figures of a job: peak memory (CUDA allocator or CPU peak RSS) and optimizer state."""

from __future__ import annotations

import ctypes
import gc
import resource
from pathlib import Path

import torch

from .sharding import local

GB = 1e9


def reset_peak(device: torch.device) -> None:
    """Start a fresh peak, so jobs in one process do not inherit each other's peaks."""
    gc.collect()  # the previous job's tensors, some held in reference cycles (hooks)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # hand the freed heap back to the OS (glibc)
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak is the process's, since it started


def peak_bytes(device: torch.device) -> int:
    """CUDA: bytes the caching allocator handed out at most. CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def allocated_bytes(device: torch.device) -> int:
    """CUDA: bytes the caching allocator has handed out now. CPU: the process's RSS now."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tensor_bytes(obj) -> int:
    """Bytes of every tensor in a (nested) optimizer state (on this rank); python numbers
    count nothing."""
    if isinstance(obj, torch.Tensor):  # of a sharded tensor, this rank's shard
        obj = local(obj)
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def optimizer_state_bytes(optimizer) -> int:
    return sum(tensor_bytes(s) for s in optimizer.state.values())
