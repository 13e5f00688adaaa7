"""diffusers interop: diffusers UNets as scoresde models, and scoresde models as diffusers folders.

A diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` trained for a discrete DDPM schedule is a
network of the DDPM step index: ``unet(x_t, i).sample`` with ``i ∈ {0..N−1}`` and
``ᾱ_i = ∏_{j≤i}(1 − β_j)``. That is exactly ``ScoreModel(net, VPSDE.from_betas(betas),
time_input="index")`` here (``t_i = (i + 1)/N``, the network receiving ``t·N − 1``), with the
scheduler config's ``prediction_type`` mapped as ``epsilon → "eps"``, ``v_prediction → "v"``,
``sample → "x0"``. Every sampler then runs on it; on the scheduler's own timesteps
(:func:`scheduler_times`) DDIM and DPM-Solver equal diffusers' ``DDIMScheduler`` and
``DPMSolverMultistepScheduler`` up to diffusers' float32 schedule (we hold ᾱ in float64).

* :class:`DiffusersUNet` wraps a diffusers UNet as ``net(x, c, cond=None, **kwargs)``;
* :func:`load_diffusers` builds the :class:`~scoresde.ScoreModel` from a local folder in one call;
* :func:`export_diffusers` writes a model whose network is a :class:`DiffusersUNet` as a diffusers
  pipeline folder (``DDIMPipeline.from_pretrained`` loads it; :func:`load_diffusers` reloads it
  bit for bit);
* :class:`DiffusersUNet2D` is the config network ``"diffusers_unet2d"`` (a fresh ``UNet2DModel``),
  so that a scoresde config can train a model that exports;
* :func:`diffusers_betas` and :func:`scheduler_times` are the schedule and the time grid of a
  scheduler config, in float64.

**Learned variances.** diffusers' ``variance_type="learned_range"`` (improved DDPM) has the UNet
return ``2·C`` channels, the second half ``u ∈ [−1, 1]`` with ``log Σ = ((u + 1)/2)·log β +
(1 − (u + 1)/2)·log β̃``; scoresde's variance interpolation (:mod:`scoresde.model`) is
``v = (u + 1)/2``, which :class:`DiffusersUNet` returns in place of ``u``.

**Class labels.** The null label of classifier-free guidance,
:data:`~scoresde.analytic.NULL_LABEL` = −1, selects row ``null_class`` of a ``UNet2DModel``'s
class table when the wrapper has one (``DiffusersUNet2D`` with ``num_classes = K`` has ``K + 1``
rows, the null one last, as :class:`scoresde.nn.UNet`); an exported model records it under the
private key ``_scoresde_null_class`` of ``unet/config.json``, which diffusers ignores.

diffusers is an optional dependency, imported inside the functions that need it; reading a
scheduler config (:func:`read_scheduler_config`, :func:`diffusers_betas`) needs nothing but json.
Weights are read and written as safetensors only (no pickled code is executed), and nothing is
downloaded: every path is a local folder.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.analytic import NULL_LABEL
from scoresde.errors import DependencyError, InputError, InputTypeError
from scoresde.grids import from_indices
from scoresde.model import ScoreModel
from scoresde.schedules import DiscreteSchedule
from scoresde.sde import VPSDE

# diffusers' prediction_type -> ours, and back.
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
SCHEDULER_CONFIG = "scheduler_config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
NULL_CLASS_KEY = "_scoresde_null_class"
# Scheduler families whose config is not a discrete VP (DDPM) schedule.
NON_VP_SCHEDULERS = ("FlowMatch", "ScoreSdeVe", "KarrasVe", "EDM", "CMStochastic", "LCM", "TCD")


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - the optional extra is missing
        raise DependencyError("diffusers interop needs the optional dependency diffusers "
                              "(pip install 'scoresde[diffusers]' or pip install diffusers)") from err
    return diffusers


# --------------------------------------------------------------------------- schedules


def read_scheduler_config(source: str | Path | Mapping[str, Any] | Any) -> dict[str, Any]:
    """A scheduler config as a dict: from a ``scheduler_config.json`` file, a folder holding one,
    a dict, or a diffusers scheduler object (its ``.config``)."""
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "config") and isinstance(source.config, Mapping):
        return dict(source.config)
    if not isinstance(source, str | Path):
        raise InputTypeError(f"scheduler must be a path, a config dict or a diffusers scheduler, "
                             f"got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / SCHEDULER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no scheduler config at {path} (expected a {SCHEDULER_CONFIG} file or a "
                                "folder holding one)")
    return json.loads(path.read_text())


def _glide_cosine_betas(N: int, max_beta: float = 0.999) -> Tensor:
    """diffusers' ``squaredcos_cap_v2``: ``β_i = min(1 − ᾱ((i+1)/N)/ᾱ(i/N), 0.999)`` with
    ``ᾱ(u) = cos²((u + 0.008)/1.008·π/2)`` (Nichol & Dhariwal 2021), in float64."""
    u = torch.arange(N + 1, dtype=torch.float64) / N
    alpha_bar = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def diffusers_betas(config: Mapping[str, Any]) -> Tensor:
    """The float64 β table of a diffusers scheduler config (length ``num_train_timesteps``).

    ``trained_betas`` when given, else ``beta_schedule``: ``"linear"`` ``linspace(β_start, β_end,
    N)``, ``"scaled_linear"`` ``linspace(√β_start, √β_end, N)²`` (latent diffusion),
    ``"squaredcos_cap_v2"`` the capped cosine (:func:`_glide_cosine_betas`); diffusers' defaults
    (linear, 1e-4 → 0.02, N = 1000) for missing keys, as diffusers fills them. diffusers computes
    the same formulas and stores them in float32. Refused: other schedules,
    ``rescale_betas_zero_snr=True`` (ᾱ_N = 0 puts infinite noise at T, which a VP SDE here cannot
    hold) and a ``trained_betas`` whose length differs from ``num_train_timesteps``.
    """
    name = str(config.get("_class_name", ""))
    if any(name.startswith(prefix) for prefix in NON_VP_SCHEDULERS):
        raise InputError(f"scheduler {name} is not a discrete DDPM (VP) schedule; load_diffusers supports "
                         "schedulers with betas (DDPM, DDIM, PNDM, DPM-Solver, Euler, UniPC, ...)")
    if config.get("rescale_betas_zero_snr", False):
        raise InputError("rescale_betas_zero_snr=True (zero terminal SNR, Lin et al. 2024) is not supported: "
                         "ᾱ = 0 at the last step has no finite VP SDE here; use a config without it")
    trained = config.get("trained_betas")
    N = config.get("num_train_timesteps")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64).flatten()
        if N is not None and len(betas) != int(N):
            raise InputError(f"trained_betas has {len(betas)} entries but num_train_timesteps is {N}")
        return betas
    N = 1000 if N is None else int(N)
    schedule = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    if schedule == "linear":
        return torch.linspace(start, end, N, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(math.sqrt(start), math.sqrt(end), N, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        return _glide_cosine_betas(N)
    raise InputError(f"beta_schedule must be one of {BETA_SCHEDULES} (or trained_betas given), "
                     f"got {schedule!r}")


def prediction_of(config: Mapping[str, Any]) -> str:
    """Our prediction name for the config's ``prediction_type`` (diffusers' default ``epsilon``)."""
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise InputError(f"prediction_type must be one of {sorted(PREDICTION_TYPES)}, got {kind!r}")
    return PREDICTION_TYPES[kind]


def learned_range_of(config: Mapping[str, Any]) -> bool:
    """Whether the config's ``variance_type`` is ``"learned_range"`` (``"learned"``, a raw log
    variance output, is refused)."""
    kind = config.get("variance_type")
    if kind == "learned":
        raise InputError("variance_type='learned' (the network outputs log Σ itself) is not supported; "
                         "'learned_range' (improved DDPM's interpolation) is")
    return kind == "learned_range"


def scheduler_times(scheduler: Any, steps: int) -> Tensor:
    """The float64 time grid on which our samplers take the steps ``scheduler`` takes.

    A fresh copy of ``scheduler`` (``type(s).from_config(s.config)``, so the argument is left
    alone) runs ``set_timesteps(steps)``; its integer timesteps ``i`` become ``t = (i + 1)/N``
    (:func:`scoresde.grids.from_indices`), followed by where the last step lands:

    * ``DDIMScheduler``: every step goes to ``i − N//steps``; past index 0 it lands on
      ``final_alpha_cumprod``, i.e. ``t = 0`` with ``set_alpha_to_one`` and ``t = 1/N`` without;
    * ``DDPMScheduler``: its ``previous_timestep``; past 0, ``t = 0``;
    * schedulers with ``sigmas`` (DPM-Solver, Euler, UniPC, …): the ``σ̄ = sqrt((1 − ᾱ)/ᾱ)`` of
      each timestep must be the table's to diffusers' float32 precision (no Karras/exponential
      re-spacing), and the last sigma is 0 (``t = 0``) or index 0's (``t = 1/N``,
      ``final_sigmas_type="sigma_min"``).

    Anything that our grid cannot represent is an error.
    """
    config = dict(scheduler.config)
    betas = diffusers_betas(config)
    N = len(betas)
    fresh = type(scheduler).from_config(config)
    fresh.set_timesteps(steps)
    idx = torch.as_tensor(fresh.timesteps).to(torch.float64)
    name = type(scheduler).__name__
    if not torch.equal(idx, idx.round()) or (idx < 0).any() or (idx >= N).any():
        raise InputError(f"{name} takes timesteps that are not DDPM indices in 0..{N - 1}: {idx.tolist()}")
    ts = from_indices(idx, N, final_zero=False)
    if name in ("DDIMScheduler", "DDPMScheduler"):
        if name == "DDIMScheduler":
            prev = [int(i) - N // steps for i in idx]
        else:
            prev = [int(fresh.previous_timestep(int(i))) for i in idx]
        if prev[:-1] != [int(i) for i in idx[1:]]:
            raise InputError(f"{name} steps from {idx.int().tolist()} to {prev}, not to its next timesteps "
                             "(a spacing that does not divide N); one time grid cannot represent it")
        last = prev[-1]
        if last >= 0:
            end = (last + 1) / N
        elif name == "DDIMScheduler" and not config.get("set_alpha_to_one", True):
            end = 1 / N  # final_alpha_cumprod = ᾱ of index 0
        else:
            end = 0.0
        return torch.cat([ts, torch.tensor([end], dtype=torch.float64)])
    sigmas = getattr(fresh, "sigmas", None)
    if sigmas is None:
        raise InputError(f"scheduler_times supports DDIMScheduler, DDPMScheduler and schedulers with sigmas "
                         f"(DPMSolverMultistepScheduler, ...), got {name}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    # Compared as ᾱ = 1/(1 + σ̄²): diffusers forms σ̄ = sqrt((1 − ᾱ)/ᾱ) in float32, which cancels
    # near ᾱ = 1, and its float32 cumulative product drifts by up to ~1e-5 relative.
    theirs = 1.0 / (1.0 + sigmas**2)
    sde = VPSDE.from_betas(betas)
    ours, first = (torch.exp(sde.log_alpha_bar(t)) for t in (ts, torch.tensor([1 / N], dtype=torch.float64)))

    def same(a: Tensor, b: Tensor) -> bool:
        return bool(torch.allclose(a, b, rtol=5e-5, atol=1e-6))

    if len(sigmas) != len(idx) + 1 or not same(theirs[:-1], ours):
        raise InputError(f"{name}'s sigmas are not those of its timesteps on the β table (Karras, "
                         "exponential or beta sigmas re-space them); one time grid cannot represent them")
    if sigmas[-1] == 0:
        end = 0.0
    elif same(theirs[-1:], first):
        end = 1 / N
    else:
        raise InputError(f"{name} ends at sigma {float(sigmas[-1]):.6g}, neither 0 nor index 0's "
                         f"{float(torch.sqrt(1 / first - 1)):.6g}")
    return torch.cat([ts, torch.tensor([end], dtype=torch.float64)])


# --------------------------------------------------------------------------- the network


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` as ``net(x, c, cond=None, **kwargs)``.

    ``c`` is the timestep (``(batch,)``, the DDPM index for ``time_input="index"``). A tensor
    ``cond`` goes to the UNet's conditioning keyword: ``encoder_hidden_states`` (text embeddings
    ``(batch, seq, dim)``) for a ``UNet2DConditionModel``, ``class_labels`` for a ``UNet2DModel``
    with a class embedding; a dict ``cond`` arrives as ``**kwargs`` and is passed as keywords.
    The UNet runs in its own dtype: ``x`` and floating conditions are cast to it and the output
    back to ``x``'s dtype (the state keeps the caller's precision).

    Args:
        unet: the diffusers model.
        learned_range: the UNet returns ``2·C`` channels with diffusers' ``learned_range`` variance
            in the second half; it is returned as scoresde's ``v = (u + 1)/2`` (module docstring).
        null_class: the class-table row that :data:`~scoresde.analytic.NULL_LABEL` selects
            (``None``: labels go to the UNet as given).
    """

    def __init__(self, unet: nn.Module, *, learned_range: bool = False, null_class: int | None = None):
        super().__init__()
        if not any(c.__name__ in UNET_CLASSES for c in type(unet).__mro__):
            raise InputTypeError(f"DiffusersUNet wraps a diffusers {' or '.join(UNET_CLASSES)}, "
                                 f"got {type(unet).__name__}")
        config = unet.config
        if config.get("time_embedding_type") == "learned":
            raise InputError("time_embedding_type='learned' looks timesteps up in a table, so the network "
                             "only exists at integer steps; scoresde's samplers need a positional or "
                             "Fourier time embedding")
        channels_in, channels_out = config["in_channels"], config["out_channels"]
        if learned_range and channels_out != 2 * channels_in:
            raise InputError(f"learned_range needs out_channels = 2·in_channels = {2 * channels_in}, "
                             f"got {channels_out}")
        if not learned_range and channels_out != channels_in:
            raise InputError(f"the UNet maps {channels_in} to {channels_out} channels; a prediction needs "
                             "out_channels = in_channels (2·in_channels with variance_type='learned_range')")
        self.unet = unet
        self.learned_range = bool(learned_range)
        self.null_class = null_class
        self.cond_key = "encoder_hidden_states" if "cross_attention_dim" in config else "class_labels"

    def _labels(self, labels: Any) -> Any:
        if self.null_class is None or not isinstance(labels, Tensor) or labels.is_floating_point():
            return labels
        return torch.where(labels == NULL_LABEL, self.null_class, labels)

    def forward(self, x: Tensor, c: Tensor, cond: Tensor | None = None, **kwargs: Any) -> Tensor:
        dtype = self.unet.dtype
        if cond is not None:
            if self.cond_key in kwargs:
                raise InputError(f"{self.cond_key} given twice: as cond and as a keyword")
            kwargs[self.cond_key] = cond
        kwargs = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v)
                  for k, v in kwargs.items()}
        if "class_labels" in kwargs:
            kwargs["class_labels"] = self._labels(kwargs["class_labels"])
        out = self.unet(x.to(dtype), c, **kwargs).sample.to(x.dtype)
        if self.learned_range:
            pred, u = out.chunk(2, dim=1)
            out = torch.cat([pred, 0.5 * (u + 1.0)], dim=1)
        return out


