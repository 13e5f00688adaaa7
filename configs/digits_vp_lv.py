"""digits_vp (configs/digits_vp.py) with a learned variance (Nichol & Dhariwal 2021): exactly its
recipe — data, DDPM table, U-Net, 3000 steps, seeds, learning rate, batch — but the U-Net also
outputs the variance interpolation v (``model.learned_variance``) and trains on the hybrid loss
L_simple + 1e-3·L_vlb, so the two models compare at equal training."""

from pathlib import Path

from scoresde.experiment import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("digits_vp.py"))
    config.model.learned_variance = True
    config.training.loss = "hybrid"
    config.training.vlb_weight = 1e-3
    return config
