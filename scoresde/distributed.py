"""Scaling out on ``torch.distributed``: data-parallel training, sharded sampling, likelihood and
benchmarks, launched with ``torchrun`` (``torchrun --nproc_per_node=K -m scoresde.cli MODE ...``).

torchrun starts K processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init` joins its process group once (NCCL with one GPU per process,
``cuda:LOCAL_RANK``, where CUDA is available; gloo on CPUs otherwise). Without torchrun it returns
a :class:`World` of one process and every function here runs without collectives, so the same
code serves one process and many.

**Training** (:class:`DataParallelModel`, used by :func:`scoresde.train.train`). Every rank draws
the *global* batch from the shared training generator exactly as one process does — indices,
labels and their dropout, and, inside the loss, times and noise — so the loss is the 1-process
loss of the same global batch. The network (a ``DistributedDataParallel`` module) runs only on the
rank's rows ``[r·B/K, (r+1)·B/K)``; its predictions are all-gathered (values only: the rank's own
rows keep their graph), so every rank evaluates the same global loss ``L`` and back-propagates
``∂L/∂θ`` through its own rows. DDP then *sums* these per-rank gradients (a comm hook instead of
its default average), which is ``∂L/∂θ`` of the global batch: K processes take the same steps as
one process, up to float summation order (the reduction over the batch is split into K partial
sums). Dropout masks come from torch's global RNG, per rank (rank 0 continues the 1-process
stream, rank r ≥ 1 is seeded by :func:`rank_seed`), so a network with dropout trains equivalently
but not identically.

**Sampling** (:func:`sample_sharded`): the ``n`` draws are cut into shards of ``shard_size``
consecutive samples, ``[0, s), [s, 2s), …``, independent of the number of processes. Shard
``[a, b)`` is sampled in one batch with :class:`~scoresde.noise.PerSampleNoise` ``(seed, offset=a)``,
so sample ``i`` draws from stream ``i`` whatever process or batch it lands in, and written
atomically to ``folder/samples_{a}_{b}.npz``. Missing shards are dealt round-robin to the ranks;
present ones are never recomputed, so a killed run resumes where it stopped — with any number of
processes, since shards are keyed by sample range. Rank 0 merges them in sample order.
Because a shard's batch is the same in every launch, samples do not depend on the number of
processes, bit for bit, for every sampler. ``shard_size`` is part of the result: fixed-grid
samplers (deterministic ones and PerSampleNoise-driven stochastic ones) are batch-invariant up to
the network's float rounding across batch sizes, but the adaptive solvers (``ode`` with an adaptive
method, ``dpm_adaptive``, ``adaptive_sde``) choose one step size per batch and are not.

**Likelihood** (:func:`log_likelihood_sharded`, :func:`bits_per_dim_sharded`): the data are cut into
chunks of ``batch_size`` in order; chunk ``[a, b)`` is one solve with its dequantization noise and
Hutchinson probes from ``PerSampleNoise(seed, offset=a)``; chunks are dealt round-robin and the
per-sample results all-gathered into data order on every rank, so the mean and standard error are
computed from all per-sample values exactly as in one process, and equal the 1-process values.

**Benchmarks** (:func:`map_shards`): a list of independent jobs (the sampler × steps grid of
``scoresde bench``) dealt round-robin, results gathered in job order.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from scoresde import checkpoint
from scoresde.errors import InputError
from scoresde.likelihood import BitsPerDim, LikelihoodResult, bits_per_dim, log_likelihood
from scoresde.model import Cond, DiffusionModel, Prediction, ScoreModel, check_cond, check_times, split_cond
from scoresde.noise import PerSampleNoise
from scoresde.sampling import sample

__all__ = [
    "DataParallelModel",
    "ShardedSamples",
    "World",
    "bits_per_dim_sharded",
    "init",
    "log_likelihood_sharded",
    "map_shards",
    "rank_seed",
    "remove_shards",
    "run_folder",
    "sample_sharded",
    "shard_path",
    "shard_ranges",
    "state_digest",
]

T = TypeVar("T")
R = TypeVar("R")


# --- the process group --------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes: its ``rank`` and the ``device`` it computes on.

    ``World()`` is a single process on the CPU; its collectives return at once.
    """

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, merged files and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def all_gather_object(self, obj: T) -> list[T]:
        """``[obj of rank 0, …, obj of rank size−1]`` on every rank (pickled; tensors moved to the CPU
        first by the callers)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def rows(self, batch: int) -> slice:
        """This rank's rows ``[r·B/K, (r+1)·B/K)`` of a global batch of ``B`` split evenly over ``K``."""
        if batch % self.size:
            raise InputError(f"a global batch of {batch} cannot be split evenly over {self.size} processes; "
                             f"use a batch size divisible by {self.size}")
        per = batch // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer (torchrun sets it), "
                         f"got {value!r}") from None


