"""Noisy classifiers ``p_φ(c | x_t, t)`` for classifier guidance (Dhariwal & Nichol 2021, §4).

:class:`NoisyClassifier` wraps a network ``net(x, c) -> logits (batch, C)`` (``c`` the time as the
network expects it, see :data:`scoresde.model.TIME_INPUTS`) into the classifier protocol of
:class:`~scoresde.guidance.ClassifierGuidance`: ``classifier(x, t, labels) = log_softmax(logits)[labels]``
per sample, with class indices ``0..C−1``.

:func:`classifier_loss` is its training objective, the cross-entropy on inputs noised as the SDE
does,

    L = E_{t, (x0, c), z} [ −log p_φ(c | alpha(t)·x0 + sigma(t)·z, t) ],

with ``t ~ U[eps, T]`` (``time="continuous"``, as :func:`~scoresde.losses.dsm_loss` draws it) or
at DDPM's step times ``t_i = (i + 1)/N``, ``i ~ U{0..N−1}`` (``time="index"``, as guided-diffusion
trains its classifiers). Times are drawn first, then ``z``, both from the generator.
:func:`train_classifier` runs Adam on it over a labelled data set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.losses import draw_x_t, uniform_index
from scoresde.model import TIME_INPUTS, check_times
from scoresde.nn.embedding import check_range
from scoresde.sde import SDE

TIMES = ("continuous", "index")


class NoisyClassifier(nn.Module):
    """``net(x, c) -> logits`` on ``sde`` as ``classifier(x, t, labels) -> log p_φ(labels | x_t)``.

    Args:
        net: the network (e.g. :class:`~scoresde.nn.TimeClassifierMLP`); ``c`` of shape ``(batch,)``.
        sde: the forward SDE whose noisy marginals the classifier sees.
        time_input: how ``t`` reaches the network, a name of :data:`scoresde.model.TIME_INPUTS`.
    """

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], sde: SDE, time_input: str = "continuous"):
        super().__init__()
        if time_input not in TIME_INPUTS:
            raise InputError(f"time_input must be one of {sorted(TIME_INPUTS)}, got {time_input!r}")
        if time_input == "index":
            sde.require_N("time_input='index'")
        self.net, self.sde, self.time_input = net, sde, time_input

    def logits(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The network's logits ``(batch, C)`` at ``(x, t)``."""
        t = check_times(t, x, self.sde)
        c = TIME_INPUTS[self.time_input].encode(t, self.sde).to(device=x.device, dtype=x.dtype)
        out = self.net(x, c)
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise InputError(f"the classifier network must return logits of shape ({x.shape[0]}, classes), "
                             f"got {got}")
        return out

    def forward(self, x: Tensor, t: float | Tensor, labels: Tensor) -> Tensor:
        """``log p_φ(labels | x_t)`` per sample, shape ``(batch,)``."""
        log_p = torch.log_softmax(self.logits(x, t), dim=1)
        return log_p.gather(1, check_labels(labels, x.shape[0], log_p.shape[1])[:, None])[:, 0]


def check_labels(labels: Tensor, batch: int, num_classes: int) -> Tensor:
    """``labels`` as a ``(batch,)`` long tensor of class indices in ``0..num_classes−1``."""
    labels = torch.as_tensor(labels)
    if labels.shape != (batch,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"labels must be ({batch},) integers (one class index per sample), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    check_range(labels, 0, num_classes, f"labels must be class indices in 0..{num_classes - 1}")
    return labels.long()


def classifier_loss(classifier: NoisyClassifier, x0: Tensor, labels: Tensor, generator: torch.Generator, *,
                    eps: float = 1e-5, time: str = "continuous", t: float | Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``classifier`` on ``x0`` noised to a random time (module docstring).

    Args:
        classifier: the classifier being trained.
        x0: a data batch ``(batch, ...)``; ``labels`` its class indices ``(batch,)``.
        generator: source of the times and the noise.
        eps: smallest continuous time drawn.
        time: ``"continuous"`` (``t ~ U[eps, T]``) or ``"index"`` (DDPM step times; needs ``sde.N``).
        t: evaluate at these times (a scalar or ``(batch,)``) instead of drawing them.
    """
    sde = classifier.sde
    if time not in TIMES:
        raise InputError(f"time must be one of {TIMES}, got {time!r}")
    if t is not None:
        t = check_times(t, x0, sde)
    elif time == "continuous":
        if not 0 <= eps < sde.T:
            raise InputError(f"eps must lie in [0, T={sde.T}), got {eps}")
        t = eps + (sde.T - eps) * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64,
                                             device=x0.device)
    else:
        t = (uniform_index(classifier, x0, generator) + 1.0) / sde.N
    x_t, _ = draw_x_t(classifier, x0, t, generator)
    return -classifier(x_t, t, labels).mean()


def train_classifier(classifier: NoisyClassifier, x: Tensor, labels: Tensor, *, steps: int,
                     generator: torch.Generator, batch_size: int = 256, lr: float = 1e-3, eps: float = 1e-5,
                     time: str = "continuous", progress: bool = False) -> list[float]:
    """Train ``classifier`` on the labelled set ``(x, labels)`` for ``steps`` Adam steps of
    :func:`classifier_loss` on batches drawn with replacement; returns the loss of every step.

    The batches, times and noise come from ``generator``; the initial weights are the network's.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if x.ndim < 1 or labels.shape != (x.shape[0],):
        raise InputError(f"need one label per sample: x of shape {tuple(x.shape)}, labels of shape "
                         f"{tuple(labels.shape)}")
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="classifier")
    was_training = classifier.training
    classifier.train()
    losses = []
    for _ in bar:
        idx = torch.randint(x.shape[0], (batch_size,), generator=generator, device=x.device)
        loss = classifier_loss(classifier, x[idx], labels[idx], generator, eps=eps, time=time)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    classifier.train(was_training)
    return losses
