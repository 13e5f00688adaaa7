"""Where randomness comes from: the generator is always passed in, never global.

A sampler draws Gaussian noise through a :class:`NoiseSource`:

* a plain ``torch.Generator`` (wrapped in :class:`GeneratorNoise`): fast; the draws of one
  sample depend on the batch it was in;
* :class:`PerSampleNoise`: one stream per sample, seeded from ``(seed, offset + i)``, so
  sample ``i`` depends only on the seed and ``i``. A run split into batches (or processes,
  each with its own ``offset``) reproduces a single-batch run exactly.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from scoresde.checks import check_int
from scoresde.errors import InputTypeError


@runtime_checkable
class NoiseSource(Protocol):
    def randn(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """Standard normal draws of ``shape`` (its first axis is the batch)."""


class GeneratorNoise:
    """Draw from one ``torch.Generator`` for the whole batch."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        z = torch.randn(shape, generator=self.generator, dtype=dtype,
                        device=self.generator.device)
        return z.to(device)


class PerSampleNoise:
    """Batch-size-invariant noise: sample ``i`` of a batch draws from stream ``offset + i``.

    Stream seeds come from ``numpy.random.SeedSequence([seed, index])``, so neighbouring
    indices get unrelated streams. Costs one small draw per sample per step.
    """

    def __init__(self, seed: int, offset: int = 0, device: torch.device | str = "cpu"):
        self.seed, self.offset = check_int(seed, "seed", 0), check_int(offset, "offset", 0)
        self.device = torch.device(device)
        self._streams: list[torch.Generator] = []

    def _stream(self, i: int) -> torch.Generator:
        while len(self._streams) <= i:
            index = self.offset + len(self._streams)
            seed = int(np.random.SeedSequence([self.seed, index]).generate_state(1, np.uint64)[0])
            self._streams.append(torch.Generator(self.device).manual_seed(seed))
        return self._streams[i]

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        rows = [torch.randn(shape[1:], generator=self._stream(i), dtype=dtype, device=self.device)
                for i in range(shape[0])]
        return torch.stack(rows).to(device)


def as_noise(generator: torch.Generator | NoiseSource | None) -> NoiseSource:
    """Accept a ``torch.Generator`` or a :class:`NoiseSource`; refuse ``None``."""
    if isinstance(generator, torch.Generator):
        return GeneratorNoise(generator)
    if isinstance(generator, NoiseSource):
        return generator
    raise InputTypeError(
        "a random generator must be passed in: a torch.Generator (e.g. "
        "torch.Generator().manual_seed(0)) or scoresde.PerSampleNoise(seed); "
        f"got {type(generator).__name__}"
    )
