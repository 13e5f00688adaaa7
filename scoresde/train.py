"""Training: one config → SDE, network, loss, data (built by :mod:`scoresde.experiment`);
resumable checkpoints; EMA weights.

``train(config, workdir)`` runs ``config.training.steps`` optimizer steps in total. If
``workdir/checkpoints`` holds a checkpoint it resumes from it — network, optimizer, EMA, step,
and both random states (the batch/noise generator and torch's global one, which dropout uses) —
so N steps in one go and N/2 + N/2 with a restart give the same parameters.

A checkpoint records the config; resuming or loading with a config whose ``data``, ``sde`` or
``model`` groups differ is an error that lists the differing keys (training length, learning
rate and logging may change between runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ml_collections import ConfigDict

from scoresde import checkpoint
from scoresde.experiment import build_model, identity, load_data
from scoresde.losses import get_loss
from scoresde.model import ScoreModel
from scoresde.nn import EMA


def checkpoint_state(model: ScoreModel, opt: torch.optim.Optimizer, ema: EMA, step: int,
                     generator: torch.Generator) -> dict[str, Any]:
    return {
        "net": model.net.state_dict(),
        "optimizer": opt.state_dict(),
        "ema": ema.state_dict(),
        "step": step,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }


@dataclass
class TrainResult:
    """The trained model (raw weights), its EMA, the final step and the logged losses."""

    model: ScoreModel
    ema: EMA
    step: int
    losses: list[tuple[int, float]]


def _learning_rate(config: ConfigDict, step: int) -> float:
    warmup = config.training.warmup
    return config.training.lr * (min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)


def train(config: ConfigDict, workdir: str | Path, *, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) the experiment ``config`` in ``workdir``; see the module docstring."""
    tc = config.training
    workdir = Path(workdir)
    data, _ = load_data(config, "train")
    torch.manual_seed(tc.seed)  # initial weights, Fourier features and dropout use the global RNG
    model = build_model(config)
    loss_fn = get_loss(tc.loss)
    loss_options = {"reduce_mean": tc.reduce_mean}
    if tc.loss == "dsm":  # only the continuous-time loss samples t on [eps, T] and can reweight
        loss_options.update(eps=tc.eps, likelihood_weighting=tc.likelihood_weighting)
    opt = torch.optim.Adam(model.net.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8)
    ema = EMA(model.net, decay=tc.ema_decay)
    generator = torch.Generator().manual_seed(tc.seed)
    step = 0

    latest = checkpoint.latest_checkpoint(workdir)
    if latest is not None:
        state = checkpoint.load_checkpoint(latest, config=identity(config))
        if "optimizer" not in state:
            raise ValueError(f"{latest} is an exported model (weights only) and cannot be resumed; "
                             "train in a fresh workdir")
        model.net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step = int(state["step"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {latest} at step {step}")

    losses: list[tuple[int, float]] = []
    bar = None
    if progress and step < tc.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=step, unit="step", desc="train")
    model.net.train()
    window, t0 = [], time.perf_counter()
    while step < tc.steps:
        idx = torch.randint(len(data), (tc.batch_size,), generator=generator)
        loss = loss_fn(model, data[idx], generator, **loss_options)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; lower training.lr?")
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
            checkpoint.save_and_prune(workdir, step, checkpoint_state(model, opt, ema, step, generator),
                                      identity(config), keep=tc.keep_checkpoints)
    if bar is not None:
        bar.close()
    model.net.eval()
    return TrainResult(model=model, ema=ema, step=step, losses=losses)
