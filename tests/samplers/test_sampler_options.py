"""Sampler options are declared once per sampler; everything else reads the declaration.

Over the whole registry: a misspelt or unknown option is an error naming the valid ones, a value
of the wrong type is an error naming the type, every declared variant parses, ``stochastic`` and
``uses_grid`` follow from the options, and a sampler receives its grid's float64 table.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import scoresde as sd
from scoresde.grids import GridTable
from scoresde.registry import Registry
from scoresde.samplers.base import SamplerOptions, SamplerSpec
from scoresde.samplers.pc import CORRECTORS, PREDICTORS

MODEL = sd.GaussianMixture(torch.tensor([[0.0, 0.0]]), torch.tensor([1.0])).score_model(sd.VPSDE(), "eps")
NAMES = sd.samplers.available()


def _misspell(name: str) -> str:
    return name[:-1] + name[-1] * 2  # eta -> etaa, method -> methodd


@pytest.mark.parametrize("name", NAMES)
def test_misspelt_option_names_the_valid_ones(name):
    spec = sd.samplers.get(name)
    declared = [f.name for f in dataclasses.fields(spec.options)]
    for wrong in [_misspell(n) for n in declared] + ["not_an_option"]:
        with pytest.raises(ValueError, match=rf"sampler '{name}' has no option '{wrong}'") as err:
            sd.sample(MODEL, (2, 2), name, 3, generator=torch.Generator().manual_seed(0), **{wrong: 1})
        for valid in declared:  # the message lists every valid option with its type and default
            assert f"{valid}: " in str(err.value)
        if wrong != "not_an_option":
            assert "did you mean" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_option_types_are_refused(name):
    spec = sd.samplers.get(name)
    for field_name, _kind, default in spec.options.declared():
        bad = [1.5] if isinstance(default, str) else ["abc"]
        if isinstance(default, float):
            bad.append(True)  # a bool is not a number here
        for value in bad:
            with pytest.raises(ValueError, match=rf"option '{field_name}' must be"):
                spec.parse({field_name: value})


@pytest.mark.parametrize("variant", sd.samplers.variants(), ids=lambda v: v.label)
def test_variants_parse_and_run(variant):
    spec = sd.samplers.get(variant.sampler)
    options = spec.parse(variant.options)
    assert isinstance(options, spec.options)
    out = sd.sample(MODEL, (3, 2), variant.sampler, 4 if options.uses_grid else None,
                    generator=torch.Generator().manual_seed(0), **variant.options)
    assert torch.isfinite(out.x).all()


def test_variant_table():
    every = sd.samplers.variants()
    main = sd.samplers.variants(main_only=True)
    assert [v.sampler for v in main] == sd.samplers.SAMPLERS.names()  # one main variant per sampler
    assert all(v in every for v in main)
    labels = [v.label for v in every]
    assert len(set(labels)) == len(labels)


def test_properties_follow_from_the_options():
    get = sd.samplers.get
    assert not get("ddim").parse({}).stochastic and get("ddim").parse({"eta": 0.5}).stochastic
    assert get("ode").parse({"method": "heun"}).uses_grid
    assert not get("ode").parse({"method": "dopri5"}).uses_grid
    assert get("ancestral").parse({}).stochastic and get("pc").parse({}).stochastic
    assert get("ddim").parse({"eta": 1}).eta == 1.0 and isinstance(get("ddim").parse({"eta": 1}).eta, float)


def test_options_are_frozen_and_objects_are_accepted():
    spec = sd.samplers.get("ddim")
    options = spec.parse({"eta": 0.3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.eta = 0.5
    assert spec.parse(options) is options
    with pytest.raises(TypeError, match="takes DDIMOptions"):
        spec.parse(sd.samplers.get("ode").parse({}))


def test_registries_refuse_duplicates_and_name_the_known():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="a thing named 'alpha' is already registered"):
        reg.register("alpha", 2)
    match = r"unknown thing 'alpah' \(did you mean 'alpha'\?\); available: alpha"
    with pytest.raises(ValueError, match=match):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        sd.samplers.register(sd.samplers.get("ddim"))
    assert "langevin" in CORRECTORS and "reverse_diffusion" in PREDICTORS


def test_a_new_sampler_is_one_spec():
    """A sampler defined outside the package plugs in through its spec alone."""

    @dataclasses.dataclass(frozen=True)
    class HoldOptions(SamplerOptions):
        scale: float = 1.0

        @property
        def stochastic(self) -> bool:
            return False

    seen = {}

    def hold(model, x, grid, noise, options, callback=None):
        seen["table"] = grid
        for i in range(grid.steps):
            model.predict(x, grid.t[i])
        return options.scale * x

    spec = SamplerSpec("hold", hold, HoldOptions)
    x_T = torch.ones(2, 2)
    out = sd.sample(MODEL, (2, 2), spec, 5, x_T=x_T, scale=2.0)
    assert out.nfe == 5 and torch.equal(out.x, 2 * x_T)
    table = seen["table"]
    assert isinstance(table, GridTable) and table.t.dtype == torch.float64
    sde = MODEL.sde
    for field_name in ("alpha", "sigma", "log_snr", "sigma_bar"):  # precomputed once, float64
        assert torch.equal(getattr(table, field_name), getattr(sde, field_name)(table.t))
    with pytest.raises(ValueError, match="no option 'scal'"):
        sd.sample(MODEL, (2, 2), spec, 5, x_T=x_T, scal=2.0)


def test_readme_sampler_table_is_generated_from_the_declarations():
    """The README embeds ``sd.samplers.markdown_table()`` verbatim; regenerate it when a
    sampler, an option or a default changes."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert sd.samplers.markdown_table() in readme
