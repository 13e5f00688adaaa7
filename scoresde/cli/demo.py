"""``scoresde demo``: the researcher's loop on a trained model, and on the exact oracle.

Two parts (``--problem=all``, the default):

* **digits**: the trained 8×8-digits model shipped with the package (``digits_vp``, or
  --model_dir) is sampled by the main variant of every registered sampler from the same prior
  draw; ``digits_samples.png`` shows the samples side by side (one image grid per sampler,
  titled with its NFE and wall time, next to test images), a table gives NFE and time, and the
  test-set negative log-likelihood in bits/dim is estimated with the PF-ODE on a few test
  images. Skipped with a note when --model_dir holds no trained model.
* **guidance**: the shipped class-conditional digits model (``digits_vp_cond``) with
  classifier-free guidance: ``digits_guidance.png`` holds digits 0–9 by row and guidance weights
  ``w`` (0 = conditional, Ho & Salimans) by column block, all from the same start noise.
* **inpaint**: the digits model completes test images whose right half is missing, by
  score_sde's replacement and by RePaint: ``digits_inpaint.png`` shows masked inputs,
  completions and truths.
* **latent**: the shipped latent-diffusion digits model (``digits_latent``: our convolutional
  autoencoder, 8×8 digits ↔ 4×4×2 latents, and a score model on its latents) beside the pixel model
  ``digits_vp``, same sampler and steps: ``digits_latent.png`` shows both models' samples, the
  autoencoder's reconstructions of test digits (the floor a latent model cannot beat) and the test
  digits, with NFE and time.
* **gmm**: a 2-D mixture of 9 Gaussians whose diffused score is known exactly, wrapped as a DDPM
  ε-network, sampled by every sampler's main variant at several step counts; the table adds the
  unbiased MMD² to exact samples and its noise floor.

The variants come from :func:`scoresde.samplers.variants` (the table ``scoresde bench`` runs in
full); running, timing and writing are shared with ``bench`` (:mod:`scoresde.cli.common`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from absl import flags
from ml_collections import ConfigDict

import scoresde as sd
from scoresde import assets, experiment
from scoresde.cli.common import (
    FLAGS,
    IMAGE_ADAPTIVE,
    Row,
    format_floor,
    format_table,
    likelihood_settings,
    model_source,
    noise_floor,
    pixels,
    run_samplers,
    sampler_runs,
    split_bits_per_dim,
    steps_list,
    steps_text,
    write_csv,
)
from scoresde.data import ring_mixture
from scoresde.errors import InputError

flags.DEFINE_enum("problem", "all", ["all", "gmm", "digits", "guidance", "inpaint", "latent"],
                  "demo: which part to run: the trained digits model, classifier-free guidance on the "
                  "class-conditional digits model, inpainting digits, latent diffusion beside pixel "
                  "diffusion on digits, the 2-D oracle, or all of them.")
flags.DEFINE_integer("digits_steps", 20, "demo: steps of each fixed-step sampler on the digits model.",
                     lower_bound=1)
flags.DEFINE_integer("digits_n", 64, "demo: digits sampled per sampler.", lower_bound=1)
flags.DEFINE_integer("nll_n", 64, "demo: test images in the digits model's bits/dim estimate.", lower_bound=2)
flags.DEFINE_enum("sde", "vp", ["vp", "subvp", "ve"],
                  "demo (oracle): forward SDE: vp (DDPM's linear VP, beta 0.1..20), subvp, or ve "
                  "(sigma 0.01..50).")
flags.DEFINE_integer("plot_steps", 20,
                     "demo (oracle): step count shown in the scatter plot (the nearest one in --steps).",
                     lower_bound=1)

SHIPPED = "digits_vp"
SHIPPED_COND = "digits_vp_cond"
SHIPPED_LATENT = "digits_latent"
GUIDANCE_WEIGHTS = (0.0, 1.0, 3.0)
SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


def run_oracle_demo(workdir: str | Path, n: int = 2000, seed: int = 0, steps: list[int] | None = None,
                    sde_name: str = "vp", plot_steps: int = 20, progress: bool = True) -> list[Row]:
    """Every sampler's main variant on the exact Gaussian-mixture oracle; table, CSV and scatter PNG.

    The oracle is ``gmm.score_model(sde, prediction="eps", time_input="index")``: called exactly
    like a DDPM noise-prediction network, it returns the exact diffused score. Every run starts
    from the same prior draw; quality is the unbiased MMD² to ``n`` fresh exact samples, and the
    noise floor is the MMD² between independent exact sets of the same size.
    """
    from scoresde.plots import ScatterPanel, save_scatter_panels

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    runs = sampler_runs(steps or [5, 10, 20, 50], sd.samplers.variants(main_only=True))
    sde = SDES[sde_name]()
    gmm = ring_mixture()
    model = gmm.score_model(sde, prediction="eps", time_input="index")
    data_gen = torch.Generator().manual_seed(seed)
    reference = gmm.sample(n, generator=data_gen)
    floor = noise_floor(lambda: gmm.sample(n, generator=data_gen), reference)
    shown = min((r.steps for r in runs if r.steps is not None), key=lambda k: (abs(k - plot_steps), k))

    results = run_samplers(model, (n, 2), runs, seed, reference, progress, desc="gmm demo")
    rows = [row for row, _ in results]
    panels = [ScatterPanel(f"exact samples\nnoise floor MMD² = {floor.mmd2:+.1e} (±{floor.std:.0e})",
                           reference, "C0")]
    for run, (row, x) in zip(runs, results):
        if run.steps == shown or run.steps is None:
            panels.append(ScatterPanel(f"{row.label} ({steps_text(row.steps)})\nNFE = {row.nfe}, "
                                       f"MMD² = {row.mmd2:+.1e}", x))
    print(f"\n{sde!r}, exact eps-oracle of a 2-D mixture of 9 Gaussians, n={n}")
    print(format_table(rows))
    print("\n" + format_floor(floor, n))
    csv_path, png_path = workdir / "results.csv", workdir / "samples.png"
    write_csv(rows, csv_path, floor)
    save_scatter_panels(png_path, panels, f"{type(sde).__name__}, exact eps-oracle, n={n}", lim=(-6.5, 6.5))
    print(f"\nwrote {csv_path} and {png_path}")
    return rows


def run_digits_demo(workdir: str | Path, cfg: ConfigDict, source: str | Path, steps: int = 20, n: int = 64,
                    nll_n: int = 64, seed: int = 0, progress: bool = True) -> list[Row]:
    """Sample a trained image model with every sampler's main variant, and estimate its NLL.

    ``n`` images per variant at ``steps`` steps and one adaptive ``dopri5`` PF-ODE solve
    (rtol = atol = 1e-3), all from one prior draw: ``digits_samples.png`` and
    ``digits_results.csv``. Then bits/dim of the first ``nll_n`` test images with the config's
    ``eval`` settings (uniform dequantization, Hutchinson's estimator for ``rademacher``).
    """
    from scoresde.plots import ImagePanel, save_image_panels

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = experiment.load_trained(cfg, source)
    test, spec = experiment.load_data(cfg, "test")
    if not spec.is_image:
        raise InputError(f"the image demo needs image data; {spec.name!r} is continuous")
    if nll_n > len(test) or n > len(test):
        raise InputError(f"the test split has {len(test)} images; asked for n={n} and nll_n={nll_n}")

    runs = sampler_runs([steps], sd.samplers.variants(main_only=True), IMAGE_ADAPTIVE)
    results = run_samplers(model, (n, *spec.shape), runs, seed, None, progress, desc="digits samplers")
    rows = [row for row, _ in results]
    ncol = math.ceil(math.sqrt(n))
    panels = [ImagePanel(f"test images ({n})", pixels(test[:n], spec), ncol)]
    for row, x in results:
        panels.append(ImagePanel(f"{row.label}, {steps_text(row.steps)}\nNFE {row.nfe}, {row.wall_s:.2f} s",
                                 pixels(x, spec), ncol))

    start = time.perf_counter()
    bpd = split_bits_per_dim(model, cfg, test[:nll_n], spec, seed, progress)
    nll_wall = time.perf_counter() - start
    nll_nfe = float(bpd.likelihood.nfe.double().mean())
    nll_text = (f"test NLL {bpd.mean:.3f} ± {bpd.stderr:.3f} bits/dim ({nll_n} test images, "
                f"{likelihood_settings(cfg)})")
    png, csv_path = workdir / "digits_samples.png", workdir / "digits_results.csv"
    title = f"trained {spec.name} model ({Path(source).name}): {nll_text}"
    save_image_panels(png, panels, spec.levels, title, cols=3)
    write_csv(rows, csv_path)
    print(f"\nTrained {spec.name} model from {source}: {type(model.sde).__name__}, "
          f"{n} samples per sampler, same prior draw")
    print(format_table(rows))
    print(f"\n{nll_text}: NFE {nll_nfe:.0f} per solve, {nll_wall:.1f} s "
          f"(uniform dequantization: an upper bound on the discrete NLL)")
    print(f"\nwrote {png} and {csv_path}")
    return rows


def run_guidance_demo(workdir: str | Path, steps: int = 20, per_class: int = 4, seed: int = 0,
                      weights: tuple[float, ...] = GUIDANCE_WEIGHTS) -> Path:
    """Digits 0–9 by row, classifier-free guidance weights by column block, one start noise."""
    from scoresde.plots import ImagePanel, save_image_panels

    source = assets.shipped_model(SHIPPED_COND)
    cfg = experiment.config_from_checkpoint(source)
    model = experiment.load_trained(cfg, source)
    _, spec = experiment.load_data(cfg, "test")
    classes = cfg.model.num_classes
    labels = torch.arange(classes).repeat_interleave(per_class)
    x_T = torch.randn((len(labels), *spec.shape), generator=torch.Generator().manual_seed(seed))
    panels = []
    for w in weights:
        start = time.perf_counter()
        guided = sd.ClassifierFreeGuidance(model, w)
        out = sd.sample(guided, tuple(x_T.shape), "ddim", steps, cond=labels, x_T=x_T)
        panels.append(ImagePanel(f"w = {w:g}: NFE {out.nfe}, {time.perf_counter() - start:.1f} s",
                                 pixels(out.x, spec), per_class))
    png = Path(workdir) / "digits_guidance.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    save_image_panels(png, panels, spec.levels, f"{SHIPPED_COND}: digits 0–9 by row, classifier-free "
                      f"guidance weight w by column (ddim, {steps} steps)")
    listed = ", ".join(f"{w:g}" for w in weights)
    print(f"\nClassifier-free guidance on {SHIPPED_COND}, w = {listed}: wrote {png}")
    return png


def run_inpaint_demo(workdir: str | Path, cfg: ConfigDict, source: str | Path, steps: int = 20, n: int = 8,
                     seed: int = 0) -> Path:
    """Test images with their right half missing, completed by replacement and by RePaint."""
    from scoresde.cli.inpaint import make_mask, masked_pixels
    from scoresde.plots import ImagePanel, save_image_panels

    model = experiment.load_trained(cfg, source)
    truth, spec = experiment.load_data(cfg, "test")
    truth = truth[:n]
    mask = make_mask("right_half", spec, n, 0.5, torch.Generator())
    panels = [ImagePanel("masked inputs", masked_pixels(truth, mask, spec))]
    repaint = {"jump_length": max(1, steps // 4), "n_resample": 4}
    for method, options in (("replace", {}), ("repaint", repaint)):
        out = sd.inpaint(model, truth, mask, method=method, steps=steps,
                         generator=torch.Generator().manual_seed(seed), **options)
        mse = float((out.x - truth)[~mask.expand_as(truth)].pow(2).mean())
        panels.append(ImagePanel(f"{method}: NFE {out.nfe}, MSE {mse:.3f}", pixels(out.x, spec)))
    panels.append(ImagePanel("truth", pixels(truth, spec)))
    png = Path(workdir) / "digits_inpaint.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    save_image_panels(png, panels, spec.levels,
                      f"inpainting the right half of {n} test digits ({steps} steps)")
    print(f"\nInpainting (replace, RePaint) on {Path(source).name}: wrote {png}")
    return png


def run_latent_demo(workdir: str | Path, steps: int = 20, n: int = 32, seed: int = 0) -> Path:
    """The shipped latent digits model beside the pixel model: samples of both (``dpm_solver``, the
    same steps), the autoencoder's reconstructions of test digits and the test digits."""
    from scoresde.plots import ImagePanel, save_image_panels

    latent_source, pixel_source = assets.shipped_model(SHIPPED_LATENT), assets.shipped_model(SHIPPED)
    ldm = experiment.load_trained(None, latent_source)
    truth, spec = experiment.load_data(experiment.config_from_checkpoint(latent_source), "test")
    truth = truth[:n]
    panels = []
    for name, model, shape in ((SHIPPED, experiment.load_trained(None, pixel_source), spec.shape),
                               (SHIPPED_LATENT, ldm, ldm.latent_shape(spec.shape))):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        out = sd.sample(model, (n, *shape), "dpm_solver", steps, generator=generator)
        wall = time.perf_counter() - start
        panels.append(ImagePanel(f"{name} ({'x'.join(map(str, shape))}): NFE {out.nfe}, {wall:.1f} s",
                                 pixels(out.x, spec)))
        print(f"{name}: sampled in {'x'.join(map(str, shape))}, dpm_solver {steps} steps, NFE {out.nfe}, "
              f"{wall:.2f} s")
    with torch.no_grad():
        rec = ldm.to_data(ldm.to_latent(truth))
    mse = float((rec - truth).pow(2).mean())
    panels.append(ImagePanel(f"autoencoder reconstructions (MSE {mse:.4f})", pixels(rec, spec)))
    panels.append(ImagePanel("test digits", pixels(truth, spec)))
    png = Path(workdir) / "digits_latent.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    save_image_panels(png, panels, spec.levels, "latent diffusion beside pixel diffusion on 8×8 digits")
    print(f"\nLatent diffusion ({SHIPPED_LATENT}) beside pixel diffusion ({SHIPPED}): wrote {png}")
    return png


def main() -> None:
    """The trained digits model (if there is one), then the 2-D oracle."""
    workdir = FLAGS.workdir or "demo_out"
    seed = 0 if FLAGS.seed is None else FLAGS.seed
    if FLAGS.problem in ("all", "digits"):
        source = model_source(SHIPPED)
        found = experiment.find_model(source)
        if found is not None:
            # Without --config: the checkpoint's own groups and the default eval settings
            # (rademacher trace, dopri5 at 1e-4, as configs/digits_vp.py).
            cfg = FLAGS.config if FLAGS.config is not None else experiment.config_from_checkpoint(found)
            run_digits_demo(workdir, cfg, found, steps=FLAGS.digits_steps, n=FLAGS.digits_n,
                            nll_n=FLAGS.nll_n, seed=seed)
            if FLAGS.problem == "all":
                run_inpaint_demo(workdir, cfg, found, steps=FLAGS.digits_steps, seed=seed)
        else:
            message = (f"no trained model in {source} (train one with `scoresde train --config=FILE "
                       "--workdir=DIR`, or point --model_dir at one)")
            if FLAGS.problem == "digits":
                raise FileNotFoundError(message)
            print(f"{message}; running the 2-D oracle demo only.")
    if FLAGS.problem == "inpaint":
        found = experiment.find_model(model_source(SHIPPED))
        if found is None:
            raise FileNotFoundError(f"no trained model in {model_source(SHIPPED)} for the inpainting demo")
        cfg = FLAGS.config if FLAGS.config is not None else experiment.config_from_checkpoint(found)
        run_inpaint_demo(workdir, cfg, found, steps=FLAGS.digits_steps, seed=seed)
    if FLAGS.problem in ("all", "guidance"):
        run_guidance_demo(workdir, steps=FLAGS.digits_steps, seed=seed)
    if FLAGS.problem in ("all", "latent"):
        run_latent_demo(workdir, steps=FLAGS.digits_steps, seed=seed)
    if FLAGS.problem in ("all", "gmm"):
        run_oracle_demo(workdir, n=FLAGS.n or 2000, seed=seed, steps=steps_list(), sde_name=FLAGS.sde,
                        plot_steps=FLAGS.plot_steps)
