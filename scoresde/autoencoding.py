"""Training and loading the convolutional autoencoder of latent diffusion (:mod:`scoresde.nn.autoencoder`).

``train_autoencoder(config, workdir)`` fits a :class:`~scoresde.nn.autoencoder.ConvAutoencoder`
(``config.autoencoder.network``, the decoder squashed into ``config.data.data_range``) to the
training split of ``config.data`` with the KL-regularised objective of Rombach et al. 2022's
KL autoencoders, per sample

    L(x) = ‖x − D(z)‖²  +  kl_weight · KL(q(z | x) ‖ N(0, I)),     z = μ(x) + σ(x)·ε,  ε ~ N(0, I),

averaged over the batch (the squared error summed over the pixels, the KL over the latent
elements). Why the regulariser: the decoder is trained on latents perturbed by the posterior's
noise, so it maps a neighbourhood of each training latent to a plausible image — a latent
diffusion model's samples land near, not on, the training latents; the KL term keeps μ from
growing until that noise is negligible, and a small ``kl_weight`` keeps the reconstructions sharp
(a weight of 1 would be a VAE with decoder variance ½, which blurs 8×8 digits badly).

Optimisation: Adam, learning rate ``training.lr`` with ``training.warmup`` linear warm-up steps
and a cosine decay to 0 at ``training.steps`` (:func:`learning_rate`), gradient clipping at
``training.grad_clip``; batches and posterior noise drawn from one generator seeded by
``training.seed``. Checkpoints (``workdir/checkpoints/ckpt_*.pt`` through :mod:`scoresde.checkpoint`:
atomic, weights only) every ``training.ckpt_every`` steps and at the end hold the autoencoder
(:func:`~scoresde.nn.autoencoder.autoencoder_state`), the optimizer, the step and the generator,
so a run resumed after an interruption equals a straight one bit for bit (the schedule is fixed
by ``training.steps``: resuming with another value changes the rest of the run's learning rates).
Each stores the latent statistics of its weights measured on the whole training split
(:func:`measure_latent_statistics`): as LDM, the
scale factor is ``1/std`` of the training latents μ(x) (all elements pooled), and, as SD3's
``shift_factor``, the shift is their mean, so ``scale·(μ(x) − shift)`` has mean 0 and variance 1.

A checkpoint's config is :func:`identity`: the ``data`` and ``autoencoder`` groups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict
from torch import Tensor

from scoresde import checkpoint
from scoresde.config import check_values
from scoresde.errors import InputError, NonFiniteError
from scoresde.experiment import find_model, load_data
from scoresde.nn.autoencoder import ConvAutoencoder, autoencoder_from_state, autoencoder_state, kl_divergence

IDENTITY_GROUPS = ("data", "autoencoder")


def identity(config: ConfigDict) -> dict[str, Any]:
    """The config groups that fix what an autoencoder checkpoint's weights mean."""
    return {group: config[group].to_dict() for group in IDENTITY_GROUPS}


def build_autoencoder(config: ConfigDict) -> ConvAutoencoder:
    """A fresh autoencoder from ``config.autoencoder.network``, decoding into ``config.data.data_range``."""
    network = config.autoencoder.network.to_dict()
    if "data_range" in network:
        raise InputError("set the autoencoder's output range by data.data_range, not "
                         "autoencoder.network.data_range")
    return ConvAutoencoder(**network, data_range=tuple(config.data.data_range))


