"""One training step of a method, in one process on the whole batch or in two data-parallel replicas (gloo
processes) on half of it each: a method that averages what it decides from over ranks gets the same gradients."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

import torch

from mmflow.components.balance.base import TrainingContext, build_method

Setup = Callable[[], "tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]"]  # model, inputs, labels


def step_gradients(setup: Setup, params: Any, fusion: str, part: slice = slice(None),
                   all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                   wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after one step on `part` of the batch (the method's loss and hooks)."""
    model, x, labels = setup()
    method = build_method(params, list(x), fusion, seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0, all_reduce_sum=all_reduce_sum))
    replica = wrap(model)  # kept: a DDP wrapper's backward hooks average the gradients
    out = replica(method.prepare_inputs({m: v[part] for m, v in x.items()}))
    loss, _ = method.loss(out, labels[part])
    loss.backward()
    method.after_backward(out, labels[part])
    return {n: p.grad for n, p in model.named_parameters()}


def _replica(rank: int, port: int, folder: str, setup: Setup, params: Any, fusion: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    batch = len(setup()[2])
    part = slice(rank * batch // 2, (rank + 1) * batch // 2)
    torch.save(step_gradients(setup, params, fusion, part, all_reduce_sum, DistributedDataParallel),
               f"{folder}/rank{rank}.pt")
    dist.barrier()  # a rank that tears gloo down while the other still talks to it aborts
    dist.destroy_process_group()


def replica_gradients(setup: Setup, params: Any, fusion: str, folder: Path) -> list[dict[str, torch.Tensor]]:
    """Each of two replicas' gradients after one step, each on its half of the batch."""
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_replica, args=(port, str(folder), setup, params, fusion), nprocs=2)
    return [torch.load(folder / f"rank{rank}.pt") for rank in (0, 1)]
