"""Review figures for MLflow: heatmaps over the images, spurious regions outlined."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from pipelines.report.titles import fit_title
from pipelines.stages.cam import Cases
from pipelines.stages.counterfactual import CounterfactualEvidence
from pipelines.stages.sanity import SanityEvidence
from xai_checks.counterfactual import fill_from_surroundings, inserted_images

__all__ = ["insertion_grid", "overlay_grid", "removal_grid", "sanity_figure"]

_MAX_PAIRS = 6


def overlay_grid(cases: Cases, *, columns: int = 4, title: str = "") -> Figure:
    """A grid of audited images, each with its CAM and its spurious region outlined.

    The caller closes the figure (``plt.close(fig)``) after saving or logging it.
    """
    count = len(cases.rows)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:count]):
        row = cases.rows.iloc[i]
        ax.imshow(cases.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.imshow(cases.heatmaps[i].numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        if cases.masks[i].any():  # an audit set without regions has none to outline
            ax.contour(cases.masks[i].float().numpy(), levels=[0.5], colors="white", linewidths=1.2)
        mass = row["spurious_mass"]
        ax.set_title(
            f"{row['image_id']}\n{row['label']} → {row['prediction']}"
            + (f"  mass {mass:.2f}" if math.isfinite(mass) else ""),
            fontsize=7,
            parse_math=False,  # image ids and labels are data: '$' must not start maths
        )
    if title:
        fig.suptitle(fit_title(title), fontsize=10, parse_math=False)
    fig.tight_layout()
    return fig


def _image(ax, image) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.axis("off")


def _pairs(before, after, captions, title: str) -> Figure:
    """Two rows: the images before the edit above, after it below, captioned per column."""
    count = len(captions)
    fig, axes = plt.subplots(2, count, figsize=(2.3 * count, 5.0), squeeze=False)
    for i, (top, bottom) in enumerate(captions):
        _image(axes[0, i], before[i])
        _image(axes[1, i], after[i])
        axes[0, i].set_title(top, fontsize=7, parse_math=False)
        axes[1, i].set_title(bottom, fontsize=7, parse_math=False)
    fig.suptitle(fit_title(title), fontsize=10, parse_math=False)
    fig.tight_layout()
    return fig


def removal_grid(
    evidence: CounterfactualEvidence, images, masks, names, *, title: str = ""
) -> Figure:
    """Audit images with their artifact, then filled in; flipped predictions first.

    ``images`` and ``masks`` are the audit set's (tensors or lazy stacks): the
    stage keeps no edited images, so the few shown are filled again here.
    """
    removal = evidence.removal
    order = sorted(
        removal.has_artifact.nonzero().flatten().tolist(),
        key=lambda i: not bool(removal.flipped[i]),
    )[:_MAX_PAIRS]
    captions = [
        (
            f"with artifact: {names(removal.predictions[i])} "
            f"({float(removal.probabilities[i].max()):.2f})",
            f"removed: {names(removal.predictions_without[i])} "
            f"({float(removal.probabilities_without[i].max()):.2f})"
            + ("  FLIP" if removal.flipped[i] else ""),
        )
        for i in order
    ]
    index = torch.tensor(order, dtype=torch.long)
    shown = images[index].cpu()
    edited = fill_from_surroundings(shown, masks[index].cpu())
    return _pairs(shown, edited, captions, f"{fit_title(title)} (artifact removal)")


def insertion_grid(
    evidence: CounterfactualEvidence, images, masks, names, *, title: str = ""
) -> Figure:
    """Images of other classes, cleaned, then with the artifact class's artifact pasted in."""
    insertion = evidence.insertion
    order = insertion.probability.argsort(descending=True)[:_MAX_PAIRS].tolist()
    target = evidence.artifact_class_name
    captions = [
        (
            f"cleaned: {names(insertion.predictions_before[i])}  "
            f"P({target})={float(insertion.baseline[i]):.2f}",
            f"pasted: {names(insertion.predictions_after[i])}  "
            f"P({target})={float(insertion.probability[i]):.2f}",
        )
        for i in order
    ]
    index = torch.tensor(order, dtype=torch.long)
    cleaned, pasted = inserted_images(
        images, masks, insertion.target_index[index], insertion.source_index[index]
    )
    return _pairs(
        cleaned.cpu(),
        pasted.cpu(),
        captions,
        f"{fit_title(title)} (artifact of '{target}' pasted; "
        f"spurious score {insertion.spurious_score:.2f})",
    )


def sanity_figure(evidence: SanityEvidence, *, threshold: float, title: str = "") -> Figure:
    """The cascade's mean Spearman per step, and a few maps before and after randomising."""
    result = evidence.result
    shown = min(4, evidence.images.shape[0])
    fig = plt.figure(figsize=(3.0 + 2.0 * shown, 4.6))
    grid = fig.add_gridspec(2, shown + 2)
    curve = fig.add_subplot(grid[:, :2])
    steps = range(1, len(result.layers) + 1)
    curve.plot(steps, result.mean_spearman.numpy(), marker="o")
    curve.axhline(threshold, color="red", linestyle="--", label=f"max {threshold:.2f}")
    curve.set_xticks(list(steps))
    curve.set_xticklabels([name or "(root)" for name in result.layers], rotation=60, fontsize=6)
    curve.set_ylim(-1.05, 1.05)
    curve.set_ylabel("mean Spearman vs. original maps")
    curve.set_xlabel("randomised down to layer")
    curve.legend(fontsize=7)
    for i in range(shown):
        for row, (maps, label) in enumerate(
            ((result.original, "original"), (result.randomized, "randomised"))
        ):
            ax = fig.add_subplot(grid[row, i + 2])
            _image(ax, evidence.images[i])
            ax.imshow(maps[i].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            ax.set_title(f"{label}  ρ={float(result.spearman[-1, i]):.2f}", fontsize=7)
    fig.suptitle(
        f"{fit_title(title)} (sanity: {evidence.method}, cascading randomisation)",
        fontsize=10,
        parse_math=False,
    )
    fig.tight_layout()
    return fig
