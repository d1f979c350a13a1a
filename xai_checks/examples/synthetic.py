"""Procedural dermoscopy-like images with a controllable ruler shortcut.

Real dermoscopy sets cannot ship with the project, and a shortcut test needs
ground truth anyway: here every ruler's exact pixel mask is known, and
``shortcut_strength`` sets how strongly the ruler goes with "malignant".
Generation is batched torch and deterministic by seed (a private generator,
never the global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ARTIFACTS", "CLASS_NAMES", "Artifact", "LesionBatch", "RulerPlacement", "make_lesions"]

CLASS_NAMES: tuple[str, str] = ("benign", "malignant")
BENIGN, MALIGNANT = 0, 1

RulerPlacement = Literal["correlated", "always", "never", "swapped"]
"""Where rulers go.

``correlated``: with probability ρ the ruler is present exactly on malignant
images, otherwise it is a fair coin independent of the label.
``always`` / ``never``: every image has one / none (audit and clean test sets).
``swapped``: rulers on benign images only, the anti-correlated test set that
exposes a model which learned the ruler instead of the lesion.
"""

Artifact = Literal["ruler", "tag", "band", "stamp", "grating", "weave", "vignette"]
"""What the shortcut is. Moving ones, whose place differs from image to image:

* ``ruler``: a light strip with ticks along a random border;
* ``tag``: a hospital-style label near a random corner (a dark box with two
  light lines of "text");
* ``grating``: a faint diagonal grating (contrast 0.12) in a square near a
  random corner, a low-contrast texture rather than an object.

Fixed-place ones, at the same pixels on every image (a scanner's frame, a
watermark burned into one corner), which cluster into a single strategy:

