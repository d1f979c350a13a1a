"""Model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A heatmap that survives randomising the weights it claims to explain describes
the input, not the model: an edge detector looks plausible on every image and
passes any check that only looks at the maps. The test re-initialises the
layers of a copy of the model one at a time from the output side down (the
cascade), explains the copy after each step and rank-correlates the new maps
with the original ones. A faithful method's maps decorrelate as the cascade
goes down; a rank correlation that stays near 1 flags the method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xai_checks._inputs import Targets, check_target_shape, prepare_images
from xai_checks.cam.core import CAMEngine
from xai_checks.errors import NonFiniteError, XAICheckError
from xai_checks.methods import get_method
from xai_checks.predict import predict_labels

__all__ = [
    "MAX_CASCADE_STEPS",
    "Explainer",
    "SanityResult",
    "cam_explainer",
    "cascade_blocks",
    "cascading_randomization",
    "method_explainer",
    "spearman",
]

Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``(model, images, targets) -> (N, H, W)`` heatmaps of the model it is given."""

_FALLBACK_STD = 0.02
"""Std for parameters of modules without ``reset_parameters``.

Those are mostly class tokens, position embeddings and similar free tensors,
which ViT/BERT-style models initialise from N(0, 0.02); drawing from it puts
them back at initialisation scale, as ``reset_parameters`` does for the rest.
"""


@dataclass(frozen=True)
class SanityResult:
    """Rank correlations between the original maps and those after each cascade step.

    ``layers`` is the cascade, output side first: after step k the layers
    ``layers[:k + 1]`` are re-initialised. ``spearman`` is (steps, N), one
    value per step and image (NaN where a map is constant). ``targets`` (N,)
    are the classes explained at every step; ``original`` and ``randomized``
    are the (N, H, W) maps of the untouched model and after the last step.
    """

    layers: tuple[str, ...]
    spearman: Tensor
    targets: Tensor
    original: Tensor
    randomized: Tensor

    @property
    def mean_spearman(self) -> Tensor:
        """Mean over images per step, ignoring images whose correlation is undefined."""
        return torch.nanmean(self.spearman, dim=1)

    @property
    def final_spearman(self) -> float:
        """Mean at the last step taken: the fully randomised model unless ``max_steps`` cut it."""
        return float(self.mean_spearman[-1])


