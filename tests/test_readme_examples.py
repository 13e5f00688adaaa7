"""The README's examples of guidance, inpainting and reverse variances run as written.

Each ```python block of the section "Guidance, inpainting and reverse variances" is executed in a
fresh namespace; the output the README shows after ``#>`` is checked against what the block prints, to the
digits the README gives, so a changed default or a changed API shows up here first.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Guidance, inpainting and reverse variances"


def blocks() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def shown_output(block: str) -> list[str]:
    """The printed output the block shows: its ``#> `` lines, without a trailing remark in brackets."""
    return [re.sub(r"\s+\(.*\)$", "", ln[3:]).rstrip() for ln in block.splitlines() if ln.startswith("#> ")]


def test_the_section_has_examples():
    assert len(blocks()) >= 3


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs_and_prints_what_it_shows(index):
    block = blocks()[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README example {index}", "exec"), {})
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