class DiffusersUNet2D(DiffusersUNet):
    """The config network ``"diffusers_unet2d"``: a fresh diffusers ``UNet2DModel`` (weights from
    torch's global generator, as every network in :mod:`scoresde.nn`).

    The keys are ``UNet2DModel``'s (``sample_size``, ``in_channels``, ``block_out_channels``,
    ``layers_per_block``, ``down_block_types``/``up_block_types`` — default: plain
    ``DownBlock2D``/``UpBlock2D`` at every level —, ``attention_head_dim``, ``norm_num_groups``,
    ``dropout``); ``num_classes`` and ``learned_variance`` come from the model group:
    ``num_classes = K`` gives a class table of ``K + 1`` rows, the null label's last;
    ``learned_variance`` doubles the output channels, read as ``learned_range``. Train it with
    ``time_input="index"`` on a discrete schedule (``sde.name = "ddpm"``) and
    :func:`export_diffusers` hands it to diffusers.
    """

    def __init__(self, sample_size: int, in_channels: int = 3,
                 block_out_channels: Sequence[int] = (64, 128, 128),
                 layers_per_block: int = 2, down_block_types: Sequence[str] | None = None,
                 up_block_types: Sequence[str] | None = None, attention_head_dim: int = 8,
                 norm_num_groups: int = 32, dropout: float = 0.0, num_classes: int = 0,
                 learned_variance: bool = False):
        diffusers = _import_diffusers()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise InputError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
        levels = len(block_out_channels)
        unet = diffusers.UNet2DModel(
            sample_size=sample_size, in_channels=in_channels,
            out_channels=in_channels * (2 if learned_variance else 1),
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            down_block_types=tuple(down_block_types or ("DownBlock2D",) * levels),
            up_block_types=tuple(up_block_types or ("UpBlock2D",) * levels),
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups, dropout=dropout,
            num_class_embeds=num_classes + 1 if num_classes else None)
        super().__init__(unet, learned_range=learned_variance, null_class=num_classes or None)


