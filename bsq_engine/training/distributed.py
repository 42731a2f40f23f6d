"""Data-parallel helpers for ``torchrun`` (PyTorch DDP: NCCL on GPUs, Gloo on CPU).

The trainer asks :func:`current` once; with one process every helper here is a no-op, so a
plain run never touches ``torch.distributed``. With N processes:

- **Global batch semantics.** Every rank iterates the same seeded global batches of
  ``config.batch_size`` and keeps its slice (:func:`shard`), so DDP's gradient average equals
  the single-process gradient up to reduction order: the learning rate, the schedule and the
  checkpoints mean the same at any world size, and a run resumes at another world size.
  (PyTorch's own convention is a per-process batch; ours keeps BSQ's recipe comparable.)
- **Identical BSQ state.** The regularizer and ``requantize_`` run on every rank on
  bit-identical parameters, so every rank drops the same planes; the DDP wrapper and the
  optimizer are then rebuilt (:func:`wrap`) because the parameter shapes changed.
- **BatchNorm.** Statistics are per rank (a slice of the batch), as with plain DDP: the one
  real difference from a single process. SyncBatchNorm would remove it but PyTorch runs it
  on GPUs only; we average the running statistics at each epoch end (:func:`sync_buffers_`).
- **Agreement.** Stop requests and divergence are agreed each step (:func:`any_rank`) so no
  rank leaves a collective the others still wait in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "adopt_from_rank0",
    "all_sum",
    "any_rank",
    "broadcast_object",
    "current",
    "env_info",
    "finalize",
    "init_from_env",
    "planes_digest",
    "rank_device",
    "resolve_device",
    "shard",
    "sync_buffers_",
    "train_batches",
    "worker_label",
    "wrap",
]

TIMEOUT_ENV = "BSQ_DDP_TIMEOUT_S"  # how long a rank waits for the others in a collective


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """The job as ``torchrun`` describes it in the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ValueError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be whole numbers ({exc}); start DDP runs with "
            "`torchrun --nproc_per_node=N -m bsq_engine train ...`."
        ) from None
    return DistInfo(rank, world, local)


def current() -> DistInfo:
    """The initialised process group's view, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())


def init_from_env() -> DistInfo:
    """Join the torchrun job; a no-op for a single process.

    On a CUDA machine the group has both backends (NCCL for CUDA tensors, Gloo for CPU
    ones), so a run configured for ``cpu`` still works there, and a resumed run can join
    before rank 0 has read which device its config asks for.
    """
    info = env_info()
    if info.world_size == 1 or dist.is_initialized():
        return current() if dist.is_initialized() else info
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)  # one GPU per process, as torchrun intends
        backend = "cpu:gloo,cuda:nccl"
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "900")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return current()


def finalize() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP each process owns ``cuda:LOCAL_RANK``; CPU and MPS stay as they are."""
    if info.world_size > 1 and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def worker_label(info: DistInfo, device: torch.device, fallback: str) -> str:
    """What the Runs table shows in its worker column."""
    if info.world_size > 1:
        backend = "nccl" if _comm_device(info, device).type == "cuda" else "gloo"
        return f"torchrun x{info.world_size} ({backend})"
    return fallback


def _comm_device(info: DistInfo, device: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors, Gloo CPU ones: pick the side this run's backend serves."""
    nccl = "nccl" in (info.backend or "")
    return device if nccl and device.type == "cuda" else torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA (this thread's current GPU), then Apple's MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} was asked for but no CUDA GPU is visible; use 'cpu' "
            "(--device cpu on the command line)."
        )
    if name == "mps" and not _mps_available():
        raise ValueError(
            "device 'mps' was asked for but this machine has no MPS; use 'cpu' "
            "(--device cpu on the command line)."
        )
    return torch.device(name)


def train_batches(data, batch_size: int, seed: int, device: torch.device, info: DistInfo):
    """The seeded global batches of an epoch; under DDP this rank's slice of each."""
    if info.world_size == 1:
        yield from data.train_loader(batch_size, seed=seed, device=device)
        return
    for xb, yb in data.train_loader(batch_size, seed=seed):
        xb, yb = shard(xb, yb, info)
        yield xb.to(device), yb.to(device)


def shard(xb: torch.Tensor, yb: torch.Tensor, info: DistInfo):
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    if info.world_size == 1:
        return xb, yb
    return xb.tensor_split(info.world_size)[info.rank], yb.tensor_split(info.world_size)[info.rank]


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (epoch totals: loss, correct, sample counts)."""
    if info.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(info, device))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Element-wise OR over ranks: a stop or a NaN on one rank ends the step everywhere."""
    if info.world_size == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=_comm_device(info, device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank. It is pickled between the job's own processes
    (the run id, the config and the resume checkpoint that rank 0 read), never from a file."""
    if info.world_size == 1:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """A fresh DDP wrapper (built again after every change of parameter shapes), or the model.

    DDP broadcasts rank 0's parameters and buffers on construction, so ranks start each
    stage, and each interval between re-quantizations, from the same bits.
    """
    if info.world_size == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@torch.no_grad()
def adopt_from_rank0(model: nn.Module, found, info: DistInfo):
    """Rank 0's ``found`` on every rank; when it is not None (rank 0 loaded a cached float
    model into ``model``), every rank's ``model`` also takes rank 0's weights, in place."""
    if info.world_size == 1:
        return found
    found = broadcast_object(found, info)
    if found is not None:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    return found


@torch.no_grad()
def sync_buffers_(model: nn.Module, info: DistInfo, device: torch.device) -> None:
    """Average floating buffers (BatchNorm running statistics) over ranks, in place.

    Each rank's BatchNorm sees only its slice of the batch, so the running statistics drift
    apart between DDP's per-forward broadcasts. Averaging them at every epoch end leaves all
    ranks with the same, bit-identical model before re-quantization, evaluation and
    checkpoints, and closer to the global-batch statistics than rank 0's alone.
    """
    if info.world_size == 1:
        return
    comm = _comm_device(info, device)
    for buf in model.buffers():
        if buf.is_floating_point():
            t = buf.to(comm)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            buf.copy_(t / info.world_size)


def planes_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, shape, bytes): equal digests on all
    ranks mean bit-identical models, planes included."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()