def init() -> World:
    """Join torchrun's process group (once per process) and return this process's :class:`World`.

    Without torchrun's environment (no ``WORLD_SIZE``) this is ``World()``: one process on the CPU.
    Under torchrun: NCCL and ``cuda:LOCAL_RANK`` where CUDA is available, else gloo on the CPU; the
    group is destroyed at exit.
    """
    if "WORLD_SIZE" not in os.environ:
        return World()
    size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if not 0 <= rank < size:
        raise InputError(f"RANK={rank} must lie in [0, WORLD_SIZE={size})")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_destroy)
    return World(rank=rank, size=size, device=device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own stream (its dropout masks in training): from
    ``SeedSequence([seed, rank, 1])``, unrelated to :class:`~scoresde.noise.PerSampleNoise`'s streams
    ``SeedSequence([seed, index])``."""
    return int(np.random.SeedSequence([int(seed), int(rank), 1]).generate_state(1, np.uint64)[0])


# --- data-parallel training -----------------------------------------------------------------------


def _sum_gradients(group, bucket):  # no annotations: DDP checks them as objects, not strings
    """DDP comm hook ``(process group or None, dist.GradBucket) -> Future[Tensor]``: all-reduce a
    gradient bucket as a sum (DDP's default divides by the world size)."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def _cond_rows(cond: Cond, rows: slice, batch: int) -> Cond:
    """The rows ``rows`` of a condition of ``batch`` samples (dict values without a batch axis whole)."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[rows]
    return {k: v[rows] if isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == batch else v
            for k, v in cond.items()}


def _gather_rows(local: Tensor, world: World) -> Tensor:
    """This rank's rows and every other rank's, concatenated in rank order; only the own rows keep
    their autograd graph (the others arrive as values)."""
    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[world.rank] = local
    return torch.cat(parts)


class DataParallelModel:
    """A :class:`~scoresde.model.DiffusionModel` for data-parallel training of ``model`` (see the
    module docstring): ``predict`` on a global batch runs the network — wrapped in
    ``DistributedDataParallel`` with gradients summed across ranks — on this rank's rows only and
    returns the prediction of the whole batch, all-gathered. Every rank must call it on the same
    global batch (same ``x``, ``t``, ``cond``), whose size the world size divides."""

    def __init__(self, model: ScoreModel, world: World):
        if world.size < 2 or not dist.is_initialized():
            raise InputError(f"DataParallelModel needs a process group of >= 2 processes (torchrun); got "
                             f"world size {world.size}")
        self.world = world
        self.sde = model.sde
        device_ids = [world.device] if world.device.type == "cuda" else None
        self.module = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.module.register_comm_hook(None, _sum_gradients)

    def predict(self, x: Tensor, t: float | Tensor, cond: Cond = None) -> Prediction:
        batch = x.shape[0]
        rows = self.world.rows(batch)
        t = check_times(t, x, self.sde)
        local = self.module(x[rows], t[rows], _cond_rows(cond, rows, batch))
        per = rows.stop - rows.start
        gathered = {f.name: _gather_rows(v, self.world) for f in fields(local)
                    if isinstance(v := getattr(local, f.name), Tensor) and v.ndim > 0 and v.shape[0] == per}
        return replace(local, **gathered)


# --- jobs dealt round-robin -------------------------------------------------------------------------


def _to_cpu(value: Any) -> Any:
    """``value`` with every tensor (also inside dataclasses, lists, tuples, dicts) on the CPU."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _to_cpu(getattr(value, f.name)) for f in fields(value) if f.init})
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def map_shards(fn: Callable[[int, T], R], items: Sequence[T], world: World | None = None, *,
               progress: bool = False, desc: str = "shards") -> list[R]:
    """``[fn(i, items[i]) for every i]``, each computed by rank ``i mod size``, on every rank in item
    order (results are all-gathered with their tensors on the CPU). A progress bar on rank 0 counts
    its own items."""
    world = init() if world is None else world
    mine = list(range(world.rank, len(items), world.size))
    if progress and world.is_main:
        from tqdm.auto import tqdm

        mine = tqdm(mine, desc=desc, unit="job")
    local = {i: _to_cpu(fn(i, items[i])) for i in mine}
    merged: dict[int, R] = {}
    for part in world.all_gather_object(local):
        merged.update(part)
    return [merged[i] for i in range(len(items))]


def _concat(results: Sequence[T]) -> T:
    """Per-sample result dataclasses of consecutive chunks joined into one: tensor fields with a
    batch axis concatenated, nested dataclasses joined likewise, other fields from the first."""
    first = results[0]
    values = {}
    for f in fields(first):
        items = [getattr(r, f.name) for r in results]
        if is_dataclass(items[0]):
            values[f.name] = _concat(items)
        elif isinstance(items[0], Tensor) and items[0].ndim > 0:
            values[f.name] = torch.cat(items)
    return replace(first, **values)


# --- sharded likelihood -------------------------------------------------------------------------------


def _chunked(solve: Callable[..., T], x: Tensor, cond: Cond, seed: int, batch_size: int,
             world: World | None, progress: bool) -> T:
    """``solve(chunk, cond=…, generator=PerSampleNoise(seed, offset=a))`` on each chunk ``[a, b)`` of
    ``batch_size`` samples, dealt over the ranks, joined in data order on every rank."""
    if not isinstance(x, Tensor) or x.ndim < 2 or len(x) == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x must be a non-empty tensor of shape (n, ...), got {got}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if int(seed) != seed or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    world = init() if world is None else world
    size = int(batch_size)
    chunks = list(zip(range(0, len(x), size), torch.split(x, size), split_cond(cond, size, len(x))))

    def one(_: int, chunk: tuple[int, Tensor, Cond]) -> T:
        start, data, chunk_cond = chunk
        noise = PerSampleNoise(int(seed), offset=start, device=data.device)
        return solve(data, cond=chunk_cond, generator=noise)

    return _concat(map_shards(one, chunks, world, progress=progress, desc="likelihood chunks"))


def log_likelihood_sharded(model: DiffusionModel, x: Tensor, *, seed: int, batch_size: int, cond: Cond = None,
                           world: World | None = None, progress: bool = False,
                           **options: Any) -> LikelihoodResult:
    """:func:`scoresde.log_likelihood` of ``x`` split into chunks of ``batch_size`` over the ranks of
    ``world`` (default: :func:`init`), each chunk ``[a, b)`` one solve with Hutchinson probes from
    ``PerSampleNoise(seed, offset=a)``. The per-sample results are gathered in data order on every
    rank and do not depend on the number of processes. ``options`` go to ``log_likelihood``."""
    return _chunked(lambda data, **kw: log_likelihood(model, data, **kw, **options), x, cond, seed,
                    batch_size, world, progress)


def bits_per_dim_sharded(model: DiffusionModel, x: Tensor, *, seed: int, batch_size: int, cond: Cond = None,
                         world: World | None = None, progress: bool = False, **options: Any) -> BitsPerDim:
    """:func:`scoresde.bits_per_dim` of ``x`` (integer pixels or continuous data) split as
    :func:`log_likelihood_sharded` splits it; chunk ``[a, b)`` draws its dequantization noise and
    probes from ``PerSampleNoise(seed, offset=a)``. ``.mean`` and ``.stderr`` are those of all
    per-sample values, gathered on every rank. ``options`` go to ``bits_per_dim``."""
    return _chunked(lambda data, **kw: bits_per_dim(model, data, **kw, **options), x, cond, seed,
                    batch_size, world, progress)


# --- sharded sampling ---------------------------------------------------------------------------------

_SHARD = re.compile(r"^samples_(\d+)_(\d+)\.npz$")


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(0, s), (s, 2s), …, (⌊n/s⌋·s, n)]``: the sample ranges of ``n`` draws in shards of ``s``."""
    for name, value in (("n", n), ("shard_size", shard_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return [(a, min(a + shard_size, n)) for a in range(0, n, shard_size)]


def shard_path(folder: str | os.PathLike, start: int, stop: int) -> Path:
    """``folder/samples_{start:09d}_{stop:09d}.npz``."""
    return Path(folder) / f"samples_{start:09d}_{stop:09d}.npz"


def state_digest(module: nn.Module) -> str:
    """SHA-256 of ``module``'s state dict (names, dtypes, shapes, values): which weights a shard
    folder's samples came from."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        h.update(name.encode())
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def run_folder(root: str | os.PathLike, description: Mapping[str, Any]) -> Path:
    """``root/<key>``: the shard folder of one sampling run, ``key`` the first 16 hex digits of the
    SHA-256 of ``description`` (JSON, sorted keys: model, sampler, options, grid, seed, shard size…).
    Runs that differ in anything that changes a sample get different folders."""
    text = json.dumps(description, sort_keys=True, default=str)
    return Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardedSamples:
    """The merged samples of a sharded run (on rank 0).

    ``x``: ``(n, ...)`` in sample order, on the CPU; ``nfe`` and ``wall_s``: per shard (``wall_s`` as
    measured when the shard was made); ``timesteps``: the grid; ``computed``: shards made by this
    launch (all ranks), the others were found in the folder.
    """

    x: Tensor
    nfe: Tensor
    wall_s: Tensor
    starts: Tensor
    timesteps: Tensor
    computed: int


def _read_shard(path: Path, start: int, stop: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("x", "nfe", "wall_s", "timesteps")}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise InputError(f"shard {path} is unreadable ({type(e).__name__}: {e}); delete it to recompute "
                         "it") from e
    if arrays["x"].shape[0] != stop - start:
        raise InputError(f"shard {path} holds {arrays['x'].shape[0]} samples, expected {stop - start}; "
                         "delete it to recompute it")
    return arrays


def sample_sharded(model: DiffusionModel, sample_shape: Sequence[int], n: int, folder: str | os.PathLike, *,
                   shard_size: int, seed: int, sampler: str = "ddim", steps: int | None = None,
                   cond: Cond = None, world: World | None = None, progress: bool = False,
                   **sample_options: Any) -> ShardedSamples | None:
    """``n`` samples of ``model`` in shards over the ranks of ``world`` (default :func:`init`); see
    the module docstring. Every rank must call it with the same arguments.

    Args:
        model: any :class:`~scoresde.model.DiffusionModel`, on ``world.device``.
        sample_shape: the shape of one sample as the sampler sees it (a latent model's latent shape).
        n: how many samples.
        folder: where the shard files go; one folder per run (see :func:`run_folder`): shards found
            there are taken as this run's and not recomputed.
        shard_size: samples per shard, each sampled as one batch.
        seed: the :class:`~scoresde.noise.PerSampleNoise` seed; shard ``[a, b)`` uses offset ``a``.
        sampler, steps, sample_options: passed to :func:`scoresde.sample` (``timesteps``, options…).
        cond: the condition of all ``n`` samples (batch first); each shard gets its rows.
        progress: a progress bar over rank 0's shards.

    Returns:
        on rank 0 the merged :class:`ShardedSamples`; ``None`` on the other ranks.
    """
    world = init() if world is None else world
    ranges = shard_ranges(n, shard_size)
    check_cond(cond, n)
    folder = Path(folder)
    missing = world.broadcast_object([r for r in ranges if not shard_path(folder, *r).is_file()]
                                     if world.is_main else None)
    conds = dict(zip(ranges, split_cond(cond, shard_size, n)))
    shape = tuple(int(s) for s in sample_shape)

    def make(_: int, rng: tuple[int, int]) -> int:
        start, stop = rng
        noise = PerSampleNoise(int(seed), offset=start, device=world.device)
        began = time.perf_counter()
        with torch.no_grad():
            out = sample(model, (stop - start, *shape), sampler, steps, cond=conds[rng], generator=noise,
                         device=world.device, **sample_options)
        wall = time.perf_counter() - began
        arrays = {"x": out.x.detach().cpu().numpy(), "nfe": np.int64(out.nfe), "wall_s": np.float64(wall),
                  "timesteps": out.timesteps.cpu().numpy()}
        checkpoint.atomic_write(shard_path(folder, start, stop), lambda f: np.savez(f, **arrays))
        return 1

    computed = sum(map_shards(make, missing, world, progress=progress, desc="sample shards"))
    if not world.is_main:
        return None
    shards = [_read_shard(shard_path(folder, *r), *r) for r in ranges]
    return ShardedSamples(
        x=torch.from_numpy(np.concatenate([s["x"] for s in shards])),
        nfe=torch.tensor([int(s["nfe"]) for s in shards]),
        wall_s=torch.tensor([float(s["wall_s"]) for s in shards], dtype=torch.float64),
        starts=torch.tensor([a for a, _ in ranges]),
        timesteps=torch.from_numpy(shards[0]["timesteps"]),
        computed=computed,
    )


def remove_shards(folder: str | os.PathLike) -> None:
    """Delete a run's shard files, its ``run.json`` and the temporary files of writes a kill cut short
    (and the folder once empty), after the merge has been written."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        leftover = p.name.startswith(".") and p.name.endswith(".tmp")
        if _SHARD.match(p.name) or p.name == "run.json" or leftover:
            p.unlink()
    try:
        folder.rmdir()
    except OSError:  # something else lives there: leave it
        pass