# --------------------------------------------------------------------------- loading


def _find_folders(path: Path, subfolder: str | None) -> tuple[Path, Path | None]:
    """The UNet folder and the scheduler config file (``None`` if there is none) under ``path``."""
    if not path.is_dir():
        raise FileNotFoundError(f"no diffusers folder at {path} (a local pipeline folder with "
                                "model_index.json, or a UNet folder with config.json and safetensors)")
    if (path / "model_index.json").is_file():
        unet_dir = path / (subfolder or "unet")
        scheduler = path / "scheduler" / SCHEDULER_CONFIG
    else:
        unet_dir = path / subfolder if subfolder else path
        scheduler = unet_dir / SCHEDULER_CONFIG
        if not scheduler.is_file():
            scheduler = unet_dir.parent / "scheduler" / SCHEDULER_CONFIG
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"no UNet config at {unet_dir / 'config.json'}")
    return unet_dir, scheduler if scheduler.is_file() else None


def load_diffusers(path: str | Path, *, subfolder: str | None = None,
                   scheduler: str | Path | Mapping[str, Any] | Any | None = None,
                   dtype: torch.dtype = torch.float32) -> ScoreModel:
    """A diffusers UNet and its scheduler config from a local folder, as a :class:`ScoreModel`.

    ``path`` is a pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``) or a UNet
    folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) whose scheduler config lies
    beside it (``scheduler_config.json``) or in ``../scheduler/``; ``subfolder`` names the UNet's
    folder inside ``path``; ``scheduler`` overrides the scheduler config (a file, a folder, a dict
    or a diffusers scheduler). The result is

        ScoreModel(DiffusersUNet(unet), VPSDE.from_betas(diffusers_betas(config)),
                   prediction={epsilon: "eps", v_prediction: "v", sample: "x0"}[prediction_type],
                   time_input="index", learned_variance=variance_type == "learned_range")

    with the UNet in ``dtype``, in eval mode and without gradients (as
    :func:`scoresde.experiment.load_trained`). Sampling options of the scheduler config
    (``clip_sample``, ``thresholding``, ``timestep_spacing``, ``steps_offset``) are not part of
    the model: pass the equivalent sampler options, and :func:`scheduler_times` for its grid.
    """
    diffusers = _import_diffusers()
    unet_dir, found = _find_folders(Path(path), subfolder)
    if scheduler is None and found is None:
        raise FileNotFoundError(f"no scheduler config for {unet_dir}: looked for "
                                f"{unet_dir / SCHEDULER_CONFIG} and "
                                f"{unet_dir.parent / 'scheduler' / SCHEDULER_CONFIG}; pass scheduler=")
    config = read_scheduler_config(found if scheduler is None else scheduler)
    betas = diffusers_betas(config)
    prediction = prediction_of(config)
    learned_range = learned_range_of(config)
    unet_config = json.loads((unet_dir / "config.json").read_text())
    cls = unet_config.get("_class_name")
    if cls not in UNET_CLASSES:
        raise InputError(f"{unet_dir / 'config.json'} describes a {cls}; load_diffusers loads "
                         f"{' and '.join(UNET_CLASSES)}")
    if not (unet_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"no safetensors weights at {unet_dir / WEIGHTS} (pickled .bin weights are "
                                "not loaded: re-save with save_pretrained(..., safe_serialization=True))")
    if unet_config.get("out_channels") == 2 * unet_config.get("in_channels", 0) and not learned_range:
        raise InputError("the UNet returns twice its input channels (a learned variance) but the scheduler "
                         "config does not say variance_type='learned_range'; pass a config that does")
    unet = getattr(diffusers, cls).from_pretrained(unet_dir, use_safetensors=True, local_files_only=True,
                                                   low_cpu_mem_usage=False, torch_dtype=dtype)
    unet = unet.eval().requires_grad_(False)
    net = DiffusersUNet(unet, learned_range=learned_range, null_class=unet_config.get(NULL_CLASS_KEY))
    return ScoreModel(net, VPSDE.from_betas(betas), prediction=prediction, time_input="index",
                      learned_variance=learned_range)