* ``band``: a light band with dark dashes along the bottom edge;
* ``stamp``: a small light ring in the top-left corner;
* ``weave``: a faint fine checkerboard (contrast 0.14) in a strip along the
  right edge, a fixed-place low-contrast texture (a scanner's screen pattern);
* ``vignette``: the four corners darkened smoothly outside the inscribed
  circle (a dermoscope's vignette), fixed-place, shading rather than an
  object, and in four parts.
"""

ARTIFACTS: tuple[Artifact, ...] = get_args(Artifact)

_SKIN = (0.88, 0.70, 0.60)
_BENIGN_COLOUR = (0.60, 0.40, 0.28)
_MALIGNANT_COLOUR = (0.36, 0.24, 0.24)
_RULER_COLOUR = (0.96, 0.94, 0.78)
_TICK_COLOUR = (0.12, 0.12, 0.14)
_TAG_COLOUR = (0.10, 0.16, 0.34)
_TAG_TEXT_COLOUR = (0.92, 0.92, 0.95)


@dataclass(frozen=True)
class LesionBatch:
    """Images in [0, 1] as (N, 3, H, W), labels (N,), ruler masks (N, H, W) bool."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    has_ruler: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


def make_lesions(
    n: int,
    *,
    shortcut_strength: float = 0.0,
    seed: int = 0,
    size: int = 64,
    ruler: RulerPlacement = "correlated",
    ruler_width: int = 7,
    artifact: Artifact = "ruler",
) -> LesionBatch:
    """Generate ``n`` labelled lesion images, balanced between the two classes.

    Benign and malignant differ by a subtle cue: malignant lesions are a little
    darker and have a more irregular border. The ruler is a high-contrast strip
    with tick marks at a random image border, which is exactly why a network
    prefers it when it predicts the label. Another ``artifact`` (see
    :data:`Artifact`) takes the ruler's place; ``ruler`` and ``has_ruler`` then
    refer to it. Base images do not depend on ``ruler`` or ``artifact``: the
    same seed with ``ruler="always"`` and ``"never"`` gives the same images
    with and without the artifact.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= shortcut_strength <= 1.0:
        raise ValueError(f"shortcut_strength must lie in [0, 1], got {shortcut_strength}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    gen = torch.Generator().manual_seed(seed)

    labels = torch.arange(n) % 2
    labels = labels[torch.randperm(n, generator=gen)]
    malignant = labels == MALIGNANT

    has_ruler = _place_rulers(malignant, shortcut_strength, ruler, gen)
    images = _skin(n, size, gen)
    images = _paint_lesions(images, malignant, gen)
    if artifact == "ruler":
        images, masks = _paint_rulers(images, has_ruler, ruler_width, gen)
    elif artifact == "tag":
        images, masks = _paint_tags(images, has_ruler, gen)
    elif artifact in _PAINTERS:
        images, masks = _PAINTERS[artifact](images, has_ruler, gen)
    else:
        raise ValueError(f"unknown artifact {artifact!r}; known: {', '.join(ARTIFACTS)}")
    return LesionBatch(images.clamp_(0.0, 1.0), labels, masks, has_ruler)


def _place_rulers(
    malignant: Tensor, strength: float, placement: RulerPlacement, gen: torch.Generator
) -> Tensor:
    n = malignant.shape[0]
    if placement == "always":
        return torch.ones(n, dtype=torch.bool)
    if placement == "never":
        return torch.zeros(n, dtype=torch.bool)
    if placement == "swapped":
        return ~malignant
    if placement != "correlated":
        raise ValueError(f"unknown ruler placement {placement!r}")
    follows_label = torch.rand(n, generator=gen) < strength
    coin = torch.rand(n, generator=gen) < 0.5
    return torch.where(follows_label, malignant, coin)


def _colour(rgb: tuple[float, float, float]) -> Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1)


def _skin(n: int, size: int, gen: torch.Generator) -> Tensor:
    tone = _colour(_SKIN) + 0.04 * torch.randn(n, 1, 1, 1, generator=gen)
    mottling = F.interpolate(
        torch.randn(n, 1, 8, 8, generator=gen), size=(size, size), mode="bicubic"
    )
    grain = torch.randn(n, 3, size, size, generator=gen)
    return tone + 0.035 * mottling + 0.02 * grain


def _paint_lesions(images: Tensor, malignant: Tensor, gen: torch.Generator) -> Tensor:
    n, _, size, _ = images.shape
    coords = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    centre = 0.5 + 0.08 * (2 * torch.rand(n, 2, 1, 1, generator=gen) - 1)
    dy, dx = yy - centre[:, 0], xx - centre[:, 1]
    dist = torch.sqrt(dy**2 + dx**2)
    theta = torch.atan2(dy, dx)

    # Border irregularity: a few angular harmonics, stronger for malignant lesions.
    amplitude = torch.where(
        malignant, 0.08 + 0.10 * torch.rand(n, generator=gen), 0.06 * torch.rand(n, generator=gen)
    ).view(n, 1, 1)
    harmonics = torch.arange(3, 8).view(1, -1, 1, 1).float()
    phase = 2 * math.pi * torch.rand(n, harmonics.shape[1], 1, 1, generator=gen)
    weights = torch.rand(n, harmonics.shape[1], 1, 1, generator=gen)
    weights = weights / weights.sum(dim=1, keepdim=True)
    wobble = (weights * torch.cos(harmonics * theta.unsqueeze(1) + phase)).sum(dim=1)
    radius = (0.15 + 0.06 * torch.rand(n, 1, 1, generator=gen)) * (1 + amplitude * 2 * wobble)
    alpha = torch.sigmoid((radius - dist) * size / 1.2).unsqueeze(1)

    # Colour: malignant darker on average, with overlap between the classes.
    mix = torch.where(
        malignant, 0.4 + 0.6 * torch.rand(n, generator=gen), 0.6 * torch.rand(n, generator=gen)
    ).view(n, 1, 1, 1)
    colour = (1 - mix) * _colour(_BENIGN_COLOUR) + mix * _colour(_MALIGNANT_COLOUR)
    blotches = F.interpolate(
        torch.randn(n, 1, 6, 6, generator=gen), size=(size, size), mode="bicubic"
    )
    lesion = colour * (1 + 0.08 * blotches)
    return (1 - alpha) * images + alpha * lesion


def _paint_rulers(
    images: Tensor, has_ruler: Tensor, width: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    n, _, size, _ = images.shape
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    ticks = torch.zeros(n, size, size, dtype=torch.bool)
    quarter_turns = torch.randint(0, 4, (n,), generator=gen)  # which border holds the ruler
    lengths = (size * (0.6 + 0.3 * torch.rand(n, generator=gen))).long()
    starts = (torch.rand(n, generator=gen) * (size - lengths)).long()
    inset = 1
    along = torch.arange(size)
    for i in torch.nonzero(has_ruler).flatten().tolist():
        start, stop = int(starts[i]), int(starts[i] + lengths[i])
        strip = torch.zeros(size, size, dtype=torch.bool)
        tick = torch.zeros(size, size, dtype=torch.bool)
        tick_rows = (along >= start) & (along < stop) & (along % 4 == 0)
        # Draw along the top border, then rotate into place.
        strip[inset : inset + width, start:stop] = True
        tick[inset : inset + width // 2 + 1, tick_rows] = True
        masks[i] = torch.rot90(strip, int(quarter_turns[i]))
        ticks[i] = torch.rot90(tick, int(quarter_turns[i]))
    strip_colour = _colour(_RULER_COLOUR).expand(n, 3, size, size)
    images = torch.where(masks.unsqueeze(1), strip_colour, images)
    images = torch.where(ticks.unsqueeze(1), _colour(_TICK_COLOUR).expand_as(images), images)
    return images, masks


def _paint_tags(images: Tensor, has_tag: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A dark label box near a random corner, with two light text lines; mask = the box."""
    n, _, size, _ = images.shape
    height, width, inset = size * 3 // 16, size * 5 // 16, size // 16
    corners = torch.randint(0, 4, (n,), generator=gen)
    jitter = torch.randint(0, inset + 1, (n, 2), generator=gen)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    text = torch.zeros(n, size, size, dtype=torch.bool)
    for i in torch.nonzero(has_tag).flatten().tolist():
        top = inset + int(jitter[i, 0])
        left = inset + int(jitter[i, 1])
        if int(corners[i]) in (1, 2):
            top = size - top - height
        if int(corners[i]) in (2, 3):
            left = size - left - width
        masks[i, top : top + height, left : left + width] = True
        for line in (height // 3, 2 * height // 3):
            text[i, top + line, left + 2 : left + width - 2 - line // 2] = True
    box = _colour(_TAG_COLOUR).expand(n, 3, size, size)
    images = torch.where(masks.unsqueeze(1), box, images)
    images = torch.where(text.unsqueeze(1), _colour(_TAG_TEXT_COLOUR).expand_as(images), images)
    return images, masks


def _paint_band(images: Tensor, has_band: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A light band with dark dashes along the bottom edge, identical on every image."""
    size = images.shape[-1]
    height = max(3, size // 12)
    band = torch.zeros(size, size, dtype=torch.bool)
    band[size - 1 - height : size - 1, 2 : size - 2] = True
    dashes = band.clone()
    dashes[:, (torch.arange(size) // 3) % 2 == 0] = False
    dashes[: size - 1 - height + height // 3] = False
    dashes[size - 1 - height // 3 :] = False
    return _stamp_pattern(images, has_band, band, dashes, _RULER_COLOUR, _TICK_COLOUR)


def _paint_stamp(images: Tensor, has_stamp: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A small light ring with a dark centre in the top-left corner, identical on every image."""
    size = images.shape[-1]
    radius = size / 10
    centre = size / 16 + radius
    coords = torch.arange(size) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dist = torch.sqrt((yy - centre) ** 2 + (xx - centre) ** 2)
    disc = dist <= radius
    core = dist <= radius / 2.5
    return _stamp_pattern(images, has_stamp, disc, core, _TAG_TEXT_COLOUR, _TAG_COLOUR)


def _paint_gratings(
    images: Tensor, has_grating: Tensor, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A faint diagonal grating added in a square near a random corner: texture, not object."""
    n, _, size, _ = images.shape
    side, inset = size * 5 // 16, size // 16
    corners = torch.randint(0, 4, (n,), generator=gen)
    coords = torch.arange(size)
    stripes = torch.cos(2 * math.pi * (coords.view(-1, 1) + coords.view(1, -1)) / 4.0)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in torch.nonzero(has_grating).flatten().tolist():
        top = inset if int(corners[i]) in (0, 3) else size - inset - side
        left = inset if int(corners[i]) in (0, 1) else size - inset - side
        masks[i, top : top + side, left : left + side] = True
    texture = 0.06 * stripes.expand(n, 3, size, size)
    return torch.where(masks.unsqueeze(1), images + texture, images), masks


def _paint_weave(images: Tensor, has_weave: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A faint 2-pixel checkerboard added in a strip along the right edge, on every image alike."""
    n, _, size, _ = images.shape
    width, inset = size // 8, size // 32
    strip = torch.zeros(size, size, dtype=torch.bool)
    strip[inset : size - inset, size - inset - width : size - inset] = True
    coords = torch.arange(size)
    checker = 0.07 * (1 - 2 * ((coords.view(-1, 1) + coords.view(1, -1)) % 2)).float()
    masks = has_weave.view(n, 1, 1) & strip
    return torch.where(masks.unsqueeze(1), images + checker, images), masks


def _paint_vignette(
    images: Tensor, has_vignette: Tensor, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The corners darkened outside the inscribed circle, smoothly, by up to half."""
    n, _, size, _ = images.shape
    coords = (torch.arange(size) + 0.5) / size - 0.5
    radius = torch.sqrt(coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2)
    shade = (0.5 * ((radius - 0.47) / 0.15).clamp(0.0, 1.0)).view(1, 1, size, size)
    masks = has_vignette.view(n, 1, 1) & (shade[0, 0] > 0.05)
    return torch.where(has_vignette.view(n, 1, 1, 1), images * (1 - shade), images), masks


def _stamp_pattern(
    images: Tensor,
    present: Tensor,
    shape: Tensor,
    detail: Tensor,
    colour: tuple[float, float, float],
    detail_colour: tuple[float, float, float],
) -> tuple[Tensor, Tensor]:
    """Paint the same (H, W) ``shape`` with its ``detail`` onto the images where ``present``."""
    n, _, size, _ = images.shape
    where = present.view(n, 1, 1) & shape
    detailed = (present.view(n, 1, 1) & detail).unsqueeze(1)
    images = torch.where(where.unsqueeze(1), _colour(colour).expand(n, 3, size, size), images)
    images = torch.where(detailed, _colour(detail_colour).expand(n, 3, size, size), images)
    return images, where


_PAINTERS = {
    "band": _paint_band,
    "stamp": _paint_stamp,
    "grating": _paint_gratings,
    "weave": _paint_weave,
    "vignette": _paint_vignette,
}
