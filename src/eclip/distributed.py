"""The torchrun process group, for every verb that runs sharded (`eclip evaluate`) or data parallel (`eclip train`).

`torchrun --nproc_per_node N` starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK set; each joins one process group (gloo on CPU, nccl on CUDA with one GPU per
LOCAL_RANK). Outside torchrun everything here is a no-op and `world()` is (0, 1).
"""
from __future__ import annotations

import os

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[str, bool]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (this rank's device, whether joined here).

    With a CUDA `device` each rank takes GPU LOCAL_RANK and the nccl backend; on CPU, gloo. The
    caller that joined destroys the group at the end (`leave_distributed`).
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device, False
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return device, True


def leave_distributed(joined: bool) -> None:
    """Destroy the process group if `init_distributed` joined it."""
    if joined:
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op outside torchrun)."""
    if world()[1] > 1:
        torch.distributed.barrier()
