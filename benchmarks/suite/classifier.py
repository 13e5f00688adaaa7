"""A small CNN classifier of the 8×8 digits whose features measure digits samples.

The Fréchet distance of the digits benchmark (``scoresde bench``, ``benchmarks/samplers.py``)
compares generated and real digits in the 64-dimensional feature space of this network (the
activations before its last layer), as FID does with Inception for natural images.

* Input: images as the digits model sees them, ``(B, 1, 8, 8)`` in ``[-1, 1]``
  (``load_dataset("digits", data_range=(-1, 1))``, the range of ``configs/digits_vp.py``).
* Architecture: three 3×3 convolutions (16, 32, 64 channels; the last two with stride 2),
  a 256 → 64 linear layer (the features) and a 64 → 10 linear classifier; SiLU throughout,
  dropout 0.3 before both linear layers (training only).
* Training: the 1500 images of the train split (the last 297 of scikit-learn's 1797 form the
  test split, as in :mod:`scoresde.data`), Adam (lr 1e-3, cosine decay, 60 epochs, batches of
  64), cross-entropy with label smoothing 0.1, a fixed seed; about ten seconds on a CPU core.
  Test accuracy 96 % — the level of an SVM or k-NN on this split (the test writers are
  harder than a random split's). The shipped weights ``models/digits_classifier.pt`` come from::

      python benchmarks/suite/classifier.py --out models/digits_classifier.pt

  which prints the test accuracy; the file records it too (``load_classifier(...).meta``).

The weights file holds only tensors and plain values and is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scoresde.data import load_labelled_dataset

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "models" / "digits_classifier.pt"  # in the checkout
DATA_RANGE = (-1.0, 1.0)
FEATURE_DIM = 64
DROPOUT = 0.3


class DigitsClassifier(nn.Module):
    """``features(x)``: ``(B, 64)``; ``forward(x)``: ``(B, 10)`` logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),  # 4×4
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),  # 2×2
            nn.Flatten(), nn.Dropout(DROPOUT), nn.Linear(256, FEATURE_DIM), nn.SiLU(),
        )
        self.head = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(FEATURE_DIM, 10))
        self.meta: dict[str, Any] = {}

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"expected digits of shape (B, 1, 8, 8) in [-1, 1], got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def digits_with_labels(split: str) -> tuple[Tensor, Tensor]:
    """Images of a digits split in ``[-1, 1]`` and their labels (scikit-learn's targets)."""
    x, labels, _ = load_labelled_dataset("digits", split, data_range=DATA_RANGE)
    return x, labels


@torch.no_grad()
def accuracy(model: DigitsClassifier, x: Tensor, labels: Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == labels).float().mean())


def train_classifier(epochs: int = 60, batch_size: int = 64, lr: float = 1e-3, label_smoothing: float = 0.1,
                     seed: int = 0) -> DigitsClassifier:
    """Train on the train split; ``.meta`` records the settings and the test accuracy."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = digits_with_labels("train")
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    x_test, y_test = digits_with_labels("test")
    model.meta = {"test_accuracy": accuracy(model, x_test, y_test), "train_accuracy": accuracy(model, x, y),
                  "epochs": epochs, "batch_size": batch_size, "lr": lr,
                  "label_smoothing": label_smoothing, "seed": seed,
                  "feature_dim": FEATURE_DIM, "data_range": list(DATA_RANGE)}
    model.eval()
    return model


def save_classifier(model: DigitsClassifier, path: str | Path) -> Path:
    """Write the weights and ``meta`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "meta": model.meta}, tmp)
    os.replace(tmp, path)
    return path


def load_classifier(path: str | Path = DEFAULT_PATH) -> DigitsClassifier:
    """The classifier from ``path`` (default: the shipped ``models/digits_classifier.pt``), frozen
    in eval mode. Read with ``weights_only=True``: no pickled code runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no digits classifier at {path}; train one with "
                                f"`python benchmarks/suite/classifier.py --out {path}`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitsClassifier()
    model.load_state_dict(state["state_dict"])
    model.meta = dict(state.get("meta", {}))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the digits feature classifier and save it.")
    parser.add_argument("--out", default=str(DEFAULT_PATH), help="weights file to write")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = train_classifier(epochs=args.epochs, seed=args.seed)
    path = save_classifier(model, args.out)
    print(f"test accuracy {model.meta['test_accuracy']:.4f} (train {model.meta['train_accuracy']:.4f}) "
          f"after {time.perf_counter() - start:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
