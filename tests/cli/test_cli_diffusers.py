"""``--model_dir`` pointing at local diffusers folders, and ``export --export_format=diffusers``, end to end
in subprocesses: a pipeline folder of a tiny random UNet2DModel is sampled; with ``--config``'s digits data
it is reconstructed; without data the data-needing modes say so in one line; a pipeline folder with a
``vae/`` samples decoded images; a scoresde config on the ``diffusers_unet2d`` network trains, exports to
a diffusers folder and samples from it; a UNet2DConditionModel folder is refused with a pointer to the
Python API.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import REPO, assert_png, ok, scoresde

import scoresde as sd
from scoresde.cli import common as cli
from scoresde.config import default_config
from scoresde.experiment import load_config_file
from scoresde.train import train

diffusers = pytest.importorskip("diffusers")

DIGITS = str(REPO / "configs" / "digits_vp.py")
TINY_UNET = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A DDIMPipeline folder: a random 1-channel 8×8 UNet2DModel (the digits' shape) and its scheduler."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, **TINY_UNET)
    folder = tmp_path_factory.mktemp("diffusers") / "pipeline"
    diffusers.DDIMPipeline(unet, diffusers.DDIMScheduler(clip_sample=False)).save_pretrained(folder)
    return folder


def test_sample_a_diffusers_pipeline_folder(pipeline, tmp_path):
    out = ok(scoresde("sample", f"--model_dir={pipeline}", f"--workdir={tmp_path}", "--sampler=dpm_solver",
                      "--steps=3", "--n=4", cwd=tmp_path))
    assert "NFE 3" in out
    arrays = np.load(tmp_path / "samples.npz")
    assert arrays["x"].shape == (4, 1, 8, 8) and np.isfinite(arrays["x"]).all()
    assert arrays["pixels"].max() <= 255  # diffusers' convention: 8-bit images on [-1, 1]
    assert_png(tmp_path / "samples.png")


def test_reconstruct_needs_data_and_takes_it_from_config(pipeline, tmp_path):
    """Without --config a diffusers model has no data set (sample/bench only); --config's data must have
    the model's shape (checked in-process: the same functions the modes call); with the digits config
    ``reconstruct`` runs end to end."""
    model = sd.load_diffusers(pipeline)
    bare = default_config()
    bare.data.name = ""
    assert cli.data_spec(model, bare).shape == (1, 8, 8)
    with pytest.raises(cli.FlagError, match="pass --config=FILE whose data group names the images"):
        cli.test_split(bare, 2)
    with pytest.raises(cli.FlagError, match=r"does not fit the model.*\(1, 8, 8\)"):
        cli.data_spec(model, load_config_file(REPO / "configs" / "tiny_gmm2d.py"))
    out = ok(scoresde("reconstruct", f"--model_dir={pipeline}", f"--workdir={tmp_path}", "--steps=3", "--n=2",
                      f"--config={DIGITS}", cwd=tmp_path))
    assert "2 test points of digits" in out
    assert np.load(tmp_path / "reconstruct.npz")["x_rec"].shape == (2, 1, 8, 8)


def test_sample_a_latent_pipeline_folder(tmp_path):
    """With ``vae/`` (Stable Diffusion's layout) the folder is a latent model: 4×4×4 latents decoded to
    3×8×8 images."""
    torch.manual_seed(0)
    folder = tmp_path / "ldm"
    diffusers.UNet2DModel(sample_size=4, in_channels=4, out_channels=4, **TINY_UNET).save_pretrained(
        folder / "unet", safe_serialization=True)
    diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                            layers_per_block=1, latent_channels=4, norm_num_groups=4,
                            sample_size=8).save_pretrained(folder / "vae", safe_serialization=True)
    diffusers.DDIMScheduler(clip_sample=False).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline"}))
    ok(scoresde("sample", f"--model_dir={folder}", f"--workdir={tmp_path}", "--sampler=ddim", "--steps=2",
                "--n=2", cwd=tmp_path))
    assert np.load(tmp_path / "samples.npz")["x"].shape == (2, 3, 8, 8)


def test_train_export_diffusers_and_sample_the_folder(tmp_path):
    """A scoresde experiment on the diffusers_unet2d network: trained 2 steps (in-process), exported by
    ``scoresde export --export_format=diffusers`` as a pipeline folder (DDIMPipeline), sampled back
    through --model_dir."""
    config = tmp_path / "digits_diffusers.py"
    config.write_text(f'''
from ml_collections import ConfigDict
from scoresde.experiment import load_config_file


def get_config():
    config = load_config_file({DIGITS!r})
    config.model.network = ConfigDict({{
        "name": "diffusers_unet2d", "sample_size": 8, "in_channels": 1, "block_out_channels": (16, 32),
        "layers_per_block": 1, "norm_num_groups": 8, "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D")}})
    config.training.steps = 2
    config.training.batch_size = 8
    return config
''')
    run, exported = tmp_path / "run", tmp_path / "exported"
    train(load_config_file(config), run, progress=False, log=lambda _: None)
    out = ok(scoresde("export", f"--config={config}", f"--workdir={run}", "--export_format=diffusers",
                      f"--out={exported}", cwd=tmp_path))
    assert "diffusers pipeline folder" in out
    assert json.loads((exported / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
    ok(scoresde("sample", f"--model_dir={exported}", f"--workdir={tmp_path}", "--steps=2", "--n=2",
                cwd=tmp_path))
    assert np.load(tmp_path / "samples.npz")["x"].shape == (2, 1, 8, 8)


def test_a_conditional_unet_folder_points_to_the_python_api(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "cond"
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4).save_pretrained(folder / "unet", safe_serialization=True)
    diffusers.DDIMScheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert cli.is_diffusers_folder(folder)
    with pytest.raises(cli.FlagError, match=r"UNet2DConditionModel.*sd\.sample\(model, shape, cond="):
        cli.load_diffusers_folder(folder)
