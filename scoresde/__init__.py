"""scoresde: score-based generative models with SDEs — one SDE object, one model wrapper,
interchangeable samplers, exact likelihoods, each checked against an analytic oracle."""

from scoresde import grids, interop, latent, ode, samplers
from scoresde.analytic import GaussianMixture
from scoresde.autoencoding import load_autoencoder, train_autoencoder
from scoresde.bound import VariationalBound, variational_bound
from scoresde.classifier import NoisyClassifier, classifier_loss, train_classifier
from scoresde.encoding import encode, interpolate
from scoresde.errors import CheckpointError, InputError, InputTypeError, InputWarning
from scoresde.grid_search import optimize_grid
from scoresde.guidance import ClassifierFreeGuidance, ClassifierGuidance
from scoresde.inpainting import InpaintResult, inpaint
from scoresde.interop import export_diffusers, load_diffusers
from scoresde.latent import (
    Autoencoder,
    DiffusersAutoencoder,
    LatentDiffusion,
    LinearAutoencoder,
    load_autoencoder_kl,
)
from scoresde.likelihood import BitsPerDim, LikelihoodResult, bits_per_dim, log_likelihood
from scoresde.model import CountingModel, DiffusionModel, Prediction, ScoreModel
from scoresde.nn.autoencoder import ConvAutoencoder
from scoresde.noise import GeneratorNoise, PerSampleNoise
from scoresde.sampling import SampleResult, sample
from scoresde.sde import SDE, VESDE, VPSDE, SubVPSDE
from scoresde.variance import AnalyticVariance, EpsMomentTable, estimate_eps_moment

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "AnalyticVariance",
    "Autoencoder",
    "BitsPerDim",
    "CheckpointError",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConvAutoencoder",
    "CountingModel",
    "DiffusersAutoencoder",
    "DiffusionModel",
    "EpsMomentTable",
    "GaussianMixture",
    "GeneratorNoise",
    "InpaintResult",
    "InputError",
    "InputTypeError",
    "InputWarning",
    "LatentDiffusion",
    "LikelihoodResult",
    "LinearAutoencoder",
    "NoisyClassifier",
    "PerSampleNoise",
    "Prediction",
    "SampleResult",
    "ScoreModel",
    "SubVPSDE",
    "VariationalBound",
    "bits_per_dim",
    "classifier_loss",
    "encode",
    "estimate_eps_moment",
    "export_diffusers",
    "grids",
    "inpaint",
    "interop",
    "interpolate",
    "latent",
    "load_autoencoder",
    "load_autoencoder_kl",
    "load_diffusers",
    "log_likelihood",
    "ode",
    "optimize_grid",
    "sample",
    "samplers",
    "train_autoencoder",
    "train_classifier",
    "variational_bound",
]
