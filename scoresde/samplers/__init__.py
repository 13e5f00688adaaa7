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
    ancestral,
    ddim,
    dpm_solver,
    edm,
    euler_ancestral,
    pc,
    probability_flow,
    unipc,
)
from scoresde.samplers.base import SamplerOptions, SamplerSpec, Variant

SAMPLERS: Registry[SamplerSpec] = Registry("sampler")

# Defaults (grid, t_end, denoise) are the best of a sweep over the four grids and two ends on
# the 2-D ring mixture with the exact score (benchmarks/default_grids.py, results in
# benchmarks/results/default_grids.md): the uniform grid won for every sampler at 5–20 steps.


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
    """The README's sampler table, generated from the registry: options with types and defaults,
    measured defaults and named variants (the README embeds this text verbatim; a test checks)."""
    lines = ["| sampler | options: type = default | default grid, `t_end`, `denoise` | variants |",
             "|---|---|---|---|"]
    for name in SAMPLERS:
        spec = SAMPLERS.get(name)
        options = "<br>".join(f"`{n}`: {kind.replace('|', chr(92) + '|')} = `{default!r}`"
                              for n, kind, default in spec.options.declared())
        variants_text = "<br>".join(f"{label}: `{opts}`" for label, opts in spec.variants)
        lines.append(f"| `{name}` | {options or '—'} | {spec.grid}, {spec.t_end:g}, "
                     f"{'yes' if spec.denoise else 'no'} | {variants_text} |")
    return "\n".join(lines)


register(ancestral.SPEC)
register(ddim.SPEC)
register(pc.SPEC)
register(probability_flow.SPEC)
register(dpm_solver.SPEC)
register(unipc.SPEC)
register(edm.SPEC)
register(euler_ancestral.SPEC)

__all__ = ["SAMPLERS", "SamplerOptions", "SamplerSpec", "Variant", "available", "get", "markdown_table",
           "register", "variants"]