# --------------------------------------------------------------------------- export


def check_exportable(model: Any) -> DiffusersUNet:
    """The :class:`DiffusersUNet` of ``model``, refusing what a diffusers folder cannot hold."""
    if not isinstance(model, ScoreModel):
        raise InputTypeError(f"export_diffusers needs a scoresde.ScoreModel, got {type(model).__name__} "
                             "(export the inner ScoreModel of a wrapper such as ClassifierFreeGuidance)")
    if not isinstance(model.net, DiffusersUNet):
        raise InputTypeError("export_diffusers needs a diffusers network (a DiffusersUNet: the config "
                             "network 'diffusers_unet2d' or a model from load_diffusers), got "
                             f"{type(model.net).__name__}, which diffusers has no class for")
    sde = model.sde
    if type(sde) is not VPSDE or not isinstance(sde.schedule, DiscreteSchedule):
        raise InputError(f"export_diffusers needs a VP SDE with a discrete β table (VPSDE.from_betas, "
                         f"sde.name='ddpm'), got {sde!r}")
    if model.time_input != "index":
        raise InputError("export_diffusers needs time_input='index' (diffusers UNets take the DDPM step "
                         f"index), got {model.time_input!r}")
    if model.prediction not in PREDICTION_TYPES.values():
        raise InputError(f"diffusers has no prediction_type for prediction={model.prediction!r}; "
                         f"exportable: {sorted(PREDICTION_TYPES.values())}")
    if model.learned_variance != model.net.learned_range:
        raise InputError("the model's learned_variance and its network's learned_range disagree")
    return model.net


