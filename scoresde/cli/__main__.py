"""``python -m scoresde.cli``."""

from scoresde.cli import run

run()
