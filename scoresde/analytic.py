"""The analytic oracle: a Gaussian mixture with exact densities and exact diffused scores.

Data ``p_0 = Σ_k w_k N(μ_k, diag(s_k²))``. Under any SDE here ``x_t = alpha·x_0 + sigma·z``, so
the marginal stays a mixture:

    p_t(x) = Σ_k w_k N(x; alpha·μ_k, diag(alpha²·s_k² + sigma²)),
    ∇log p_t(x) = Σ_k r_k(x) · (alpha·μ_k − x) / (alpha²·s_k² + sigma²),

with responsibilities ``r_k ∝ w_k N_k(x)``. Everything is computed in float64 and returned in
the input's dtype. ``score_model(sde)`` exposes the exact score as a :class:`ScoreModel` in any
prediction type and time input, so it stands in for a trained network of that kind.

**Labels.** Components may carry class labels ``c_k``. Conditioning on a label restricts the
mixture to its components, ``p_0(x | c) = Σ_{k: c_k = c} w_k N_k / Σ_{k: c_k = c} w_k``, which
is again a mixture with the formulas above (responsibilities over the label's components
only). Every method taking ``labels`` (one per sample) is exact for ``p(x | c)``; the label
:data:`NULL_LABEL` (−1) means "no condition" and gives the unconditional mixture, as the null
label of classifier-free guidance does. ``score_model(sde, conditional=True)`` is a
class-conditional network: it is called as ``net(x, c, labels)``. The exact noisy class
posterior ``log p_t(c | x)`` (``class_log_posterior``) and its gradient
``∇log p_t(x | c) − ∇log p_t(x)`` make ``classifier(sde)`` the exact classifier of classifier
guidance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde.errors import InputError
from scoresde.model import PREDICTIONS, TIME_INPUTS, ScoreModel, prediction_from_output
from scoresde.sde import SDE, as_time, batch_coeff

NULL_LABEL = -1


class GaussianMixture:
    """``Σ_k w_k N(μ_k, diag(s_k²))`` in D dimensions.

    Args:
        means: ``(K, D)``.
        stds: ``(K,)`` for isotropic components or ``(K, D)`` for diagonal ones; all > 0.
        weights: ``(K,)``, positive; normalised here. Default: uniform.
        labels: ``(K,)`` integer class labels ``>= 0`` of the components (optional).
    """

    def __init__(self, means: Tensor, stds: Tensor, weights: Tensor | None = None,
                 labels: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise InputError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.shape == (K,):
            stds = stds[:, None].expand(K, D)
        if stds.shape != (K, D):
            raise InputError(f"stds must have shape ({K},) or ({K}, {D}), got {tuple(stds.shape)}")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,):
            raise InputError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
        for name, v in (("means", means), ("stds", stds), ("weights", weights)):
            if not torch.isfinite(v).all():
                raise InputError(f"{name} must be finite")
        if not (stds > 0).all() or not (weights > 0).all():
            raise InputError("stds and weights must be positive")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (K,) or labels.is_floating_point() or (labels < 0).any():
                raise InputError(f"labels must be ({K},) integers >= 0, got {labels.dtype} of shape "
                                 f"{tuple(labels.shape)}")
            labels = labels.long()
        self.means, self.stds = means, stds.contiguous()
        self.weights = weights / weights.sum()
        self.labels = labels

    @property
    def classes(self) -> list[int]:
        """The distinct component labels (an error for an unlabelled mixture)."""
        return self._labels().unique().tolist()

    def _labels(self) -> Tensor:
        if self.labels is None:
            raise InputError("this mixture has no component labels; pass labels= to GaussianMixture")
        return self.labels

    def _log_weights(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """``log w_k`` (``(1, K)``), or per sample the weights of ``p(x | c)`` (``(B, K)``,
        ``−inf`` off the label, renormalised); :data:`NULL_LABEL` keeps all components."""
        log_w = torch.log(self.weights.to(device))[None]
        if labels is None:
            return log_w
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (batch,) or labels.is_floating_point():
            raise InputError(f"labels must be ({batch},) integers (one per sample), got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        comp = self._labels().to(device)
        unknown = ~(labels == NULL_LABEL) & ~(labels[:, None] == comp[None]).any(1)
        if unknown.any():
            raise InputError(f"labels {sorted(set(labels[unknown].tolist()))} are not among the mixture's "
                             f"classes {self.classes} (or {NULL_LABEL}: unconditional)")
        keep = (labels[:, None] == comp[None]) | (labels[:, None] == NULL_LABEL)
        masked = torch.where(keep, log_w, torch.full_like(log_w, -math.inf))
        return masked - torch.logsumexp(masked, dim=1, keepdim=True)

    def conditional(self, label: int) -> GaussianMixture:
        """``p_0(x | c = label)`` as a mixture of its own (the unconditional one for ``NULL_LABEL``)."""
        if label == NULL_LABEL:
            return GaussianMixture(self.means, self.stds, self.weights)
        keep = self._labels() == label
        if not keep.any():
            raise InputError(f"label {label} is not among the mixture's classes {self.classes}")
        return GaussianMixture(self.means[keep], self.stds[keep], self.weights[keep])

    def class_log_posterior(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
        """``log p_t(c | x)`` for every class (columns in the order of :attr:`classes`), ``(B, C)``
        in float64: ``log Σ_{k: c_k = c} w_k N_k(x) − log Σ_k w_k N_k(x)`` at mean scale ``alpha``
        and noise ``sigma`` (``alpha = 1, sigma = 0``: the data's ``p_0(c | x)``)."""
        x = self._check(x)
        alpha, sigma = as_time(alpha, x), as_time(sigma, x)
        logp, _, _ = self._components(x, alpha, sigma)
        member = self._labels().to(x.device)[:, None] == torch.tensor(self.classes, device=x.device)[None]
        log_member = torch.where(member, 0.0, -math.inf).to(logp)  # (K, C)
        joint = torch.logsumexp(logp[:, :, None] + log_member[None], dim=1)
        return joint - torch.logsumexp(logp, dim=1, keepdim=True)

    def class_log_posterior_at(self, sde: SDE, x: Tensor, t: float | Tensor) -> Tensor:
        """Exact ``log p_t(c | x)`` under ``sde`` for every class, ``(B, C)`` (see
        :meth:`class_log_posterior`)."""
        t = as_time(t, x)
        return self.class_log_posterior(x, sde.alpha(t), sde.sigma(t))

    def class_log_posterior_grad_at(self, sde: SDE, x: Tensor, t: float | Tensor, labels: Tensor) -> Tensor:
        """The exact classifier gradient ``∇_x log p_t(c | x) = ∇log p_t(x | c) − ∇log p_t(x)``
        (Bayes' rule; ``log p(c)`` does not depend on x) for one label per sample, shaped like x."""
        return self.score_at(sde, x, t, labels) - self.score_at(sde, x, t)

    def classifier(self, sde: SDE) -> ExactClassifier:
        """The exact noisy classifier ``(x, t, labels) -> log p_t(labels | x)`` under ``sde``, for
        :class:`~scoresde.guidance.ClassifierGuidance`."""
        self._labels()
        return ExactClassifier(self, sde)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32, labels: Tensor | None = None) -> Tensor:
        """``n`` exact draws, shape ``(n, D)``; with ``labels`` (``(n,)``) draw ``i`` is from
        ``p(x | labels[i])``."""
        return self.sample_components(n, generator, dtype, labels)[0]

    def sample_components(self, n: int, generator: torch.Generator | None = None,
                          dtype: torch.dtype = torch.float32,
                          labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`sample`'s draws (the same ones, from the same generator) and the component index
        ``(n,)`` each was drawn from."""
        if labels is None:
            k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            k = torch.multinomial(self._log_weights(labels, n, self.weights.device).exp(), 1,
                                  generator=generator)[:, 0]
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).to(dtype), k

    def _check(self, x: Tensor) -> Tensor:
        """``x`` as float64 ``(batch, D)``; any trailing shape with D elements is accepted."""
        if x.ndim < 2 or x[0].numel() != self.dim:
            raise InputError(
                f"x must have shape (batch, ...) with {self.dim} elements per sample, "
                f"got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise InputError("x must be finite")
        return x.flatten(1).to(torch.float64)

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor,
                    labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component weighted log-densities ``(B, K)`` (of ``p(x | c)`` with ``labels``),
        centred residuals and variances at noise level."""
        a = alpha.reshape(-1, 1, 1)
        s = sigma.reshape(-1, 1, 1)
        var = a * a * self.stds.to(x.device) ** 2 + s * s  # (B|1, K, D)
        diff = x[:, None, :] - a * self.means.to(x.device)  # (B, K, D)
        logn = -0.5 * (diff * diff / var + torch.log(2 * math.pi * var)).sum(-1)
        return logn + self._log_weights(labels, x.shape[0], x.device), diff, var

    def marginal_log_prob(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float,
                          labels: Tensor | None = None) -> Tensor:
        """``log p_t(x [| c])`` for the mixture diffused to mean scale ``alpha`` and noise ``sigma``."""
        x = self._check(x)
        alpha, sigma = as_time(alpha, x), as_time(sigma, x)
        logp, _, _ = self._components(x, alpha, sigma, labels)
        return torch.logsumexp(logp, dim=1)

    def marginal_score(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float,
                       labels: Tensor | None = None) -> Tensor:
        """``∇_x log p_t(x [| c])`` at mean scale ``alpha`` and noise ``sigma`` (per sample or scalar)."""
        shape, dtype = x.shape, x.dtype
        x = self._check(x)
        alpha, sigma = as_time(alpha, x), as_time(sigma, x)
        logp, diff, var = self._components(x, alpha, sigma, labels)
        r = torch.softmax(logp, dim=1)
        return (-(r[:, :, None] * diff / var).sum(1)).reshape(shape).to(dtype)

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact ``log p_0(x)`` (``log p_0(x | c)`` with ``labels``) per sample, in nats."""
        return self.marginal_log_prob(x, 1.0, 0.0, labels)

    def log_prob_at(self, sde: SDE, x: Tensor, t: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact ``log p_t(x [| c])`` under ``sde``."""
        t = as_time(t, x)
        return self.marginal_log_prob(x, sde.alpha(t), sde.sigma(t), labels)

    def score_at(self, sde: SDE, x: Tensor, t: float | Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact ``∇log p_t(x [| c])`` under ``sde``."""
        t = as_time(t, x)
        return self.marginal_score(x, sde.alpha(t), sde.sigma(t), labels)

    def score_model(self, sde: SDE, prediction: str = "score", time_input: str = "continuous",
                    conditional: bool = False) -> ScoreModel:
        """The exact marginal score as a :class:`ScoreModel` of the given kind.

        E.g. ``prediction="eps", time_input="index"`` behaves like a perfect DDPM network. With
        ``conditional=True`` the network takes the class labels as its condition
        (``sample(..., cond=labels)``) and returns the exact score of ``p_t(x | c)``.
        """
        if conditional:
            self._labels()
        net = _ExactNet(self, sde, prediction, time_input, conditional)
        return ScoreModel(net, sde, prediction, time_input)

    def condition_on(self, mask: Tensor, values: Tensor) -> GaussianMixture:
        """The exact conditional ``p_0(x_miss | x_obs = values_obs)``, a mixture over the missing
        coordinates.

        ``mask`` and ``values`` each hold D elements (any shape, read in row-major order, as
        :meth:`sample` lays a sample out); ``mask`` is 1/True where a coordinate is observed ("known",
        as in score_sde's inpainting and RePaint) and 0/False where it is missing. Entries of
        ``values`` at missing coordinates are ignored (they may be NaN). With diagonal components
        the missing coordinates are independent of the observed ones within a component, so

            p_0(x_miss | y_obs) = Σ_k w'_k N(x_miss; μ_k,miss, diag(s_k,miss²)),
            w'_k ∝ w_k · N(y_obs; μ_k,obs, diag(s_k,obs²)),

        computed in log space. Component labels are kept. A component whose reweighted weight
        underflows to 0 in float64 is dropped (it contributes nothing representable).
        """
        mask = torch.as_tensor(mask)
        values = torch.as_tensor(values, dtype=torch.float64)
        if mask.numel() != self.dim or values.numel() != self.dim:
            raise InputError(f"mask and values must have {self.dim} elements each, got shapes "
                             f"{tuple(mask.shape)} and {tuple(values.shape)}")
        obs = mask.flatten().to(torch.float64)
        if not ((obs == 0) | (obs == 1)).all():
            raise InputError(f"mask must hold 0/1 (or bools), got values {sorted(set(obs.tolist()))[:6]}")
        obs = obs.bool()
        if obs.all():
            raise InputError("mask observes every coordinate: nothing is left to condition")
        y = values.flatten()[obs]
        if not torch.isfinite(y).all():
            raise InputError("values must be finite at the observed coordinates")
        mu, s = self.means[:, obs], self.stds[:, obs]
        log_lik = -0.5 * (((y - mu) / s) ** 2 + torch.log(2 * math.pi * s * s)).sum(-1)
        w = torch.softmax(torch.log(self.weights) + log_lik, dim=0)
        keep = w > 0
        labels = None if self.labels is None else self.labels[keep]
        return GaussianMixture(self.means[keep][:, ~obs], self.stds[keep][:, ~obs], w[keep], labels)


class _ExactNet(nn.Module):
    """A "network" returning the exact ``prediction`` of a mixture's diffused marginals."""

    def __init__(self, gmm: GaussianMixture, sde: SDE, prediction: str, time_input: str,
                 conditional: bool = False):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise InputError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if time_input not in TIME_INPUTS or TIME_INPUTS[time_input].decode is None:
            raise InputError(f"the oracle needs an invertible time input, got {time_input!r}")
        self.gmm, self.sde, self.prediction, self.conditional = gmm, sde, prediction, conditional
        self.decode = TIME_INPUTS[time_input].decode

    def forward(self, x: Tensor, c: Tensor, labels: Tensor | None = None) -> Tensor:
        if (labels is not None) != self.conditional:
            raise InputError("a conditional oracle needs labels (cond=...)" if self.conditional else
                             "this oracle is unconditional; build it with conditional=True to pass labels")
        t = self.decode(c.to(torch.float64), self.sde)
        x64 = x.to(torch.float64)
        alpha = batch_coeff(self.sde.alpha(t), x64)
        sigma = batch_coeff(self.sde.sigma(t), x64)
        score = self.gmm.marginal_score(x64, alpha.flatten(), sigma.flatten(), labels)
        if self.prediction == "score":
            return score.to(x.dtype)
        pred = prediction_from_output("score", score, x64, alpha, sigma)
        return getattr(pred, self.prediction).to(x.dtype)


class ExactClassifier:
    """The mixture's exact noisy classifier: ``classifier(x, t, labels) -> log p_t(labels | x)``
    per sample (float64, differentiable in ``x``), the protocol of
    :class:`~scoresde.guidance.ClassifierGuidance`; build it with ``gmm.classifier(sde)``.

    Its autograd gradient is the exact ``∇_x log p_t(c | x)``
    (:meth:`GaussianMixture.class_log_posterior_grad_at` gives it in closed form).
    """

    def __init__(self, gmm: GaussianMixture, sde: SDE):
        self.gmm, self.sde = gmm, sde
        self.classes = torch.tensor(gmm.classes)

    def __call__(self, x: Tensor, t: float | Tensor, labels: Tensor) -> Tensor:
        labels = torch.as_tensor(labels)
        if labels.shape != (x.shape[0],) or labels.is_floating_point():
            raise InputError(f"labels must be ({x.shape[0]},) integers (one per sample), got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}")
        hit = labels.cpu()[:, None] == self.classes[None]
        if not hit.any(1).all():
            raise InputError(f"a classifier needs a class among {self.gmm.classes} for every sample, got "
                             f"{sorted(set(labels.cpu()[~hit.any(1)].tolist()))}")
        column = hit.long().argmax(1).to(x.device)
        log_post = self.gmm.class_log_posterior_at(self.sde, x, t)
        return log_post.gather(1, column[:, None])[:, 0]
