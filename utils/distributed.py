"""Process-group set-up for torchrun (RANK, LOCAL_RANK, WORLD_SIZE) or srun (SLURM_PROCID,
SLURM_LOCALID, SLURM_NTASKS), one process per device, what the launcher says about the processes and
CPUs of a node, and the reductions the metrics need."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .preemption import skip_teardown_at_exit


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def launch_env(env=None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables, else srun's, else a single process.

    torchrun's win when both are there (torchrun started by srun, one task per node). Inside a SLURM
    batch script SLURM_NTASKS counts the job's tasks, not this launch's, so in a real job only an srun
    step (which sets SLURM_STEP_NUM_TASKS) is distributed: a plain `python script.py` there is one
    process instead of rank 0 of a group that never forms.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    tasks = env.get("SLURM_STEP_NUM_TASKS") or (None if "SLURM_JOB_ID" in env else env.get("SLURM_NTASKS"))
    if "SLURM_PROCID" in env and tasks and int(tasks) > 1:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(tasks)
    return 0, 0, 1


def rendezvous(env=None) -> tuple[str, str]:
    """(MASTER_ADDR, MASTER_PORT) for env:// initialisation. torchrun always sets both; under srun they
    default to this host (one node only: other nodes cannot guess rank 0's address) and a port derived
    from the job id, so two jobs sharing a node do not collide."""
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR")
    if addr is None:
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
        if nodes > 1:
            raise ValueError(f"srun over {nodes} nodes needs MASTER_ADDR (rank 0's host), e.g. "
                             "export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)")
        addr = "127.0.0.1"
    port = env.get("MASTER_PORT") or str(20000 + int(env["SLURM_JOB_ID"]) % 10000 if "SLURM_JOB_ID" in env else 29500)
    return addr, port


def local_world_size(env=None) -> int | None:
    """Processes on this node when the launcher says (torchrun's LOCAL_WORLD_SIZE); None under srun or
    a plain start, where it is not known from the environment alone."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env and "LOCAL_WORLD_SIZE" in env:
        return int(env["LOCAL_WORLD_SIZE"])
    return None


def whole_count(text) -> int | None:
    """An environment variable's whole number >= 1, or None (unset, empty or not a count)."""
    text = (text or "").strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) and int(text) > 0 else None


def _tasks_on_node(env) -> int | None:
    """srun's tasks on this node: SLURM_STEP_TASKS_PER_NODE (this step), else SLURM_NTASKS_PER_NODE, else
    SLURM_TASKS_PER_NODE (the job), each a list like '2(x3),1' over the nodes, read at SLURM_NODEID."""
    for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        counts = []
        for item in (env.get(key) or "").split(","):
            match = re.fullmatch(r"\s*([0-9]+)(?:\(x([0-9]+)\))?\s*", item)
            if not match:
                counts = []
                break
            counts += [int(match.group(1))] * int(match.group(2) or 1)
        if counts and min(counts) > 0:
            node = whole_count(env.get("SLURM_NODEID")) or 0
            return counts[node] if len(set(counts)) > 1 and node < len(counts) else max(counts)
    return None


def local_ranks(env=None) -> int:
    """Processes of this launch on this node, which share its CPUs: 1 for a single process, torchrun's
    LOCAL_WORLD_SIZE, srun's tasks on this node; the whole world where the launcher does not say (the safe
    guess: too few threads per process costs less than too many)."""
    env = os.environ if env is None else env
    world = launch_env(env)[2]
    if world == 1:
        return 1
    said = whole_count(env.get("LOCAL_WORLD_SIZE")) if "RANK" in env and "WORLD_SIZE" in env else _tasks_on_node(env)
    return min(said, world) if said else world


def cpus_per_task(env=None) -> int | None:
    """Slurm's SLURM_CPUS_PER_TASK (the CPUs it gave each task), None when unset or not a count."""
    env = os.environ if env is None else env
    return whole_count(env.get("SLURM_CPUS_PER_TASK"))


def device_type(choice: str) -> str:
    """--device auto|cpu|cuda -> "cuda" or "cpu" (auto: CUDA when torch sees a device); asks torch nothing
    about devices beyond that, so it is safe before the process group forms."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if choice != "cpu" and choice != "cuda":
        raise ValueError(f"--device must be auto, cpu or cuda, got {choice!r}")
    return choice


def resolve_device(choice: str, local_rank: int = 0, local_world: int | None = None) -> torch.device:
    """--device auto|cpu|cuda -> this process's torch.device (one GPU per process).

    With one GPU per local rank visible, local rank i takes cuda:i. A process that sees exactly one
    GPU while its local rank is higher takes cuda:0: that is `srun --gpus-per-task=1`, where each task
    sees only its own GPU. Where the launcher says how many processes share the node (torchrun's
    LOCAL_WORLD_SIZE) and that is more than the GPUs visible, two ranks would share a GPU, which NCCL
    refuses: that is an error here, before any process group forms. (srun does not say; there
    `check_distinct_gpus` compares the ranks' GPUs once the group has formed.)
    """
    if device_type(choice) == "cuda":
        visible = torch.cuda.device_count()
        if local_world is not None and local_world > visible:
            raise ValueError(f"{local_world} processes on this node need a GPU each, but it shows {visible} "
                             f"(NCCL cannot share one GPU between ranks): start at most {visible} per node "
                             f"(torchrun --nproc_per_node={visible}), or use --device cpu")
        if local_rank < visible:
            index = local_rank
        elif visible == 1:
            index = 0  # srun --gpus-per-task=1: each task sees only its own GPU
        else:
            raise ValueError(f"local rank {local_rank} needs a GPU of its own, but this node shows {visible}")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def gpu_id(device: torch.device) -> str:
    """A name for the physical GPU behind `device` that is the same in every process on the node."""
    props = torch.cuda.get_device_properties(device)
    uuid = getattr(props, "uuid", None)
    pci = ":".join(str(getattr(props, k, "?")) for k in ("pci_domain_id", "pci_bus_id", "pci_device_id"))
    return f"{uuid}" if uuid is not None else pci


def duplicate_gpus(ids: list[str], hosts: list[str]) -> str | None:
    """The error for ranks that share one GPU (same host and GPU id), or None if every rank has its own."""
    seen: dict[tuple[str, str], int] = {}
    for rank, key in enumerate(zip(hosts, ids)):
        if key in seen:
            return (f"ranks {seen[key]} and {rank} both use GPU {key[1]} on {key[0]} (NCCL cannot share one GPU "
                    f"between ranks): give each task its own GPU (srun --gpus-per-task=1) or use --device cpu")
        seen[key] = rank
    return None


def check_distinct_gpus(rank: int, world_size: int, device: torch.device) -> None:
    """Exchange every rank's (host, GPU) through the group's key-value store (no NCCL call, which would
    hang or crash on a shared GPU) and raise ValueError on every rank if two share one."""
    import socket
    store = dist.distributed_c10d._get_default_store()
    store.set(f"learn_pcg/gpu/{rank}", f"{socket.gethostname()}|{gpu_id(device)}")
    pairs = [store.get(f"learn_pcg/gpu/{r}").decode().split("|", 1) for r in range(world_size)]
    problem = duplicate_gpus([p[1] for p in pairs], [p[0] for p in pairs])
    if problem:
        raise ValueError(problem)


def setup(device_choice: str) -> DistInfo:
    """This process's rank and device; with several processes, join the group (NCCL on CUDA, gloo on
    CPU). Raises ValueError on a launch it cannot serve (e.g. two ranks on one GPU)."""
    rank, local_rank, world_size = launch_env()
    device = resolve_device(device_choice, local_rank, local_world_size() if world_size > 1 else None)
    if world_size > 1 and not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = rendezvous()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        if device.type == "cuda":
            try:
                check_distinct_gpus(rank, world_size, device)
            except ValueError:
                dist.destroy_process_group()
                raise
    return DistInfo(rank, local_rank, world_size, device)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a float64/int64 tensor over ranks (in place) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_parts(parts: dict[str, torch.Tensor], info: DistInfo) -> dict[str, np.ndarray]:
    """Sum several float64 tensors over ranks in one all-reduce (laid end to end, in the dict's order);
    each comes back on the host in its own shape, under its name."""
    flat = all_reduce_sum(torch.cat([t.reshape(-1) for t in parts.values()]), info).cpu().numpy()
    ends = np.cumsum([t.numel() for t in parts.values()])[:-1]
    return {name: chunk.reshape(t.shape) for (name, t), chunk in zip(parts.items(), np.split(flat, ends))}


def all_gather(tensor: torch.Tensor, info: DistInfo) -> list[list[float]]:
    """Every rank's copy of a small 1-d tensor, in rank order, as Python floats."""
    if not info.enabled:
        return [tensor.tolist()]
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor)
    return [part.tolist() for part in parts]


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks take the same branch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=info.device)
    return bool(all_reduce_sum(t, info).item() > 0)


def cleanup(info: DistInfo, agreed: bool = True) -> None:
    """Leave the process group. When every rank got here the same way (`agreed`: a normal end, a stop,
    a one-line error), they first meet at a barrier: a rank that tears its connections down while
    another still uses them (rank 0 writing the final files) made gloo abort the other at exit. After
    a crash on one rank the others may sit in another collective, so there is no barrier then."""
    if info.enabled and dist.is_initialized():
        if agreed:
            dist.barrier()
        dist.destroy_process_group()
        skip_teardown_at_exit()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's picklable `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
