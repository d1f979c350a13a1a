"""Review figures for MLflow: heatmaps over the images, spurious regions outlined."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a screen

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pipelines.audit import Cases

__all__ = ["overlay_grid"]


def overlay_grid(cases: Cases, *, columns: int = 4, title: str = "") -> Figure:
    """A grid of audited images, each with its Grad-CAM and its spurious region outlined.

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
        ax.contour(cases.masks[i].float().numpy(), levels=[0.5], colors="white", linewidths=1.2)
        ax.set_title(
            f"{row['image_id']}\n{row['label']} → {row['prediction']}  "
            f"mass {row['spurious_mass']:.2f}",
            fontsize=7,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
