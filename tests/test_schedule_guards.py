"""Guard rails on schedules: bad parameters are errors naming the value, and a schedule that does
not reach its prior warns, stating alpha(T), sigma(T) and the prior.

The warning threshold is ``sd.sde.PRIOR_KL_LIMIT`` = 0.005 nats per dimension of
``KL(p_T ‖ prior)`` for unit-scale data (reasoned in scoresde/sde.py: below the 0.01 bits/dim that
likelihoods are reported to). Every SDE the library builds by default, and every shipped config and
model, must stay below it; a VESDE never warns when built (its prior depends on the data's scale,
see ``VESDE``), and ``prior_kl(data_rms)`` states the mismatch for a given scale.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde import assets, experiment
from scoresde.errors import InputError, InputTypeError, InputWarning
from scoresde.interop import diffusers_betas
from scoresde.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule

F64 = torch.float64
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))

DEFAULT_SDES = {
    "vp-linear": lambda: sd.VPSDE(),
    "subvp": lambda: sd.SubVPSDE(),
    "vp-cosine": lambda: sd.VPSDE.cosine(),
    "vp-cosine continuous": lambda: sd.VPSDE.cosine(N=None),
    "ddpm linear table": lambda: sd.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=F64)),
    "clipped cosine table": lambda: sd.VPSDE.from_betas(
        diffusers_betas({"beta_schedule": "squaredcos_cap_v2"})),
    "stable diffusion table": lambda: sd.VPSDE.from_betas(diffusers_betas(
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})),
    "linear schedule discretised": lambda: sd.VPSDE.from_betas(sd.VPSDE().discrete_betas),
    "ve": lambda: sd.VESDE(),
}


@pytest.mark.parametrize("build,name,value", [
    (lambda v: sd.VPSDE(beta_min=v), "beta_min", math.nan),
    (lambda v: sd.VPSDE(beta_max=v), "beta_max", math.inf),
    (lambda v: sd.SubVPSDE(beta_max=v), "beta_max", math.nan),
    (lambda v: sd.VESDE(sigma_max=v), "sigma_max", math.inf),
    (lambda v: sd.VESDE(sigma_min=v), "sigma_min", math.nan),
    (lambda v: sd.VESDE(sigma_min=v), "sigma_min", -math.inf),
    (lambda v: CosineSchedule(s=v), "s", math.inf),
    (lambda v: CosineSchedule(t_max=v), "t_max", math.nan),
    (lambda v: LinearSchedule(v, 20.0), "beta_min", torch.tensor(math.inf)),
])
def test_non_finite_schedule_parameters_are_errors_naming_them(build, name, value) -> None:
    with pytest.raises(InputError, match=rf"{name} must be finite, got -?(nan|inf)"):
        build(value)


@pytest.mark.parametrize("value", ["20", True, [20.0], 1j])
def test_non_numeric_schedule_parameters_are_type_errors(value) -> None:
    with pytest.raises(InputTypeError, match=r"beta_max must be a real number, got"):
        sd.VPSDE(beta_max=value)
    with pytest.raises(InputTypeError, match=r"sigma_max must be a real number, got"):
        sd.VESDE(sigma_max=value)


def test_numpy_and_tensor_scalars_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    assert sd.VPSDE(np.float32(0.5), torch.tensor(10.0)).schedule.beta_max == 10.0
    assert sd.VESDE(np.float64(0.1), 5).sigma_max == 5.0


@pytest.mark.parametrize("index,value", [(0, 0.0), (17, -1e-3), (999, 1.0), (500, math.nan), (3, math.inf)])
def test_beta_tables_outside_0_1_are_errors_naming_the_entry(index: int, value: float) -> None:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    betas[index] = value
    with pytest.raises(InputError, match=rf"betas\[{index}\] = {value!r}"):
        sd.VPSDE.from_betas(betas)


def test_a_beta_that_does_not_move_log_alpha_bar_is_an_error() -> None:
    """β = 1e-300 after β's of 1e-4 leaves log ᾱ unchanged in float64: the noise level would not
    increase over that step, and t(ᾱ) would divide by zero there."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    betas[40] = 1e-300
    with pytest.raises(InputError, match=r"betas\[40\] = 1e-300 does not decrease log ᾱ"):
        DiscreteSchedule(betas)