def autoencoder_loss(autoencoder: ConvAutoencoder, x: Tensor, generator: torch.Generator,
                     kl_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, squared error, KL)``, batch means of the per-sample terms in the module docstring;
    ε is drawn from ``generator``."""
    mean, logvar = autoencoder.posterior(x)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    recon = autoencoder.decode(mean + torch.exp(0.5 * logvar) * eps)
    sq_err = (recon - x).square().flatten(1).sum(1).mean()
    kl = kl_divergence(mean, logvar).mean()
    return sq_err + kl_weight * kl, sq_err, kl


def learning_rate(config: ConfigDict, step: int) -> float:
    """``lr·min(1, (step + 1)/warmup)·½(1 + cos(π·step/steps))``: linear warm-up, cosine decay to 0."""
    tc = config.training
    warm = min(1.0, (step + 1) / tc.warmup) if tc.warmup > 0 else 1.0
    return tc.lr * warm * 0.5 * (1.0 + math.cos(math.pi * step / tc.steps))


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 512) -> Tensor:
    """``fn`` applied to ``x`` in batches of ``batch_size`` along axis 0, without gradients."""
    if len(x) == 0:
        raise InputError("batched needs at least one sample, got an empty tensor")
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def measure_latent_statistics(autoencoder: ConvAutoencoder, data: Tensor) -> tuple[float, float]:
    """``(scale_factor, shift_factor) = (1/std, mean)`` of the raw latents μ(x) of ``data``, all
    elements pooled (float64; ``std`` the population standard deviation)."""
    z = batched(autoencoder.encode, data).double()
    std = z.std(correction=0).item()
    if not (math.isfinite(std) and std > 0):
        raise InputError(f"the training latents have standard deviation {std}; cannot set a scale factor")
    return 1.0 / std, z.mean().item()


def reconstruction_mse(autoencoder: ConvAutoencoder, x: Tensor) -> float:
    """Mean squared error per element of ``decode(encode(x))`` against ``x`` (in the data range)."""
    return (batched(autoencoder, x) - x).square().mean().item()


@dataclass
class AutoencoderTrainResult:
    """The trained autoencoder (latent statistics set), the final step and the logged
    ``(step, loss, squared error, KL)`` means."""

    autoencoder: ConvAutoencoder
    step: int
    losses: list[tuple[int, float, float, float]]


def _state(autoencoder: ConvAutoencoder, opt: torch.optim.Optimizer, step: int,
           generator: torch.Generator) -> dict[str, Any]:
    return {"autoencoder": autoencoder_state(autoencoder), "optimizer": opt.state_dict(), "step": step,
            "generator": generator.get_state()}


def train_autoencoder(config: ConfigDict, workdir: str | Path, *, progress: bool = True,
                      log: Callable[[str], None] = print) -> AutoencoderTrainResult:
    """Train (or resume) the autoencoder of ``config`` in ``workdir``; see the module docstring."""
    check_values(config, ("data", "training"))
    tc, kl_weight = config.training, config.autoencoder.kl_weight
    if not (isinstance(kl_weight, (int, float)) and kl_weight >= 0):
        raise InputError(f"autoencoder.kl_weight must be a number >= 0, got {kl_weight!r}")
    workdir = Path(workdir)
    data, spec = load_data(config, "train")
    torch.manual_seed(tc.seed)  # initial weights
    autoencoder = build_autoencoder(config)
    autoencoder.latent_shape(spec.shape)  # refuse data the network cannot encode before training
    opt = torch.optim.Adam(autoencoder.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    generator = torch.Generator().manual_seed(tc.seed)
    step = 0

    latest = checkpoint.latest_checkpoint(workdir)
    if latest is not None:
        state = checkpoint.load_checkpoint(latest, config=identity(config))
        where = f"checkpoint {latest}"
        checkpoint.require_entries(state, ("autoencoder", "optimizer", "step", "generator"), where)
        checkpoint.require_entries(state["autoencoder"], ("net",), f"{where}, entry 'autoencoder'")
        checkpoint.check_tensors(state["autoencoder"]["net"], autoencoder.state_dict(),
                                 f"{where}, the autoencoder's entry 'net'")
        autoencoder.load_state_dict(state["autoencoder"]["net"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        generator.set_state(state["generator"])
        log(f"resumed from {latest} at step {step}")

    losses: list[tuple[int, float, float, float]] = []
    bar = None
    if progress and step < tc.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=step, unit="step", desc="train autoencoder")
    autoencoder.train()
    window, t0 = [], time.perf_counter()
    while step < tc.steps:
        idx = torch.randint(len(data), (tc.batch_size,), generator=generator)
        loss, sq_err, kl = autoencoder_loss(autoencoder, data[idx], generator, kl_weight)
        if not torch.isfinite(loss):
            raise NonFiniteError(f"non-finite loss {loss.item()} at step {step}: the training diverged; "
                                 f"lower training.lr (now {tc.lr:g}) or set training.grad_clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(autoencoder.parameters(), tc.grad_clip)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step)
        opt.step()
        step += 1
        window.append((loss.item(), sq_err.item(), kl.item()))
        if bar is not None:
            bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            means = [sum(w[i] for w in window) / len(window) for i in range(3)]
            losses.append((step, *means))
            log(f"step {step}: loss {means[0]:.4f} (squared error {means[1]:.4f}, KL {means[2]:.2f}), "
                f"{len(window) * tc.batch_size / (time.perf_counter() - t0):.0f} samples/s")
            window, t0 = [], time.perf_counter()
        if step % tc.ckpt_every == 0 or step == tc.steps:
            autoencoder.scale_factor, autoencoder.shift_factor = measure_latent_statistics(autoencoder, data)
            checkpoint.save_and_prune(workdir, step, _state(autoencoder, opt, step, generator),
                                      identity(config), keep=tc.keep_checkpoints)
    if bar is not None:
        bar.close()
    autoencoder.eval()
    autoencoder.scale_factor, autoencoder.shift_factor = measure_latent_statistics(autoencoder, data)
    return AutoencoderTrainResult(autoencoder=autoencoder, step=step, losses=losses)


def load_autoencoder(source: str | Path) -> ConvAutoencoder:
    """The trained autoencoder in ``source`` (eval mode, gradients off), with its latent statistics.

    ``source``: an autoencoder checkpoint, a workdir of :func:`train_autoencoder` (its latest
    checkpoint) or a latent-diffusion model's checkpoint (which stores its autoencoder).
    """
    path = find_model(source)
    if path is None:
        raise FileNotFoundError(f"no autoencoder checkpoint in {source} (an autoencoder checkpoint file, a "
                                "train_autoencoder workdir or a latent model's checkpoint); train one first")
    state = checkpoint.load_checkpoint(path)
    if "autoencoder" not in state:
        raise InputError(f"{path} holds no autoencoder (it is neither an autoencoder checkpoint nor a latent "
                         "model's); train one with scoresde.autoencoding.train_autoencoder")
    autoencoder = autoencoder_from_state(state["autoencoder"], where=str(path))
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    return autoencoder
