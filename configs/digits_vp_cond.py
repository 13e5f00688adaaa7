"""Class-conditional digits_vp (configs/digits_vp.py's recipe) for classifier-free guidance: the
U-Net takes the digit 0..9 (``model.num_classes = 10``), trained with label dropout 0.1 (the null
label, −1, stands for "no class"), and trained twice as long (6000 steps) so samples are clean."""

from pathlib import Path

from scoresde.experiment import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("digits_vp.py"))
    config.model.num_classes = 10
    config.training.label_dropout = 0.1
    config.training.steps = 6000
    return config