def cam_explainer(
    method: str | type[CAMEngine] = "gradcam", target_layer: str | Sequence[str] | None = None
) -> Explainer:
    """An explainer that builds a fresh CAM on whichever model it is handed.

    A CAM bound to one model would keep explaining it while its copy is
    randomised, so layers are taken by dotted name and resolved on each model
    anew; None probes each model for its default layer.
    """
    if isinstance(method, str):
        engine = get_method(method, kind="cam").load()
    elif isinstance(method, type) and issubclass(method, CAMEngine):
        engine = method
    else:
        raise TypeError(f"method must be a CAM method name or a CAMEngine subclass, got {method!r}")
    layers = _layer_names(target_layer)

    def explain(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        return engine(model, layers)(images, targets)

    return explain


def method_explainer(method: str, target_layer: str | Sequence[str] | None = None) -> Explainer:
    """An explainer for any registered method (``xai_checks.methods``), built anew per model.

    CAM methods take the target layer (:func:`cam_explainer`); attention
    methods (rollout) are class-agnostic, so the fixed targets select nothing.
    """
    spec = get_method(method)
    if spec.needs_target_layer:
        return cam_explainer(method, target_layer)
    explainer = spec.load()

    def explain(model: nn.Module, images: Tensor, _targets: Tensor) -> Tensor:
        return explainer(model)(images)

    return explain


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row of two (N, ...) tensors, as (N,) float64.

    Ties share their average rank, as in scipy: ReLU'd heatmaps are mostly
    exact zeros, and ordinal ranks would invent an order among them. A row
    that is constant (or holds NaN) in either tensor has no defined
    correlation and gives NaN.
    """
    if a.shape != b.shape:
        raise XAICheckError(
            f"spearman needs tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim == 0:
        raise XAICheckError("spearman needs (N, ...) tensors with one row per sample, got scalars")
    a, b = (x.flatten(1) if x.ndim > 1 else x.unsqueeze(1) for x in (a, b))
    ra, rb = _centred_ranks(a), _centred_ranks(b)
    var = (ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)
    # sqrt(v * v) == v exactly in IEEE arithmetic, so identical rows give exactly 1.
    rho = ((ra * rb).sum(dim=1) / var.sqrt()).clamp(-1.0, 1.0)
    undefined = (var == 0) | a.isnan().any(dim=1) | b.isnan().any(dim=1)
    return torch.where(undefined, torch.nan, rho)


def cascading_randomization(
    model: nn.Module,
    images: Tensor,
    explainer: Explainer,
    targets: Targets = None,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    batch_size: int | None = None,
) -> SanityResult:
    """Re-initialise the layers of a copy of ``model`` top-down and track how its maps change.

    The cascade is :func:`cascade_blocks`: whole blocks (a ResNet stage, a
    Transformer layer) output side first, at most ``MAX_CASCADE_STEPS``, so
    its cost is bounded for any model (a ResNet-50 has 161 parametrised
    modules; one CAM pass each made the check the slowest stage of a gate).
    A small model's blocks are its single layers. ``max_steps`` keeps only
    the first steps (the result's last step is then not a fully random
    model). Step k re-initialises one more block, seeded by ``seed + k``
    inside a forked RNG, so results are reproducible and the global RNG is
    untouched.

    ``model`` is only deep-copied, never run, so neither this check nor the
    explainer can change it. Targets default to the model's predictions (eval
    mode) and stay fixed, as in the paper: a new target after each step would
    mix a change of question into the change of answer.

    ``batch_size`` explains that many images per pass (default: all at once);
    a model exported with a static batch needs that batch (or one that pads up to it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images = prepare_images(model, images)
    blocks = cascade_blocks(model)
    if not blocks:
        raise XAICheckError(f"{type(model).__name__} has no parameters: nothing to randomise")
    layers = [name for name, _ in blocks]
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        layers = layers[:max_steps]

    twin = copy.deepcopy(model)
    n = images.shape[0]
    chunk = n if batch_size is None else max(1, int(batch_size))
    if targets is None:  # in the passes the explainer sees
        fixed = predict_labels(twin, images, batch_size=chunk)
    else:
        fixed = check_target_shape(targets, n)
    fixed = fixed.to(images.device)
    original = _explain(explainer, twin, images, fixed, "the original model", chunk)
    modules = dict(twin.named_modules())
    members = dict(blocks)
    rows, heatmaps = [], original
    for step, name in enumerate(layers):
        for offset, member in enumerate(members[name]):
            _randomize(modules[member], seed + step + 1000 * offset)
        when = f"randomising {name or type(model).__name__!r} (step {step + 1} of {len(layers)})"
        heatmaps = _explain(explainer, twin, images, fixed, f"the model after {when}", chunk)
        rows.append(_change(original, heatmaps))
    return SanityResult(tuple(layers), torch.stack(rows), fixed, original, heatmaps)


MAX_CASCADE_STEPS = 15
"""The most blocks a cascade randomises one after another (each step is one CAM pass)."""


def cascade_blocks(
    model: nn.Module, max_steps: int = MAX_CASCADE_STEPS
) -> list[tuple[str, tuple[str, ...]]]:
    """The cascade's steps, output side first: (block name, modules it re-initialises).

    Starts from the whole model and splits blocks into their children,
    shallowest first and the largest of a depth first, while the steps stay
    within ``max_steps``: a ResNet becomes its stages and then the blocks of
    its largest stages, a Transformer its embedding, its layers and its head;
    a small network its single layers. A container's own parameters (a class
    token, position embeddings) go with its input-side child. Each block
    lists the modules under it that own parameters.
    """
    owners = [
        name
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]
    if not owners:
        return []
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}

    def under(prefix: str) -> tuple[str, ...]:
        return tuple(o for o in owners if not prefix or o == prefix or o.startswith(prefix + "."))

    def split(prefix: str) -> list[tuple[str, tuple[str, ...]]]:
        parts = []
        for child, _ in model.get_submodule(prefix).named_children():
            name = f"{prefix}.{child}" if prefix else child
            if under(name):
                parts.append((name, under(name)))
        if len(parts) == 1 and prefix not in owners:  # a wrapper (bert.encoder.layer): look in
            return split(parts[0][0])
        if prefix in owners and parts:  # own parameters ride with the input-side child
            parts[0] = (parts[0][0], (prefix, *parts[0][1]))
        return parts

    def weight(block: tuple[str, tuple[str, ...]]) -> tuple[int, int]:
        depth = block[0].count(".") + 1 if block[0] else 0
        return depth, -sum(p.numel() for o in block[1] for p in _own(model, o))

    blocks = [("", under(""))]
    while True:
        candidates = sorted((b for b in blocks if len(split(b[0])) > 1), key=weight)
        for block in candidates:
            parts = split(block[0])
            covered = {o for _, group in parts for o in group}
            riders = tuple(o for o in block[1] if o not in covered)  # an outer container's
            parts[0] = (parts[0][0], (*riders, *parts[0][1]))
            if len(blocks) - 1 + len(parts) <= max_steps:
                index = blocks.index(block)
                blocks[index : index + 1] = parts
                break
        else:
            break
    blocks.sort(key=lambda b: order[b[0]])
    return blocks[::-1]


