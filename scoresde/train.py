"""Training: one config → SDE, network, loss, data (built by :mod:`scoresde.experiment`);
resumable checkpoints; EMA weights.

``train(config, workdir)`` runs ``config.training.steps`` optimizer steps in total. If
``workdir/checkpoints`` holds a checkpoint it resumes from it — network, optimizer, EMA, step,
and both random states (the batch/noise generator and torch's global one, which dropout uses) —
so N steps in one go and N/2 + N/2 with a restart give the same parameters.

A checkpoint records the config; resuming or loading with a config whose ``data``, ``sde`` or
``model`` groups differ is an error that lists the differing keys (training length, learning
rate and logging may change between runs).

**Class-conditional training** (``model.num_classes > 0``): each batch's labels are drawn with
its data (the data set's labels, :func:`scoresde.experiment.load_labelled_data`), each is replaced
by the null label :data:`~scoresde.analytic.NULL_LABEL` with probability
``training.label_dropout`` (:func:`drop_labels`, Ho & Salimans 2022, so that one network is both
``eps(x, t, c)`` and ``eps(x, t)`` for classifier-free guidance), and the loss gets
``cond=labels``. Every draw comes from the training generator, so resuming stays exact.
The ``hybrid`` loss (learned variances, ``model.learned_variance``) gets
``vlb_weight=training.vlb_weight`` and, for image data, the discretized decoder on the data's
pixel grid (``levels``, ``data_range``), the likelihood the variational bound measures there.

**Latent diffusion** (``latent.autoencoder`` names an autoencoder's checkpoint or workdir,
:func:`scoresde.autoencoding.load_autoencoder`): the training split is encoded once, batched and
without gradients, by :meth:`~scoresde.latent.LatentDiffusion.to_latent` (``scale·(E(x) − shift)``),
and the score model is trained on those latents (continuous data, so the hybrid loss uses its
Gaussian decoder). Every checkpoint stores the autoencoder beside the network, so the trained
model loads from the checkpoint alone; resuming checks that ``latent.autoencoder`` still holds the
same autoencoder (config, weights, latent statistics).

**Several processes** (``torchrun --nproc_per_node=K -m scoresde.cli train ...``; see
:mod:`scoresde.distributed`): the global batch is ``training.batch_size`` (K must divide it).
Every rank draws it — indices, labels, dropout of labels, the loss's times and noise — from the
shared generator as one process does, runs the network on its ``B/K`` rows inside
``DistributedDataParallel`` and all-gathers the predictions, so the loss is the global batch's;
DDP sums the per-rank gradients. K processes thus take the steps of one process up to float
summation order. Rank 0 alone logs and writes checkpoints (atomically; they also hold every rank's
torch RNG state, which dropout uses); every rank resumes from the checkpoint rank 0 found. Under
NCCL each rank trains on ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import Tensor

from scoresde import checkpoint, distributed
from scoresde.analytic import NULL_LABEL
from scoresde.autoencoding import batched, load_autoencoder
from scoresde.config import check_values
from scoresde.data import CONTINUOUS_RANGE, DataSpec
from scoresde.errors import CheckpointError, InputError, NonFiniteError
from scoresde.experiment import build_model, identity, is_latent, latent_model, load_data, load_labelled_data
from scoresde.latent import LatentDiffusion
from scoresde.losses import get_loss
from scoresde.model import ScoreModel
from scoresde.nn import EMA
from scoresde.nn.autoencoder import ConvAutoencoder, autoencoder_state


def checkpoint_state(model: ScoreModel, opt: torch.optim.Optimizer, ema: EMA, step: int,
                     generator: torch.Generator, autoencoder: ConvAutoencoder | None = None,
                     rank_rng: list[Tensor] | None = None) -> dict[str, Any]:
    """What a checkpoint holds; ``rank_rng``: the dropout generator's state of every rank (see
    :func:`_per_rank_rng`)."""
    state = {
        "net": model.net.state_dict(),
        "optimizer": opt.state_dict(),
        "ema": ema.state_dict(),
        "step": step,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if autoencoder is not None:
        state["autoencoder"] = autoencoder_state(autoencoder)
    if rank_rng is not None:
        state["torch_rng_ranks"] = list(rank_rng)
    return state


@dataclass
class TrainResult:
    """The trained model (raw weights), its EMA, the final step and the logged losses."""

    model: ScoreModel
    ema: EMA
    step: int
    losses: list[tuple[int, float]]


def drop_labels(labels: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """``labels`` with each replaced by :data:`~scoresde.analytic.NULL_LABEL` with probability ``p``
    (independently; one uniform draw per label from ``generator``, also for ``p = 0``)."""
    if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0):
        raise InputError(f"label dropout must be a probability in [0, 1], got {p!r}")
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)


def _training_data(config: ConfigDict) -> tuple[Tensor, Tensor | None, DataSpec]:
    """The training split, its labels for a class-conditional model (checked against
    ``model.num_classes``; ``None`` otherwise) and its spec; refuses label dropout for an
    unconditional model."""
    classes, p = config.model.num_classes, config.training.label_dropout
    if classes == 0:
        if p != 0:
            raise InputError(f"training.label_dropout={p} needs a class-conditional model "
                             "(model.num_classes > 0); got model.num_classes=0")
        data, spec = load_data(config, "train")
        return data, None, spec
    data, labels, spec = load_labelled_data(config, "train")
    if labels.max() >= classes:
        raise InputError(f"data set {config.data.name!r} has labels 0..{labels.max().item()} but "
                         f"model.num_classes={classes}; set it to at least {labels.max().item() + 1}")
    return data, labels, spec


def _latent_data(ldm: LatentDiffusion, data: Tensor, spec: DataSpec) -> tuple[Tensor, DataSpec]:
    """The training data as latents ``ldm.to_latent(x)`` (encoded once, batched, no gradients)
    and their spec (continuous data of the latent shape)."""
    latents = batched(ldm.to_latent, data)
    return latents, DataSpec(f"{spec.name} latents", ldm.latent_shape(spec.shape), None, CONTINUOUS_RANGE)


def _check_same_autoencoder(state: dict[str, Any], autoencoder: ConvAutoencoder, latest: Path,
                            source: str) -> None:
    """Refuse to resume on the latents of another autoencoder than the checkpoint's."""
    stored, current = state.get("autoencoder"), autoencoder_state(autoencoder)
    same = (stored is not None and stored["net"].keys() == current["net"].keys()
            and all(torch.equal(stored["net"][k], v) for k, v in current["net"].items())
            and all(stored[k] == current[k] for k in ("config", "scale_factor", "shift_factor")))
    if not same:
        raise InputError(f"{latest} was trained on the latents of another autoencoder than the one in "
                         f"latent.autoencoder={source!r}; point it at the original or train in a fresh "
                         "workdir")


