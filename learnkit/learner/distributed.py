"""Data-parallel training on torch.distributed: the same script runs in one process or under `torchrun`.

`Distributed.from_env()` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) and
joins the process group (NCCL on CUDA, gloo on the CPU). The Learner then:

- shards its data (`DataBunch.shard`): every rank takes every W-th batch of the single-process order on
  the DataLoader path (so W ranks see exactly what one process would, W batches per step) and a 1/W slice of
  the items on the GPU-resident path (each GPU keeps only its shard);
- trains through `DistributedDataParallel` (a new wrapper for each fit, so `freeze`/`unfreeze` between fits
  are seen: DDP registers its gradient hooks for the parameters that require grad when it is built) while
  `learn.model` stays the plain module, so `state_dict`, checkpoints and exports are single-process ones;
- sums validation loss and metric states over ranks (one exchange per validation), so every rank sees the
  metrics of the whole validation set;
- prints, writes files and runs `lr_find` on rank 0 only, broadcasting the result.

The training loss shown is rank 0's own (local) running loss.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Distributed", "env_world_size"]


def env_world_size() -> int:
    """WORLD_SIZE from torchrun's environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an int; launch with "
                         "torchrun --nproc_per_node=N script.py") from None


class Distributed:
    """This process's place in a data-parallel run and the few collectives the Learner needs.

    Args:
        rank, world_size: this process's rank and the number of processes.
        device: the device this rank trains on (`cuda:LOCAL_RANK` under torchrun with CUDA).
        sync_bn: convert BatchNorm layers to `nn.SyncBatchNorm` (CUDA only) so batch statistics span ranks.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, sync_bn: bool = False):
        self.rank, self.world_size, self.device, self.sync_bn = rank, world_size, device, sync_bn
        self.local = False  # True inside main_only(): no collectives, plain model
        self._sync_bn_layers: list[nn.SyncBatchNorm] = []
        # SyncBatchNorm all-reduces in every training forward; alone on rank 0 (lr_find) it must use a group of
        # one. Creating a group is collective, so every rank makes it now.
        self._rank0_group = dist.new_group([0]) if sync_bn else None

    @classmethod
    def from_env(cls, device: torch.device, sync_bn: bool = False) -> "Distributed | None":
        """None in a single process; else join (or reuse) the default process group."""
        world = env_world_size()
        if world <= 1:
            return None
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing and not dist.is_initialized():
            raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: launch the script with "
                               "torchrun --nproc_per_node=N (it sets them), or unset WORLD_SIZE")
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.index != local:
                raise ValueError(f"distributed: rank with LOCAL_RANK={local} got data on {device}; build the "
                                 f"data after the process starts (learnkit picks cuda:{local}) or pass "
                                 f"device='cuda:{local}'")
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
            # learnkit made the group, so it ends it: left to interpreter shutdown, gloo's threads can free
            # tensors after Python is gone and abort the process (SIGABRT). A no-op if the script already did.
            atexit.register(_destroy_process_group)
        if sync_bn and device.type != "cuda":
            raise ValueError("Learner(sync_bn=True) needs CUDA (nn.SyncBatchNorm has no CPU kernels); drop "
                             "sync_bn on the CPU")
        return cls(dist.get_rank(), dist.get_world_size(), device, sync_bn)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- model -------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm conversion when asked (same parameters and buffers, so state_dicts are unchanged)."""
        if not self.sync_bn:
            return model
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self._sync_bn_layers = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
        return model

    def train_model(self, model: nn.Module) -> nn.Module:
        """The module a fit's training forwards go through: a new DDP wrapper of `model`, made at the start of
        each fit. DDP only reduces the gradients of parameters that required grad when it was built, so a wrapper
        must not outlive a `freeze`/`unfreeze`; nor may it outlive the process group at exit. Building one
        broadcasts rank 0's weights. Inside `main_only()`: the model itself."""
        if self.local:
            return model
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- collectives ---------------------------------------------------------------------------------
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a picklable object)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on rank 0 alone (no collectives inside, the plain model), then give its result to all."""
        result = None
        if self.is_main:
            with self.main_only():
                result = fn()
        return self.broadcast(result)

    @contextlib.contextmanager
    def main_only(self) -> Iterator[None]:
        """Rank 0 working alone: no DDP, no metric exchange, SyncBatchNorm statistics over rank 0's batch only."""
        self.local, was = True, self.local
        groups = [m.process_group for m in self._sync_bn_layers]
        for m in self._sync_bn_layers:
            m.process_group = self._rank0_group
        try:
            yield
        finally:
            self.local = was
            for m, g in zip(self._sync_bn_layers, groups):
                m.process_group = g

    def sync_generators(self, order: Sequence[torch.Generator], own: Sequence[torch.Generator]) -> None:
        """Give every rank rank 0's `order` generators (the batch order must agree for batch sharding) and
        reseed the `own` ones (augmentation) per rank, so ranks do not draw the same augmentations."""
        own = [g for g in own if all(g is not o for o in order)]
        states, seeds = self.broadcast(([g.get_state() for g in order], [g.initial_seed() for g in own]))
        for g, s in zip(order, states):
            g.set_state(s)
        for g, seed in zip(own, seeds):
            g.manual_seed(seed + self.rank)

    def reduce_validation(self, loss_sum: torch.Tensor, count: int, metrics: Sequence[Any]) -> list[float]:
        """[valid_loss, *metric values] over the whole validation set, in one exchange between ranks. Metrics
        that declare `sum_states` (attributes holding sums) get exact totals and those that declare `cat_states`
        (lists of kept tensors) every rank's tensors, then `compute()`; others are averaged over ranks, weighted
        by each rank's item count."""
        mine: list[Any] = [(float(loss_sum), count)]
        for m in metrics:
            sums, cats = getattr(m, "sum_states", ()), getattr(m, "cat_states", ())
            mine.append({**{n: _to_cpu(getattr(m, n)) for n in sums},
                         **{n: [_to_cpu(t) for t in getattr(m, n)] for n in cats}} if sums or cats else
                        (float(m.compute()) if count else None))
        everyone = self.gather(mine)
        counts = [r[0][1] for r in everyone]
        values = [sum(r[0][0] for r in everyone) / max(1, sum(counts))]
        for i, m in enumerate(metrics, start=1):
            parts = [r[i] for r in everyone]
            if getattr(m, "sum_states", ()) or getattr(m, "cat_states", ()):
                for n in getattr(m, "sum_states", ()):
                    found = [p[n] for p in parts if p[n] is not None]
                    total = sum(found[1:], found[0]) if found else None
                    setattr(m, n, total.to(self.device) if isinstance(total, torch.Tensor) else total)
                for n in getattr(m, "cat_states", ()):  # every rank's kept tensors, rank by rank
                    setattr(m, n, [t.to(self.device) for p in parts for t in p[n]])
                values.append(float(m.compute()))
            else:
                pairs = [(v, c) for v, c in zip(parts, counts) if v is not None and c]
                values.append(sum(v * c for v, c in pairs) / max(1, sum(c for _, c in pairs)))
        return values

    def gather_batches(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Batches sharded round-robin (global batch i on rank i % W) back in single-process order."""
        if self.local:
            return batches
        per_rank = self.gather([b.cpu() for b in batches])
        n = sum(len(p) for p in per_rank)
        return [per_rank[i % self.world_size][i // self.world_size] for i in range(n)]


def _to_cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