def test_a_schedule_that_does_not_reach_its_prior_warns_with_its_numbers() -> None:
    """VPSDE(1e-4, 1e-3): log ᾱ(1) = −5.5e-4, so alpha(T) = 0.9997 and sigma(T) = 0.02345; the
    per-dimension KL for unit data is −½ log(1 − ᾱ) = ½·log(1/5.5e-4) = 3.75 nats."""
    with pytest.warns(InputWarning) as caught:
        sde = sd.VPSDE(1e-4, 1e-3)
    (w,) = caught
    text = str(w.message)
    assert "does not reach its prior" in text
    assert "alpha(T) = 0.9997, sigma(T) = 0.02345" in text
    assert "the prior N(0, 1²·I)" in text
    assert "3.75 nats per dimension" in text
    assert sde.prior_kl() == pytest.approx(-0.5 * math.log(-math.expm1(-5.5e-4)), rel=1e-12)
    # The warning points at the caller's line, not at the library.
    assert Path(w.filename).name == "test_schedule_guards.py"
    with pytest.warns(InputWarning, match=r"SubVPSDE.*alpha\(T\) = 0\.9997"):
        sd.SubVPSDE(1e-4, 1e-3)
    with pytest.warns(InputWarning, match=r"DiscreteSchedule\(N=10\).*does not reach its prior"):
        sd.VPSDE.from_betas(torch.full((10,), 0.01, dtype=F64))


def test_the_warning_threshold_sits_where_the_reasoning_puts_it() -> None:
    """For VP the KL is −½ log(1 − alpha(T)²): the limit 0.005 is alpha(T) = 0.0998. A linear
    schedule just inside it does not warn, one just outside does (beta_max found by bisection)."""
    limit = sd.sde.PRIOR_KL_LIMIT
    alpha_limit = math.sqrt(-math.expm1(-2 * limit))
    assert alpha_limit == pytest.approx(0.0998, abs=1e-4)
    # log ᾱ(1) = −β_min − (β_max − β_min)/2  =>  β_max for a given alpha(T) with β_min = 0.1.
    beta_max = 2 * (-2 * math.log(alpha_limit) - 0.1) + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd.VPSDE(0.1, beta_max * 1.001)
    with pytest.warns(InputWarning):
        sd.VPSDE(0.1, beta_max * 0.999)


@pytest.mark.parametrize("name", DEFAULT_SDES)
def test_the_library_default_sdes_do_not_warn(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sde = DEFAULT_SDES[name]()
    assert sde.prior_kl() < sd.sde.PRIOR_KL_LIMIT


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_do_not_warn(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment.build_sde(experiment.load_config_file(path))


@pytest.mark.parametrize("name", assets.SHIPPED)
def test_shipped_models_do_not_warn(name: str) -> None:
    config = experiment.config_from_checkpoint(assets.shipped_model(name))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment.build_sde(config)


def test_ve_prior_mismatch_is_stated_for_a_given_data_scale() -> None:
    """VE: alpha = 1 and sigma(T) = σ_max = the prior's std, so KL = data_rms²/(2σ_max²) per
    dimension: 2e-4 for unit data and σ_max = 50; digits_ve's σ_max = 8 with pixel RMS ≤ 1 gives at
    most 7.8e-3, which is why a VESDE does not judge its prior on its own (it does not warn)."""
    assert sd.VESDE().prior_kl() == pytest.approx(1 / (2 * 50.0**2), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ve = sd.VESDE(0.01, 8.0)
    assert ve.prior_kl() == pytest.approx(1 / 128, rel=1e-9)
    assert ve.prior_kl(data_rms=0.5) == pytest.approx(0.25 / 128, rel=1e-9)
    assert sd.VESDE(0.01, 2.0).prior_kl(data_rms=1.0) > sd.sde.PRIOR_KL_LIMIT
