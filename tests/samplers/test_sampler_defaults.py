"""Every sampler's defaults give sane samples on every SDE and schedule the library constructs.

Every registered variant (``sd.samplers.variants()``) runs with its default grid, ends and
options — 20 steps for the fixed-step ones, its own steps for the adaptive ones — on the linear
VP, sub-VP, continuous cosine VP, DDPM's linear β table, the clipped cosine β table (σ̄(T) = 2·10⁴,
where default grids start at σ̄ = 160: scoresde.grids.default_t_start) and VE, with the exact score
of a 2-D mixture of two modes (means ±(2, 1), std 0.3, equal weights). The samples must be finite,
and their mean and mean |x| per coordinate must lie within a band of the truth:

* sample noise: n = 400 samples; the coordinates' stds are 2.02 and 1.04 (SE of the mean 0.10,
  0.052) and those of |x| are 0.30 (SE 0.015); 4 SE each;
* discretisation: 0.15 on mean |x| (7.5 % of |x₁| = 2; measured worst over this matrix 0.11, the
  adaptive SDE solver on VE, whose error is its tolerance's; 0.09 for the fixed-step samplers) and
  nothing on the mean, which the symmetric mixture keeps at 0 for a sampler that treats both modes
  alike (measured worst 2.2 SE).

With the defaults before this test (the noise-form singlestep DPM-Solvers on the quadratic grid,
every grid from T), it fails: mean |x| off by 86 (dpm-solver 2S) and 9·10⁴ (3S) on the clipped
cosine table and by 5.3 (3S) on the continuous cosine schedule.
"""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.interop import diffusers_betas

F64 = torch.float64
N_SAMPLES = 400
STEPS = 20
MIXTURE = sd.GaussianMixture(torch.tensor([[-2.0, -1.0], [2.0, 1.0]], dtype=F64),
                             torch.tensor([0.3, 0.3], dtype=F64), torch.tensor([0.5, 0.5], dtype=F64))
SDES = {
    "vp-linear": lambda: sd.VPSDE(),
    "subvp": lambda: sd.SubVPSDE(),
    "vp-cosine": lambda: sd.VPSDE.cosine(),
    "ddpm-linear-table": lambda: sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=F64)),
    "clipped-cosine-table": lambda: sd.VPSDE.from_betas(
        diffusers_betas({"beta_schedule": "squaredcos_cap_v2"})),
    "ve": lambda: sd.VESDE(),
}
DISCRETISATION = 0.15


def truth() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, mean |x|, and the per-coordinate stds of x and |x| (from 10⁶ exact draws: their own SE
    is 2e-3 at most, negligible next to the band)."""
    x = MIXTURE.sample(10**6, generator=torch.Generator().manual_seed(123))
    return x.mean(0), x.abs().mean(0), x.std(0), x.abs().std(0)


@pytest.mark.parametrize("sde_name", SDES)
def test_every_sampler_default_is_sane_on_every_schedule(sde_name: str) -> None:
    sde = SDES[sde_name]()
    model = MIXTURE.score_model(sde, prediction="eps")
    mean, mean_abs, std, std_abs = truth()
    se = 4 / N_SAMPLES**0.5
    failures = []
    for v in sd.samplers.variants():
        opts = sd.samplers.get(v.sampler).parse(v.options)
        steps = {"steps": STEPS} if opts.uses_grid else {}
        x = sd.sample(model, (N_SAMPLES, 2), sampler=v.sampler, generator=torch.Generator().manual_seed(0),
                      dtype=F64, **steps, **v.options).x
        if not torch.isfinite(x).all():
            failures.append(f"{v.label}: non-finite samples")
            continue
        d_mean = (x.mean(0) - mean).abs()
        d_abs = (x.abs().mean(0) - mean_abs).abs()
        if (d_mean > se * std).any() or (d_abs > se * std_abs + DISCRETISATION).any():
            failures.append(f"{v.label}: mean {x.mean(0).tolist()} (truth {mean.tolist()}), "
                            f"mean |x| {x.abs().mean(0).tolist()} (truth {mean_abs.tolist()})")
    assert not failures, f"{sde_name}:\n" + "\n".join(failures)