def _own(model: nn.Module, name: str) -> list[nn.Parameter]:
    return list(model.get_submodule(name).parameters(recurse=False))


def _change(original: Tensor, randomized: Tensor) -> Tensor:
    """Spearman per image, except that a map that went flat has changed completely (0).

    A rank correlation with a constant map is undefined, yet a randomised
    model whose CAM collapsed to zero has clearly stopped explaining what the
    original did; calling that NaN would make a sound method look untested.
    Only an original map that is itself constant stays undefined (NaN).
    """
    rho = spearman(original, randomized)
    went_flat = _is_constant(randomized) & ~_is_constant(original)
    return torch.where(went_flat, torch.zeros_like(rho), rho)


def _is_constant(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    return (flat == flat[:, :1]).all(dim=1)


def _centred_ranks(rows: Tensor) -> Tensor:
    """Average ranks per row of (N, M), minus their mean (M - 1) / 2, as float64.

    A tie group covering sorted positions first..last gets (first + last) / 2;
    both ends are found with running max/min over group boundaries, so the
    whole batch is one sort and a few scans, and every value is an exact
    half-integer.
    """
    values, order = rows.sort(dim=1)
    n, m = values.shape
    positions = torch.arange(m, device=rows.device).expand(n, m)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, m - 1).flip(1).cummin(dim=1).values.flip(1)
    centred = (first + last - (m - 1)).double() / 2
    return torch.empty_like(centred).scatter_(1, order, centred)


def _layer_names(target_layer: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """Dotted names only: a module object belongs to the original, not to the copy."""
    if target_layer is None or isinstance(target_layer, str):
        return target_layer
    layers = (target_layer,) if isinstance(target_layer, nn.Module) else tuple(target_layer)
    for layer in layers:
        if not isinstance(layer, str):
            raise TypeError(
                f"target_layer must be given by dotted name (as in model.named_modules()), "
                f"got {type(layer).__name__}: the randomised copy does not contain that module "
                "object, so a CAM hooked on it would explain the original model"
            )
    return layers


def _randomize(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters, reproducibly, leaving the global RNG as it was."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for param in module.parameters(recurse=False):
                nn.init.normal_(param, std=_FALLBACK_STD)


def _explain(
    explainer: Explainer,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    what: str,
    batch_size: int | None = None,
) -> Tensor:
    """Heatmaps of ``model``, checked; errors say which step of the cascade raised them."""
    step = images.shape[0] if batch_size is None else max(1, batch_size)
    try:
        parts = [  # a clone: targets stay fixed
            explainer(model, images[i : i + step], targets[i : i + step].clone())
            for i in range(0, images.shape[0], step)
        ]
    except Exception as error:
        error.add_note(f"raised by the explainer on {what}")
        raise
    if not all(isinstance(part, Tensor) for part in parts):
        bad = next(part for part in parts if not isinstance(part, Tensor))
        raise TypeError(f"the explainer returned {type(bad).__name__} on {what}, not a Tensor")
    heatmaps = parts[0] if len(parts) == 1 else torch.cat(parts)
    if heatmaps.ndim != 3 or heatmaps.shape[0] != images.shape[0]:
        raise XAICheckError(
            f"the explainer returned shape {tuple(heatmaps.shape)} on {what}; "
            f"expected (N, H, W) with N = {images.shape[0]}"
        )
    if not torch.isfinite(heatmaps).all():
        raise NonFiniteError(f"heatmaps of {what} contain NaN or Inf")
    return heatmaps.detach()
