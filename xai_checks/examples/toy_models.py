"""A small CNN and a CPU training loop for the synthetic lesion task.

Small enough to train in well under a minute on two cores, deep enough that
its last conv layer keeps a 16x16 grid: a 64x64 ruler strip is then a few
cells wide, which Grad-CAM can resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xai_checks.predict import predict_labels

__all__ = ["SmallCNN", "TrainReport", "accuracy", "predict", "train_classifier"]


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    # GroupNorm, not BatchNorm: no running statistics, so train and eval mode
    # agree, and a model trained in seconds does not collapse when evaluated.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """Four conv blocks (64 -> 32 -> 16 px), global average pooling, a linear head.

    Takes images in [0, 1] with no external normalisation, so an audit can feed
    the pixels it loaded straight in.
    """

    def __init__(self, num_classes: int = 2, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(3, width // 2),
            nn.MaxPool2d(2),
            *_conv_block(width // 2, width),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width),
            # Last block unnormalised: GroupNorm would force every channel to be
            # active on about half the image, a heatmap floor that hides the evidence.
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@dataclass(frozen=True)
class TrainReport:
    epochs: int
    final_loss: float
    train_accuracy: float


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> TrainReport:
    """Plain Adam + cross-entropy loop on the CPU; deterministic by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter init of layers created before is the caller's; dropout etc.
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(images[idx]), labels[idx])
            loss.backward()
            optimiser.step()
    model.eval()
    return TrainReport(epochs, loss.item(), accuracy(model, images, labels))


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted class per image: :func:`xai_checks.predict.predict_labels` in larger batches."""
    return predict_labels(model, images, batch_size=batch_size)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    return float((predict(model, images) == labels).float().mean())