def export_diffusers(model: ScoreModel, path: str | Path) -> Path:
    """Write ``model`` as a diffusers pipeline folder at ``path`` and return ``path``.

    The folder holds ``unet/`` (``config.json`` and safetensors weights, by ``save_pretrained``),
    ``scheduler/scheduler_config.json`` with the exact float64 β table as ``trained_betas`` and the
    prediction type, and ``model_index.json``: a ``DDIMPipeline`` (``DDIMScheduler``,
    ``clip_sample=False``) for a ``UNet2DModel``, a ``DDPMPipeline`` (``DDPMScheduler``,
    ``variance_type="learned_range"``) for a learned variance. A ``UNet2DConditionModel``'s folder
    names ``StableDiffusionPipeline`` with these two components only: its text encoder, tokenizer
    and VAE are not part of the model. :func:`load_diffusers` reloads the folder to the same model
    (bit-identical weights and β table, so bit-identical samples).

    The folder is written beside ``path`` and renamed into place, so an interrupted export leaves
    nothing at ``path``.

    Raises:
        TypeError / ValueError: not a ScoreModel on a :class:`DiffusersUNet`, not a VP SDE with a
            discrete β table, ``time_input`` other than ``"index"``, or a score prediction.
        FileExistsError: ``path`` exists and is not an empty folder.
    """
    diffusers = _import_diffusers()
    net = check_exportable(model)
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder; export_diffusers writes a new "
                              "pipeline folder (remove it or pass another path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a killed export leaves no half folder.
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        _write_pipeline(diffusers, model, net, Path(tmp))
        os.replace(tmp, path)
        os.mkdir(tmp)  # for TemporaryDirectory's clean-up
    return path