def _loss_options(config: ConfigDict, spec: DataSpec) -> dict[str, Any]:
    """The keyword arguments of ``training.loss`` that the config fixes."""
    tc = config.training
    if config.model.learned_variance != (tc.loss == "hybrid"):
        raise InputError("model.learned_variance=True needs training.loss='hybrid' (the loss that trains the "
                         "variance) and the hybrid loss needs it; got model.learned_variance="
                         f"{config.model.learned_variance}, training.loss={tc.loss!r}")
    options: dict[str, Any] = {"reduce_mean": tc.reduce_mean}
    if tc.loss == "dsm":  # only the continuous-time loss samples t on [eps, T] and can reweight
        options.update(eps=tc.eps, likelihood_weighting=tc.likelihood_weighting)
    if tc.loss == "hybrid":
        options.update(vlb_weight=tc.vlb_weight)
        if spec.is_image:
            options.update(decoder="discretized", data_range=spec.data_range, levels=spec.levels)
    return options


def _per_rank_rng(world: distributed.World) -> bool:
    """Whether checkpoints hold each rank's RNG state: with several processes, or a network on an
    accelerator (whose dropout draws from the device's generator, not the CPU's)."""
    return world.size > 1 or world.device.type != "cpu"


def _rng_state(device: torch.device) -> Tensor:
    """The state of the global generator dropout draws from on ``device``."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _restore_rng(state: dict[str, Any], world: distributed.World, log: Callable[[str], None]) -> None:
    """Set this rank's dropout generator from a checkpoint: its own state when the checkpoint was
    written by as many processes; otherwise rank 0 takes the single CPU stream (as one process does)
    and the other ranks keep their fresh seeds."""
    ranks = state.get("torch_rng_ranks")
    if ranks is not None and len(ranks) == world.size:
        if world.device.type == "cuda":
            torch.cuda.set_rng_state(ranks[world.rank], world.device)
        else:
            torch.set_rng_state(ranks[world.rank])
        return
    if _per_rank_rng(world) or ranks is not None:
        log(f"the checkpoint was written by {1 if ranks is None else len(ranks)} process(es), this run has "
            f"{world.size}: the dropout streams of ranks >= 1 (and on accelerators) start afresh")
    if world.is_main:
        torch.set_rng_state(state["torch_rng"])


def _learning_rate(config: ConfigDict, step: int) -> float:
    warmup = config.training.warmup
    return config.training.lr * (min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)


def train(config: ConfigDict, workdir: str | Path, *, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) the experiment ``config`` in ``workdir``; see the module docstring."""
    check_values(config, ("data", "training"))  # before any work: e.g. ckpt_every=0 or batch_size=0
    tc = config.training
    workdir = Path(workdir)
    world = distributed.init()
    if not world.is_main:  # rank 0 logs for all
        log, progress = (lambda _: None), False
    world.rows(tc.batch_size)  # K processes split the global batch evenly
    data, labels, spec = _training_data(config)
    autoencoder = load_autoencoder(config.latent.autoencoder) if is_latent(config) else None
    loss_fn = get_loss(tc.loss)
    torch.manual_seed(tc.seed)  # initial weights, Fourier features and dropout use the global RNG
    model = build_model(config)
    if autoencoder is not None:
        data, spec = _latent_data(latent_model(config, model, autoencoder), data, spec)
    if world.rank > 0:  # dropout: each rank its own stream (rank 0 continues the 1-process one)
        torch.manual_seed(distributed.rank_seed(tc.seed, world.rank))
    model.to(world.device)
    data = data.to(world.device)
    labels = None if labels is None else labels.to(world.device)
    loss_options = _loss_options(config, spec)
    opt = torch.optim.Adam(model.net.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = EMA(model.net, decay=tc.ema_decay)
    generator = torch.Generator(world.device).manual_seed(tc.seed)
    step = 0

    # Every rank resumes from the checkpoint rank 0 finds.
    if world.is_main:
        for stale in checkpoint.remove_stale_temp_files(workdir):
            log(f"removed {stale}, the temporary file of an interrupted checkpoint write")
    latest = world.broadcast_object(checkpoint.latest_checkpoint(workdir) if world.is_main else None)
    if latest is not None:
        state = checkpoint.load_checkpoint(latest, config=identity(config))
        if "optimizer" not in state:
            raise InputError(f"{latest} is an exported model (weights only) and cannot be resumed; "
                             "train in a fresh workdir")
        checkpoint.require_entries(state, ("step", "generator", "torch_rng"), f"checkpoint {latest}")
        checkpoint.load_weights(state, latest, model.net, ema)
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        try:
            generator.set_state(state["generator"])
        except RuntimeError as e:  # a CUDA generator's state is not a CPU generator's, and back
            raise CheckpointError(f"{latest}: its data-sampling generator state does not fit a "
                                  f"{generator.device.type} generator ({e}); resume on the device type "
                                  "the run was trained on, or train in a fresh workdir") from None
        _restore_rng(state, world, log)
        if autoencoder is not None:
            _check_same_autoencoder(state, autoencoder, latest, config.latent.autoencoder)
        log(f"resumed from {latest} at step {step}")

    losses: list[tuple[int, float]] = []
    bar = None
    if progress and step < tc.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=step, unit="step", desc="train")
    model.net.train()
    step_model = model if world.size == 1 else distributed.DataParallelModel(model, world)
    window, t0 = [], time.perf_counter()
    while step < tc.steps:
        idx = torch.randint(len(data), (tc.batch_size,), generator=generator, device=generator.device)
        cond = None if labels is None else drop_labels(labels[idx], tc.label_dropout, generator)
        loss = loss_fn(step_model, data[idx], generator, cond=cond, **loss_options)
        if not torch.isfinite(loss):
            raise NonFiniteError(f"non-finite loss {loss.item()} at step {step}: the training diverged; "
                                 f"lower training.lr (now {tc.lr:g}) or set training.grad_clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), tc.grad_clip)
        for group in opt.param_groups:
            group["lr"] = _learning_rate(config, step)
        opt.step()
        ema.update(model.net)
        step += 1
        window.append(loss.item())
        if bar is not None:
            bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            rate = len(window) * tc.batch_size / (time.perf_counter() - t0)
            mean_loss = sum(window) / len(window)
            losses.append((step, mean_loss))
            log(f"step {step}: loss {mean_loss:.5f}, {rate:.0f} samples/s")
            window, t0 = [], time.perf_counter()
        if step % tc.ckpt_every == 0 or step == tc.steps:
            rank_rng = None
            if _per_rank_rng(world):
                rank_rng = world.all_gather_object(_rng_state(world.device).cpu())
            if world.is_main:
                state = checkpoint_state(model, opt, ema, step, generator, autoencoder, rank_rng)
                checkpoint.save_and_prune(workdir, step, state, identity(config), keep=tc.keep_checkpoints)
    if bar is not None:
        bar.close()
    world.barrier()  # no rank returns before rank 0 has written the last checkpoint
    model.net.eval()
    return TrainResult(model=model, ema=ema, step=step, losses=losses)
