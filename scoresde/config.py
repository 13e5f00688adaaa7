"""Defaults shared by every experiment config in ``configs/`` (each edits a copy).

ml_collections.ConfigDict because score_sde users know it and absl's config_flags give
``--config=configs/x.py --config.training.lr=1e-4`` overrides with type checking for free;
a locked ConfigDict refuses keys it does not have.

Keys added after checkpoints were shipped are listed in :data:`ADDED_IDENTITY_KEYS`: a checkpoint
whose config lacks one was made with its default, so a missing key and its default are the same
experiment (:func:`scoresde.experiment.identity` leaves such keys out while they hold the default).
The runtime options of :data:`RUNTIME_KEYS` (``model.autocast``, ``model.compile``,
``model.channels_last``) are left out of the identity whatever they hold.
"""

import math

from ml_collections import ConfigDict

from scoresde.errors import InputError

# (group, key) of identity keys added after checkpoints were shipped; see the module docstring.
ADDED_IDENTITY_KEYS = (("model", "num_classes"), ("model", "learned_variance"))
# (group, key) of runtime options inside the identity groups: how the network is run (autocast,
# torch.compile, memory format), never what its weights mean, so never part of a checkpoint's identity.
RUNTIME_KEYS = (("model", "autocast"), ("model", "compile"), ("model", "channels_last"))


def default_config() -> ConfigDict:
    """A fresh ConfigDict with every key an experiment may set."""
    config = ConfigDict()

    config.data = data = ConfigDict()
    data.name = "gmm2d"
    data.path = ""  # folder or file for cifar10 / npz / folder data sets
    data.n = 0  # 0: the whole data set (toy sets: their default size)
    data.seed = 0
    data.data_range = (-1.0, 1.0)  # the range images are scaled to

    config.sde = sde = ConfigDict()
    sde.name = "vp"  # vp | subvp | ve | vp_cosine | ddpm
    sde.beta_min = 0.1
    sde.beta_max = 20.0
    sde.sigma_min = 0.01
    sde.sigma_max = 50.0
    sde.N = 1000

    config.model = model = ConfigDict()
    model.prediction = "eps"
    model.time_input = "scaled"  # 999·t: the sinusoidal embedding needs a spread-out input
    model.network = ConfigDict({"name": "mlp", "dim": 2, "hidden": 128, "layers": 3, "emb_dim": 32})
    model.num_classes = 0  # > 0: a class-conditional network, net(x, c, labels); labels from the data set
    model.learned_variance = False  # the network also outputs the variance interpolation v
    # Runtime options (RUNTIME_KEYS: how the network runs, not what its weights mean):
    model.autocast = ""  # "" | "bfloat16" | "float16": the network (only) under torch.autocast
    model.compile = ""  # "": off; else a torch.compile backend ("inductor", "eager", "cudagraphs", ...)
    model.channels_last = False  # image networks in the channels-last memory format

    config.training = training = ConfigDict()
    training.loss = "dsm"  # dsm | ddpm | smld | hybrid (learned variance)
    training.steps = 2000
    training.batch_size = 256
    training.lr = 2e-3
    training.warmup = 100
    training.grad_clip = 1.0
    training.ema_decay = 0.999
    training.eps = 1e-5
    training.likelihood_weighting = False
    training.label_dropout = 0.0  # probability of training on the null label (classifier-free guidance)
    training.vlb_weight = 1e-3  # λ of the hybrid loss L_simple + λ·L_vlb
    training.reduce_mean = True
    training.seed = 0
    training.log_every = 100
    training.ckpt_every = 1000
    training.keep_checkpoints = 2

    config.sampling = sampling = ConfigDict()
    sampling.sampler = "ddim"
    sampling.steps = 50
    sampling.n = 1000
    sampling.seed = 1

    config.inpaint = inpaint = ConfigDict()  # scoresde inpaint: the mask and the method
    inpaint.mask = "right_half"  # left_half | right_half | top_half | bottom_half | center | random
    inpaint.observed_fraction = 0.5  # mask "random": the share of coordinates observed, per sample
    inpaint.method = "repaint"  # replace | repaint | ddim (scoresde.inpaint)
    inpaint.steps = 100
    inpaint.jump_length = 10  # RePaint's j and r
    inpaint.n_resample = 10
    inpaint.n = 16  # test points completed

    config.autoencoder = autoencoder = ConfigDict()  # scoresde.autoencoding.train_autoencoder
    autoencoder.network = ConfigDict({"in_channels": 1, "latent_channels": 2, "channels": 16,
                                      "channel_mult": (1, 2), "num_res_blocks": 1})  # ConvAutoencoder
    autoencoder.kl_weight = 1e-2  # weight of KL(q(z | x) || N(0, I)) against the summed squared error

    config.latent = latent = ConfigDict()  # latent diffusion: the score model works on scale·(E(x) − shift)
    latent.autoencoder = ""  # "": a pixel-space model; else its checkpoint or train_autoencoder workdir
    latent.scale_factor = 0.0  # 0: the autoencoder's measured 1/std of the training latents

    config.eval = evaluation = ConfigDict()
    evaluation.n_test = 0
    evaluation.batch_size = 256
    evaluation.trace = "rademacher"
    evaluation.rtol = 1e-4
    evaluation.atol = 1e-4
    return config



def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_range(value: object) -> bool:
    return (isinstance(value, tuple | list) and len(value) == 2 and all(_is_real(v) for v in value)
            and value[0] < value[1])


# group -> (key, test, what is expected): the values check_values enforces. Keys a config does not
# have are skipped (they take their defaults where they are read).
RANGES = {
    "data": (
        ("n", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: the whole data set)"),
        ("seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("data_range", _is_range, "a tuple of 2 finite numbers (lo, hi) with lo < hi, e.g. -1,1"),
    ),
    "training": (
        ("steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (the step to train to)"),
        ("batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("lr", lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        ("warmup", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: no warm-up)"),
        ("grad_clip", lambda v: _is_real(v) and v >= 0, "a finite number >= 0 (0: no clipping)"),
        ("ema_decay", lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("eps", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1) (the smallest training time)"),
        ("label_dropout", lambda v: _is_real(v) and 0 <= v <= 1, "a probability in [0, 1]"),
        ("vlb_weight", lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
        ("seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("log_every", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (log every N steps)"),
        ("ckpt_every", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (a checkpoint every N steps)"),
        ("keep_checkpoints", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (checkpoints kept)"),
    ),
    "sampling": (
        ("steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("n", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("seed", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ),
    "inpaint": (
        ("steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("n", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("jump_length", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("n_resample", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ),
    "eval": (
        ("n_test", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: the whole test split)"),
        ("batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("rtol", lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        ("atol", lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    ),
}


def check_values(config: ConfigDict, groups: tuple[str, ...] = tuple(RANGES)) -> None:
    """Check the values of ``groups`` of ``config`` against :data:`RANGES` (types and ranges that
    the code reading them relies on: a ``ckpt_every`` of 0, a ``batch_size`` of 0, a scalar
    ``data_range``).

    Raises:
        InputError: naming the first key out of range, its value and what it must be.
    """
    for group in groups:
        values = config.get(group) or {}
        for key, ok, expected in RANGES[group]:
            if key in values and not ok(values[key]):
                raise InputError(f"config {group}.{key} must be {expected}, got {values[key]!r}; set it with "
                                 f"--config.{group}.{key}=VALUE (or in the config file)")
