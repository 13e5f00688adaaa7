"""diffusers interop (scoresde.interop): diffusers UNets loaded as ScoreModels, sampled by our samplers
and compared with diffusers' own pipelines and schedulers; export and reload; the β tables.

Precision: diffusers holds β, ᾱ and the step coefficients in float32, we in float64; the states are
float32 in both. So the two runs agree to float32 rounding (ε = 1.2e-7) of the schedule (diffusers'
ᾱ drifts by up to 1e-6 relative on these tables, see the β test) and of the state, over 5–10 steps,
passed through a network whose gain we do not control (random weights). With random weights an
eps-network's x0 is far from a trained one's and the states grow to |x| ~ 200–1700, so errors are
compared relative to the state's size: the bar is ``REL·(1 + max|x|)`` with ``REL = 1.5e-5`` (about
128 ulps), 5× the worst case measured, 3.1e-6 (DDIM with x0-prediction, whose ``eps = (x − α·x0)/σ``
amplifies the rounding on the last steps; eps and v: ≤ 5.6e-7; DPM-Solver ≤ 4.2e-7; ancestral
1.1e-6). Classifier-free guidance multiplies the branches' rounding by ``guidance_scale``, so its bar
is ``guidance_scale`` times that (measured 1.3e-6 before the factor). Every equality test carries a
negative check (a wrong grid, order, prediction type or guidance) that misses its bar by > 100×
(measured ≥ 660×).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.config import default_config
from scoresde.experiment import build_model
from scoresde.grids import from_indices
from scoresde.interop import DiffusersUNet, diffusers_betas, export_diffusers, load_diffusers, scheduler_times
from scoresde.samplers.steps import Step, step_noise_std

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64
REL = 1.5e-5
SHAPE = (3, 2, 8, 8)
UNET2D = dict(sample_size=8, in_channels=2, block_out_channels=(16, 32), layers_per_block=1,
              norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
DDPM_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)


def bar(reference: torch.Tensor, factor: float = 1.0) -> float:
    return factor * REL * (1.0 + reference.abs().max().item())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def tiny_unet2d(out_channels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(out_channels=out_channels, **UNET2D)


@pytest.fixture(scope="module")
def unet2d():
    return tiny_unet2d()


def save(folder, unet, scheduler):
    """A diffusers UNet folder with its scheduler config beside it."""
    unet.save_pretrained(folder, safe_serialization=True)
    scheduler.save_pretrained(folder)
    return folder


def ddim_loop(unet, scheduler, x):
    """diffusers' DDIM denoising loop without the pipeline's post-processing."""
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "trained_betas": {"trained_betas": torch.linspace(2e-4, 0.03, 1000).tolist()},
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_equals_ddim_pipeline(tmp_path, unet2d, prediction_type, schedule):
    """Our DDIM on the loaded model equals ``DDIMPipeline(unet, scheduler)`` (η = 0, 10 steps) on the
    scheduler's timesteps from the pipeline's start noise: after the pipeline's post-processing
    ``(x/2 + 0.5).clamp(0, 1)`` (as a tensor and as NHWC numpy) and before it (the raw diffusers loop).
    Bar ``REL·(1 + max|x|)`` (module docstring; measured ≤ 3.1e-6 relative). Negative checks: the
    grid one step index off, and the output read as another prediction type, miss the bar by > 100×."""
    scheduler = diffusers.DDIMScheduler(clip_sample=False, prediction_type=prediction_type,
                                        **SCHEDULES[schedule])
    folder = save(tmp_path / "unet", unet2d, scheduler)
    model = load_diffusers(folder)
    assert model.prediction == {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction_type]
    pipe = diffusers.DDIMPipeline(diffusers.UNet2DModel.from_pretrained(folder),
                                  diffusers.DDIMScheduler.from_pretrained(folder))
    pipe.set_progress_bar_config(disable=True)
    steps = 10
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                  eta=0.0, output_type="pt").images
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))  # the pipeline's randn_tensor draw
    raw = ddim_loop(pipe.unet, pipe.scheduler, x_T.clone())
    assert torch.equal((raw / 2 + 0.5).clamp(0, 1), images)  # the pipeline is this loop, post-processed

    ts = scheduler_times(pipe.scheduler, steps)
    torch.testing.assert_close(ts, from_indices(pipe.scheduler.timesteps, 1000), rtol=0, atol=0)
    ours = sd.sample(model, SHAPE, "ddim", timesteps=ts, x_T=x_T)
    assert ours.nfe == steps
    assert max_diff(ours.x, raw) < bar(raw)
    assert max_diff((ours.x / 2 + 0.5).clamp(0, 1), images) < bar(raw)
    if schedule == "linear":
        as_numpy = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                        eta=0.0, output_type="np").images
        assert as_numpy.shape == (3, 8, 8, 2)
        ours_nhwc = (ours.x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        assert abs(ours_nhwc - as_numpy).max() < bar(raw)
        in_f64 = sd.sample(model, SHAPE, "ddim", timesteps=ts, x_T=x_T.double(), dtype=F64)  # UNet stays f32
        assert in_f64.x.dtype == F64 and max_diff(in_f64.x, raw) < bar(raw)
        shifted = from_indices(pipe.scheduler.timesteps + 1, 1000)
        off = sd.sample(model, SHAPE, "ddim", timesteps=shifted, x_T=x_T)
        assert max_diff(off.x, raw) > 100 * bar(raw)
        other = "eps" if model.prediction != "eps" else "v"
        wrong = sd.ScoreModel(model.net, model.sde, prediction=other, time_input="index")
        assert max_diff(sd.sample(wrong, SHAPE, "ddim", timesteps=ts, x_T=x_T).x, raw) > 100 * bar(raw)


@pytest.mark.parametrize("steps", [5, 10])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpm_solver_pp_2m_equals_diffusers(tmp_path, unet2d, prediction_type, steps):
    """Our ``dpm_solver`` (order 2, data form, lower-order final steps below 15 steps) equals
    diffusers' ``DPMSolverMultistepScheduler`` (its defaults: DPM-Solver++(2M), ``linspace`` spacing,
    final sigma 0) on the loaded UNet, run by ``DDPMPipeline(unet, scheduler)`` and by the plain loop,
    same timesteps and start noise. Bar ``REL·(1 + max|x|)`` (measured ≤ 4.2e-7 relative); the
    first-order solver on the same grid misses it by > 1000× (measured ≥ 2000×)."""
    scheduler = diffusers.DDIMScheduler(clip_sample=False, prediction_type=prediction_type)
    folder = save(tmp_path / "unet", unet2d, scheduler)
    model = load_diffusers(folder)
    dpm = diffusers.DPMSolverMultistepScheduler.from_pretrained(folder)
    assert (dpm.config.solver_order, dpm.config.algorithm_type) == (2, "dpmsolver++")
    pipe = diffusers.DDPMPipeline(model.net.unet, dpm)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                  output_type="pt").images
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    scheduler = diffusers.DPMSolverMultistepScheduler.from_pretrained(folder)
    scheduler.set_timesteps(steps)
    raw = ddim_loop(model.net.unet, scheduler, x_T.clone())
    assert torch.equal((raw / 2 + 0.5).clamp(0, 1), images)

    ts = scheduler_times(dpm, steps)
    assert ts[-1] == 0 and len(ts) == steps + 1
    ours = sd.sample(model, SHAPE, "dpm_solver", timesteps=ts, x_T=x_T, order=2, prediction="data")
    assert ours.nfe == steps
    assert max_diff(ours.x, raw) < bar(raw)
    assert max_diff((ours.x / 2 + 0.5).clamp(0, 1), images) < bar(raw)
    first = sd.sample(model, SHAPE, "dpm_solver", timesteps=ts, x_T=x_T, order=1, prediction="data")
    assert max_diff(first.x, raw) > 1000 * bar(raw)


def save_sd_folder(folder: Path, sample_size: int = 8) -> Path:
    """A tiny Stable-Diffusion-like pipeline folder: a random UNet2DConditionModel (4 latent channels,
    cross-attention dim 16) and SD's DDIM config (scaled_linear 0.00085 → 0.012, steps_offset 1,
    set_alpha_to_one False)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        layers_per_block=1, norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                            clip_sample=False, set_alpha_to_one=False,
                            steps_offset=1).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def guided_sd_loop(unet, scheduler, steps: int, latents: torch.Tensor, text: torch.Tensor,
                   uncond: torch.Tensor, gamma: float) -> torch.Tensor:
    """StableDiffusionPipeline's denoising loop written out: doubled latents, ``[uncond; text]``
    hidden states, ``uncond + γ·(text − uncond)``, ``scheduler.step``; returns the final latents."""
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(torch.cat([x] * 2), t)
            noise = unet(inp, t, encoder_hidden_states=torch.cat([uncond, text])).sample
            noise_uncond, noise_text = noise.chunk(2)
            x = scheduler.step(noise_uncond + gamma * (noise_text - noise_uncond), t, x).prev_sample
    return x


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_sd_folder(tmp_path_factory.mktemp("sd"))


