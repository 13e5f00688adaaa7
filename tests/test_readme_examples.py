"""The README's examples run as written.

Each ```python block of the sections in :data:`SECTIONS` is executed in a fresh namespace (with the
working directory a temporary folder, so an example that writes files leaves nothing behind); the
output the README shows after ``#>`` is checked against what the block prints, to the digits the
README gives, so a changed default or a changed API shows up here first. The diffusers examples
need diffusers (skipped without it).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# section heading -> how many examples it has at least
SECTIONS = {"## Guidance, inpainting and reverse variances": 3, "## Use a diffusers model": 3,
            "## Latent diffusion": 2}


def blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], re.S)


def shown_output(block: str) -> list[str]:
    """The printed output the block shows: its ``#> `` lines, without a trailing remark in brackets."""
    return [re.sub(r"\s+\(.*\)$", "", ln[3:]).rstrip() for ln in block.splitlines() if ln.startswith("#> ")]


@pytest.mark.parametrize("section", SECTIONS)
def test_the_section_has_examples(section):
    assert len(blocks(section)) >= SECTIONS[section]


@pytest.mark.parametrize("section,index", [(s, i) for s, n in SECTIONS.items() for i in range(n)])
def test_readme_example_runs_and_prints_what_it_shows(section, index, tmp_path, monkeypatch):
    block = blocks(section)[index]
    if "import diffusers" in block:
        pytest.importorskip("diffusers")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README example {index} of {section!r}", "exec"), {})
    printed = [ln.rstrip() for ln in out.getvalue().splitlines()]
    for expected in shown_output(block):
        assert any(_same(expected, got) for got in printed), (expected, printed)


def _same(expected: str, got: str) -> bool:
    """Equal text, numbers equal to the digits ``expected`` shows."""
    pattern = r"-?\d+\.?\d*"
    e_nums, g_nums = re.findall(pattern, expected), re.findall(pattern, got)
    if re.sub(pattern, "#", expected).split() != re.sub(pattern, "#", got).split()[: len(expected.split())]:
        return False
    for e, g in zip(e_nums, g_nums):
        digits = len(e.split(".")[1]) if "." in e else 0
        if round(float(g), digits) != float(e):
            return False
    return len(g_nums) >= len(e_nums)
