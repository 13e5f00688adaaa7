"""Samplers behind a registry. Adding one = one file (a function, its options dataclass and a
``SPEC``) + one ``register`` line below + tests.

``available()`` lists the names, ``get(name)`` returns the :class:`SamplerSpec` (whose
``parse(options)`` validates keyword options) and ``variants()`` the named configurations that
the demo, ``scoresde bench`` and the benchmarks run. :func:`scoresde.sample` accepts a name or a
spec.
"""

from __future__ import annotations

from scoresde.registry import Registry
from scoresde.samplers import (
    adaptive_sde,
    ancestral,
    ddim,
    dpm_adaptive,
    dpm_solver,
    dpm_solver_sde,
    dpm_solver_singlestep,
    edm,
    euler_ancestral,
    lms,
    pc,
    probability_flow,
    unipc,
)
from scoresde.samplers.base import SamplerOptions, SamplerSpec, Variant

SAMPLERS: Registry[SamplerSpec] = Registry("sampler")

# Defaults (grid, t_end, denoise) are the best of a sweep over six grids and two ends on three
# hard problems — the narrow 2-D ring and the 64-D mixture (exact oracles, 5/10/20 NFE) and the
# shipped digits model (FD, 10 NFE) — scored by the geometric mean of each setting's quality
# relative to the best setting per cell (benchmarks/default_grids.py, results in
# benchmarks/results/default_grids.md): the quadratic grid to t = 0 won for every sampler but
# the Heun-type ones (ode, edm), whose best is the log-SNR grid to t = 0. The sweep is on VP; on a
# VE SDE (time geometric in σ) the quadratic samplers keep the uniform grid (= log-SNR uniform
# there), which the VE tests need: quadratic in t crowds VE's steps at σ ≈ σ_min.


def register(spec: SamplerSpec) -> SamplerSpec:
    """Register ``spec`` under ``spec.name``; a duplicate name is an error."""
    return SAMPLERS.register(spec.name, spec)


def available() -> list[str]:
    """Names of the registered samplers, sorted."""
    return sorted(SAMPLERS.names())


def get(name: str) -> SamplerSpec:
    """The spec registered as ``name``; an unknown name is an error listing the available ones."""
    return SAMPLERS.get(name)


def variants(main_only: bool = False) -> list[Variant]:
    """The named sampler configurations, sampler by sampler in registration order; each
    sampler's first variant is its main one (``main_only=True`` returns just those)."""
    out = []
    for name in SAMPLERS:
        found = SAMPLERS.get(name).variant_list()
        out += found[:1] if main_only else found
    return out


def markdown_table() -> str:
    """The README's sampler table, generated from the registry: the method and its paper, order,
    NFE, options with types and defaults, measured defaults and named variants (the README embeds
    this text verbatim; a test checks)."""
    lines = ["| sampler | implements | order | NFE | options: type = default | default grid, `t_end`, "
             "`denoise` | variants |",
             "|---|---|---|---|---|---|---|"]
    for name in SAMPLERS:
        spec = SAMPLERS.get(name)
        options = "<br>".join(f"`{n}`: {kind.replace('|', chr(92) + '|')} = `{default!r}`"
                              for n, kind, default in spec.options.declared())
        variants_text = "<br>".join(f"{label}: `{opts}`" for label, opts in spec.variants)
        grid = spec.grid if spec.grid_geometric is None else f"{spec.grid} (VE: {spec.grid_geometric})"
        own = [f"{label}: {spec.parse(opts).default_grid}" for label, opts in spec.variants
               if spec.parse(opts).default_grid is not None]
        grid += f" ({'; '.join(own)})" if own else ""
        ends = f"{grid}, {spec.t_end:g}, {'yes' if spec.denoise else 'no'}"
        if spec.adaptive_ends is not None:
            t_end, denoise = spec.adaptive_ends
            ends += f" (adaptive: {t_end:g}, {'yes' if denoise else 'no'})"
        lines.append(f"| `{name}` | {spec.paper or '—'} | {spec.order} | {spec.nfe} | {options or '—'} | "
                     f"{ends} | {variants_text} |")
    return "\n".join(lines)


# Registration order is the order of the tables (README, demo, benchmarks): the classics, then the
# fast deterministic solvers, then the fast stochastic ones, adaptive solvers last in each group.
register(ancestral.SPEC)
register(ddim.SPEC)
register(pc.SPEC)
register(probability_flow.SPEC)
register(dpm_solver.SPEC)
register(dpm_solver_singlestep.SPEC)
register(unipc.SPEC)
register(lms.SPEC)
register(edm.SPEC)
register(dpm_adaptive.SPEC)
register(euler_ancestral.SPEC)
register(dpm_solver_sde.SPEC)
register(adaptive_sde.SPEC)

__all__ = ["SAMPLERS", "SamplerOptions", "SamplerSpec", "Variant", "available", "get", "markdown_table",
           "register", "variants"]