def test_conditional_unet_with_guidance_equals_the_sd_denoising_loop(sd_folder):
    """Classifier-free guidance through our DDIM on a UNet2DConditionModel, ``cond=`` text embeddings
    ``(batch, seq, dim)`` and ``null_cond=`` the unconditional ones, equals the denoising loop of
    StableDiffusionPipeline written out (doubled latents, ``[uncond; text]`` hidden states,
    ``uncond + γ·(text − uncond)``, ``scheduler.step``) with ``γ = 7.5 = 1 + w``, for a tensor and a
    dict condition. Bar ``γ·REL·(1 + max|x|)`` (the guided difference multiplies the branches'
    rounding by γ; measured 1.3e-6 relative); unguided sampling misses it by > 100×."""
    model = load_diffusers(sd_folder)
    assert isinstance(model.net, DiffusersUNet) and model.net.cond_key == "encoder_hidden_states"
    batch, steps, gamma = 2, 8, 7.5
    g = torch.Generator().manual_seed(3)
    text = torch.randn(batch, 5, 16, generator=g)
    uncond = torch.randn(1, 5, 16, generator=g).expand(batch, 5, 16)
    latents = torch.randn(batch, 4, 8, 8, generator=g)

    scheduler = diffusers.DDIMScheduler.from_pretrained(sd_folder, subfolder="scheduler")
    x = guided_sd_loop(model.net.unet, scheduler, steps, latents, text, uncond, gamma)

    ts = scheduler_times(scheduler, steps)
    assert ts[-1] == 1 / 1000  # set_alpha_to_one=False ends on ᾱ of index 0
    shape = tuple(latents.shape)
    guided = sd.ClassifierFreeGuidance(model, gamma - 1, null_cond=uncond)
    ours = sd.sample(guided, shape, "ddim", timesteps=ts, x_T=latents, cond=text)
    assert ours.nfe == steps
    assert max_diff(ours.x, x) < bar(x, gamma)
    keyed = sd.ClassifierFreeGuidance(model, gamma - 1, null_cond={"encoder_hidden_states": uncond})
    ours_dict = sd.sample(keyed, shape, "ddim", timesteps=ts, x_T=latents,
                          cond={"encoder_hidden_states": text})
    assert max_diff(ours_dict.x, x) < bar(x, gamma)
    unguided = sd.sample(model, shape, "ddim", timesteps=ts, x_T=latents, cond=text)
    assert max_diff(unguided.x, x) > 100 * bar(x, gamma)


