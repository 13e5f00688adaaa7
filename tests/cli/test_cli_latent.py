"""The shipped latent-diffusion model through the command line: ``sample`` runs in the latent shape and
writes decoded digits; ``likelihood`` reports the latent-space NLL in nats and no bits/dim (a latent
model has no density of the pixels); ``inpaint`` refuses a latent model (a data mask means nothing on
latents).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cli import assert_png, number_after, ok, scoresde

import scoresde as sd
from scoresde import assets, experiment


def test_sample_decodes_the_latents(tmp_path):
    out = ok(scoresde("sample", "--model_dir=digits_latent", f"--workdir={tmp_path}", "--sampler=dpm_solver",
                      "--steps=5", "--n=4", cwd=tmp_path))
    assert "NFE 5" in out
    arrays = np.load(tmp_path / "samples.npz")
    assert arrays["x"].shape == (4, 1, 8, 8) and arrays["pixels"].max() <= 16
    assert_png(tmp_path / "samples.png")


def test_likelihood_is_latent_and_labelled(tmp_path):
    out = ok(scoresde("likelihood", "--model_dir=digits_latent", f"--workdir={tmp_path}", "--n=4",
                      cwd=tmp_path))
    assert "latent-space NLL" in out and "d = 32" in out and "bits/dim:" not in out
    assert np.isfinite(number_after("latent-space NLL:", out))
    assert str(np.load(tmp_path / "latent_likelihood.npz")["space"]) == "latent"


def test_inpaint_refuses_a_latent_model():
    ldm = experiment.load_trained(None, assets.shipped_model("digits_latent"))
    y = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="latent model's state is its autoencoder's latents"):
        sd.inpaint(ldm, y, torch.ones(1, 1, 8, 8, dtype=torch.bool), method="replace", steps=2,
                   generator=torch.Generator().manual_seed(0))