def _write_pipeline(diffusers: Any, model: ScoreModel, net: DiffusersUNet, path: Path) -> None:
    net.unet.save_pretrained(path / "unet", safe_serialization=True)
    if net.null_class is not None:
        config_file = path / "unet" / "config.json"
        unet_config = json.loads(config_file.read_text())
        unet_config[NULL_CLASS_KEY] = int(net.null_class)
        config_file.write_text(json.dumps(unet_config, indent=2, sort_keys=True) + "\n")
    betas = model.sde.schedule.betas
    prediction_type = {v: k for k, v in PREDICTION_TYPES.items()}[model.prediction]
    common = {"num_train_timesteps": len(betas), "trained_betas": betas.tolist(),
              "prediction_type": prediction_type, "clip_sample": False}
    if net.learned_range:
        scheduler = diffusers.DDPMScheduler(variance_type="learned_range", **common)
        pipeline = "DDPMPipeline"
    else:
        scheduler = diffusers.DDIMScheduler(set_alpha_to_one=True, **common)
        pipeline = "DDIMPipeline"
    if net.cond_key == "encoder_hidden_states":
        pipeline = "StableDiffusionPipeline"
    scheduler.save_pretrained(path / "scheduler")
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", type(scheduler).__name__],
             "unet": ["diffusers", type(net.unet).__name__]}
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


__all__ = [
    "DiffusersUNet",
    "DiffusersUNet2D",
    "diffusers_betas",
    "export_diffusers",
    "load_diffusers",
    "read_scheduler_config",
    "scheduler_times",
]