def test_export_of_a_loaded_model_reloads_bit_for_bit(tmp_path, unet2d, sd_folder):
    """A loaded diffusers model (unconditional with v-prediction and a trained β table; the
    conditional one) exported and reloaded: the same weights and float64 β table, so ``torch.equal``
    samples for DDIM and for ancestral sampling with a fixed generator (and for guided DDIM)."""
    folder = save(tmp_path / "unet", unet2d, diffusers.DDIMScheduler(
        clip_sample=False, prediction_type="v_prediction", trained_betas=DDPM_BETAS.tolist()))
    model = load_diffusers(folder)
    back = load_diffusers(export_diffusers(model, tmp_path / "exported"))
    assert torch.equal(back.sde.schedule.betas, model.sde.schedule.betas) and back.prediction == "v"
    ts = sd.grids.make_grid("leading", model.sde, 10)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    for sampler in ("ddim", "ancestral"):
        a, b = (sd.sample(m, SHAPE, sampler, timesteps=ts, x_T=x_T,
                          generator=torch.Generator().manual_seed(2)) for m in (model, back))
        assert torch.equal(a.x, b.x)

    cond_model = load_diffusers(sd_folder)
    cond_back = load_diffusers(export_diffusers(cond_model, tmp_path / "exported_sd"))
    index = json.loads((tmp_path / "exported_sd" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"][1] == "UNet2DConditionModel"
    text = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    a, b = (sd.sample(sd.ClassifierFreeGuidance(m, 3.0, null_cond=0.0), (2, 4, 8, 8), "ddim", steps=5,
                      x_T=latents, cond=text).x for m in (cond_model, cond_back))
    assert torch.equal(a, b)


def diffusers_config(learned_variance: bool = False, prediction: str = "eps"):
    config = default_config()
    config.sde.name = "ddpm"
    config.model.time_input = "index"
    config.model.prediction = prediction
    config.model.learned_variance = learned_variance
    config.model.network = {"name": "diffusers_unet2d", **{k: UNET2D[k] for k in (
        "sample_size", "in_channels", "block_out_channels", "layers_per_block", "norm_num_groups")}}
    return config


@pytest.mark.parametrize("learned_variance", [False, True])
def test_export_of_a_scoresde_model_reloads_bit_for_bit(tmp_path, learned_variance):
    """A model built from a scoresde config with the ``"diffusers_unet2d"`` network (``sde.name =
    "ddpm"``, ``time_input="index"``; with and without a learned variance) exported and reloaded
    gives ``torch.equal`` DDIM and ancestral samples, and diffusers' own pipeline class
    (``DDIMPipeline``; ``DDPMPipeline`` for the learned variance) loads the folder and runs."""
    torch.manual_seed(0)
    model = build_model(diffusers_config(learned_variance))
    assert isinstance(model.net, DiffusersUNet) and model.learned_variance == learned_variance
    folder = export_diffusers(model, tmp_path / "exported")
    back = load_diffusers(folder)
    assert back.learned_variance == learned_variance
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    for sampler in ("ddim", "ancestral"):
        a = sd.sample(model, SHAPE, sampler, steps=8, x_T=x_T, generator=torch.Generator().manual_seed(2))
        b = sd.sample(back, SHAPE, sampler, steps=8, x_T=x_T, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a.x, b.x)
    index = json.loads((folder / "model_index.json").read_text())
    pipeline_cls = diffusers.DDPMPipeline if learned_variance else diffusers.DDIMPipeline
    assert index["_class_name"] == pipeline_cls.__name__
    pipe = pipeline_cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4,
                  output_type="pt").images
    assert images.shape == (2, 2, 8, 8) and torch.isfinite(images).all()
    betas = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["trained_betas"]
    assert torch.equal(torch.tensor(betas, dtype=F64), model.sde.schedule.betas)  # float64 through JSON


def test_class_conditional_diffusers_unet2d_keeps_its_null_class_through_export(tmp_path):
    """``"diffusers_unet2d"`` with ``num_classes = 3`` has a class table of 4 rows; the null label −1
    selects the last (label 3 given to the diffusers UNet directly), before and after an export, so
    guided DDIM reloads bit for bit. A real class gives another output (the check can fail)."""
    torch.manual_seed(0)
    config = diffusers_config()
    config.model.num_classes = 3
    model = build_model(config)
    assert model.net.unet.config.num_class_embeds == 4 and model.net.null_class == 3
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    c = torch.full((3,), 500.0)
    null = model.net(x, c, torch.full((3,), -1))
    assert torch.equal(null, model.net.unet(x, c, class_labels=torch.full((3,), 3)).sample)
    assert max_diff(null, model.net(x, c, torch.zeros(3, dtype=torch.long))) > 1e-3
    back = load_diffusers(export_diffusers(model, tmp_path / "exported"))
    assert back.net.null_class == 3
    labels = torch.tensor([0, 1, 2])
    a, b = (sd.sample(sd.ClassifierFreeGuidance(m, 2.0), SHAPE, "ddim", steps=4, x_T=x, cond=labels).x
            for m in (model, back))
    assert torch.equal(a, b)


def test_exported_folder_runs_in_ddim_pipeline_as_our_ddim(tmp_path):
    """``DDIMPipeline.from_pretrained(export_diffusers(model, ...))`` samples what our DDIM samples
    from the pipeline's start noise, to the bar ``REL·(1 + max|x|)`` (the module docstring)."""
    torch.manual_seed(1)
    model = build_model(diffusers_config(prediction="v"))
    pipe = diffusers.DDIMPipeline.from_pretrained(export_diffusers(model, tmp_path / "exported"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=6,
                  output_type="pt").images
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    raw = ddim_loop(pipe.unet, pipe.scheduler, x_T.clone())
    ours = sd.sample(model, SHAPE, "ddim", timesteps=scheduler_times(pipe.scheduler, 6), x_T=x_T)
    assert max_diff((ours.x / 2 + 0.5).clamp(0, 1), images) < bar(raw)
    assert max_diff(ours.x, raw) < bar(raw)


def test_export_refuses_what_diffusers_cannot_hold(tmp_path, unet2d):
    native = default_config()
    native.sde.name, native.model.time_input = "ddpm", "index"
    native.model.network = {"name": "unet", "channels": 8, "channel_mult": (1,), "num_res_blocks": 1,
                            "attn_resolutions": (), "in_channels": 2, "resolution": 8}
    with pytest.raises(TypeError, match=r"needs a diffusers network.*got UNet"):
        export_diffusers(build_model(native), tmp_path / "a")
    net = DiffusersUNet(unet2d)
    with pytest.raises(ValueError, match="needs a VP SDE with a discrete β table"):
        export_diffusers(sd.ScoreModel(net, sd.VESDE(), time_input="index"), tmp_path / "b")
    with pytest.raises(ValueError, match="needs a VP SDE with a discrete β table"):
        export_diffusers(sd.ScoreModel(net, sd.VPSDE(), time_input="index"), tmp_path / "b")  # continuous
    ddpm = sd.VPSDE.from_betas(DDPM_BETAS)
    with pytest.raises(ValueError, match=r"needs time_input='index'.*got 'scaled'"):
        export_diffusers(sd.ScoreModel(net, ddpm, time_input="scaled"), tmp_path / "c")
    with pytest.raises(ValueError, match="no prediction_type for prediction='score'"):
        export_diffusers(sd.ScoreModel(net, ddpm, prediction="score", time_input="index"), tmp_path / "d")
    guided = sd.ClassifierFreeGuidance(sd.ScoreModel(net, ddpm, time_input="index"), 1.0)
    with pytest.raises(TypeError, match=r"needs a scoresde\.ScoreModel, got ClassifierFreeGuidance"):
        export_diffusers(guided, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")
    with pytest.raises(TypeError, match="wraps a diffusers UNet2DModel or UNet2DConditionModel, got Linear"):
        DiffusersUNet(torch.nn.Linear(2, 2))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not an empty folder"):
        export_diffusers(sd.ScoreModel(net, ddpm, time_input="index"), tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def test_export_writes_beside_and_renames(tmp_path, unet2d):
    """The folder appears whole (written in a hidden sibling, renamed into place) and nothing else is
    left beside it; an existing empty folder is filled."""
    model = sd.ScoreModel(DiffusersUNet(unet2d), sd.VPSDE.from_betas(DDPM_BETAS), time_input="index")
    (tmp_path / "empty").mkdir()
    for name in ("new", "empty"):
        export_diffusers(model, tmp_path / name)
        assert {p.name for p in (tmp_path / name).iterdir()} == {"model_index.json", "scheduler", "unet"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]


def test_load_refuses_bad_folders_and_configs(tmp_path, unet2d):
    with pytest.raises(FileNotFoundError, match="no diffusers folder at"):
        load_diffusers(tmp_path / "missing")
    folder = tmp_path / "unet"
    unet2d.save_pretrained(folder, safe_serialization=True)
    with pytest.raises(FileNotFoundError, match=r"no scheduler config for .*pass scheduler="):
        load_diffusers(folder)
    assert load_diffusers(folder, scheduler={"prediction_type": "sample"}).prediction == "x0"  # explicit
    (tmp_path / "scheduler").mkdir()
    diffusers.DDIMScheduler().save_pretrained(tmp_path / "scheduler")  # ../scheduler/ is found
    assert load_diffusers(folder).prediction == "eps"
    bad = {
        "prediction_type must be one of .* got 'flow'": {"prediction_type": "flow"},
        r"rescale_betas_zero_snr=True \(zero terminal SNR": {"rescale_betas_zero_snr": True},
        "beta_schedule must be one of .* got 'sigmoid'": {"beta_schedule": "sigmoid"},
        "trained_betas has 3 entries but num_train_timesteps is 1000": {"trained_betas": [0.1, 0.2, 0.3],
                                                                       "num_train_timesteps": 1000},
        "variance_type='learned' .* is not supported": {"variance_type": "learned"},
        "does not say variance_type='learned_range'": None,
        "is not a discrete DDPM": {"_class_name": "FlowMatchEulerDiscreteScheduler"},
    }
    for message, config in bad.items():
        if config is None:  # a learned-variance UNet under a config without learned_range
            wide = tmp_path / "wide"
            tiny_unet2d(out_channels=4).save_pretrained(wide, safe_serialization=True)
            with pytest.raises(ValueError, match=message):
                load_diffusers(wide, scheduler={})
            continue
        with pytest.raises(ValueError, match=message):
            load_diffusers(folder, scheduler=config)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        load_diffusers(folder)


def test_scheduler_times_refuses_grids_it_cannot_represent():
    """A DDIM spacing that does not divide N (its steps go to ``t − N//k``, not to the next
    timestep) and Karras-re-spaced sigmas are refused; the spacings that DDIM does step along, and
    DPM-Solver's table sigmas, map to the times of their indices."""
    with pytest.raises(ValueError, match="not to its next timesteps"):
        scheduler_times(diffusers.DDIMScheduler(timestep_spacing="linspace"), 7)
    with pytest.raises(ValueError, match="sigmas are not those of its timesteps"):
        scheduler_times(diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True), 7)
    trailing = diffusers.DDIMScheduler(timestep_spacing="trailing")
    assert torch.equal(scheduler_times(trailing, 4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64))
    sigma_min = diffusers.DPMSolverMultistepScheduler(final_sigmas_type="sigma_min",
                                                      algorithm_type="dpmsolver")
    assert scheduler_times(sigma_min, 5)[-1] == 1 / 1000
    assert scheduler_times(trailing, 4).dtype == F64 and trailing.num_inference_steps is None  # left alone


def test_learned_range_variance_equals_diffusers(tmp_path):
    """``variance_type="learned_range"`` (out_channels = 2·in): the model loads with a learned
    variance, and (a) our ancestral sampler with Σ from it equals ``DDPMPipeline`` (DDPMScheduler,
    learned_range, cosine β, 10 steps) drawing from the same generator, to ``REL·(1 + max|x|)``
    (measured 1.2e-6 relative); (b) at single steps our ``log Σ`` equals diffusers'
    ``_get_variance`` (the log variance for learned_range). diffusers forms ``1 − ᾱ_s`` in float32,
    whose rounding 2⁻²⁴ is relative ``2⁻²⁴/(1 − ᾱ_s)`` in β̃ and so absolute in ``log β̃``: the bar is
    ``1e-5 + 2⁻²⁴/sigma_s²`` (1e-5 at high noise, 1.5e-3 on the step to index 0 of the cosine table,
    where ``1 − ᾱ = 4e-5``; measured 6e-8, 5e-7, 5.3e-4 at steps 0, 4, 8). The raw, unmapped ``u`` as
    our ``v`` misses it by > 1e-2 (β and β̃ are close at high noise: measured 0.07, 0.35, 6.5)."""
    folder = save(tmp_path / "lv", tiny_unet2d(out_channels=4), diffusers.DDPMScheduler(
        clip_sample=False, variance_type="learned_range", beta_schedule="squaredcos_cap_v2"))
    model = load_diffusers(folder)
    assert model.learned_variance and model.net.learned_range
    scheduler = diffusers.DDPMScheduler.from_pretrained(folder)
    pipe = diffusers.DDPMPipeline(model.net.unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    steps = 10
    images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), num_inference_steps=steps,
                  output_type="pt").images
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    ts = scheduler_times(pipe.scheduler, steps)
    ours = sd.sample(model, SHAPE, "ancestral", timesteps=ts, x_T=x.clone(), generator=g)
    g = torch.Generator().manual_seed(0)  # the raw loop draws the same numbers in the same order
    x = torch.randn(SHAPE, generator=g)
    for t in pipe.scheduler.timesteps:
        x = pipe.scheduler.step(model.net.unet(x, t).sample, t, x, generator=g).prev_sample
    assert max_diff(ours.x, x) < bar(x)
    assert max_diff((ours.x / 2 + 0.5).clamp(0, 1), images) < bar(x)

    state = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    for i in (0, 4, 8):
        t = pipe.scheduler.timesteps[i]
        u = model.net.unet(state, t).sample[:, 2:]
        theirs = pipe.scheduler._get_variance(t, predicted_variance=u)
        pred = model.predict(state, float(ts[i]))
        step = Step.between(model.sde, ts[i], ts[i + 1])
        ours_log = 2 * torch.log(step_noise_std(step, 1.0, "learned", pred))
        sigma_s = model.sde.sigma(ts[i + 1])
        rounding = 1e-5 + 2.0**-24 / sigma_s.item() ** 2  # diffusers' float32 1 − ᾱ_s, relative
        assert max_diff(ours_log, theirs) < rounding
        raw_u = sd.Prediction(pred.x, pred.alpha, pred.sigma, pred.x0, pred.eps, var_interp=u)
        assert max_diff(2 * torch.log(step_noise_std(step, 1.0, "learned", raw_u)), theirs) > 1e-2


@pytest.mark.parametrize("N", [1000, 37])
def test_beta_tables_equal_diffusers(N):
    """Our float64 β tables equal diffusers' float32 ``scheduler.betas`` to float32 precision:
    relative 5e-7 (8 float32 ulps; diffusers' float32 linspace, and its square for scaled_linear,
    are off by up to 4 ulps, measured 2.2e-7); squaredcos_cap_v2 diffusers computes in float64 and
    rounds, so it is exact after our rounding to float32. Swapping two schedules misses by > 1e-2."""
    configs = {"linear": {}, "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
               "squaredcos_cap_v2": {}}
    tables = {}
    for name, extra in configs.items():
        config = {"beta_schedule": name, "num_train_timesteps": N, **extra}
        ours, theirs = diffusers_betas(config), diffusers.DDIMScheduler(**config).betas
        assert ours.dtype == F64 and ours.shape == (N,)
        torch.testing.assert_close(ours, theirs.double(), rtol=5e-7, atol=0)
        tables[name] = ours
    assert torch.equal(tables["squaredcos_cap_v2"].float(), diffusers.DDIMScheduler(
        beta_schedule="squaredcos_cap_v2", num_train_timesteps=N).betas)
    assert ((tables["linear"] - tables["scaled_linear"]) / tables["linear"]).abs().max() > 1e-2
    trained = torch.linspace(1e-4, 0.02, N, dtype=F64) ** 1.5
    config = {"trained_betas": trained.tolist(), "num_train_timesteps": N}
    assert torch.equal(diffusers_betas(config), trained)


def test_importing_scoresde_does_not_import_diffusers():
    """diffusers is optional: the package, its networks (``"diffusers_unet2d"`` registered) and the
    experiment layer import without it."""
    code = ("import sys, scoresde, scoresde.nn, scoresde.experiment, scoresde.interop; "
            "assert 'diffusers_unet2d' in scoresde.nn.NETWORKS; assert 'diffusers' not in sys.modules")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
