"""Review figures for strategy discovery: cluster means, members, proposed regions."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from pipelines.report.titles import fit_title
from pipelines.stages.discovery import DiscoveryEvidence
from xai_checks.counterfactual import fill_from_surroundings

__all__ = ["cluster_grid", "cluster_samples", "proposal_figure"]

_MAX_CLUSTERS = 12
_MAX_ROWS = 6
_COLOURS = {"confirmed": "#cf222e", "suspicious": "#9a6700", "ok": "#1b1f24"}


def cluster_grid(evidence: DiscoveryEvidence, size: tuple[int, int], *, title: str = "") -> Figure:
    """Each strategy's mean heatmap, ranked, with its proposed region outlined when tested."""
    rows = evidence.table.head(_MAX_CLUSTERS).to_dict("records")
    columns = max(1, min(4, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 3.3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        strategy = evidence.discovery.strategies[row["rank"] - 1]
        mean = _upsample(strategy.mean_heatmap, size)
        ax.imshow(mean.numpy(), cmap="jet", vmin=0.0, vmax=float(mean.max()) or 1.0)
        proposal = evidence.proposals.get(row["rank"])
        if proposal is not None and proposal.mask.any():
            ax.contour(proposal.mask.float().numpy(), levels=[0.5], colors="white", linewidths=1.2)
        flip = f"  flip {row['flip_rate']:.2f}" if not math.isnan(row["flip_rate"]) else ""
        ax.set_title(
            f"#{row['rank']} {row['class']}  n={row['size']}\n"
            f"suspicion {row['suspicion']:.2f}{flip}  {row['status']}",
            fontsize=7,
            color=_COLOURS.get(row["status"], "black"),
            parse_math=False,
        )
    fig.suptitle(
        f"{fit_title(title)} (discovered strategies: mean heatmap per cluster)", fontsize=10
    )
    fig.tight_layout()
    return fig


def cluster_samples(
    evidence: DiscoveryEvidence, images, *, per_cluster: int = 4, title: str = ""
) -> Figure:
    """A row per strategy (most suspicious first): a few member images with their heatmaps."""
    strategies = evidence.discovery.strategies[:_MAX_ROWS]
    size = (int(images.shape[-2]), int(images.shape[-1]))
    fig, axes = plt.subplots(
        len(strategies),
        per_cluster,
        figsize=(2.2 * per_cluster, 2.4 * len(strategies)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for line, strategy in enumerate(strategies):
        members = strategy.members[:per_cluster]
        shown = images[members]
        for column, (index, image) in enumerate(zip(members.tolist(), shown, strict=True)):
            ax = axes[line, column]
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
            heatmap = _upsample(evidence.low_res[index], size)
            ax.imshow(
                heatmap.numpy(), cmap="jet", alpha=0.45, vmin=0.0, vmax=float(heatmap.max()) or 1.0
            )
            if column == 0:
                ax.set_title(
                    f"#{line + 1} {evidence.class_name(strategy.class_index)} "
                    f"(n={strategy.size}, suspicion {strategy.suspicion:.2f})",
                    fontsize=7,
                    loc="left",
                    parse_math=False,
                )
    fig.suptitle(f"{fit_title(title)} (discovered strategies: sample members)", fontsize=10)
    fig.tight_layout()
    return fig


def proposal_figure(evidence: DiscoveryEvidence, images, *, title: str = "") -> Figure:
    """Per tested proposal: the region, a member image, and that image with the region filled."""
    proposals = [(rank, p) for rank, p in evidence.proposals.items() if p.mask.any()]
    fig, axes = plt.subplots(
        max(1, len(proposals)), 3, figsize=(7.2, 2.6 * max(1, len(proposals))), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for line, (rank, proposal) in enumerate(proposals):
        strategy = proposal.strategy
        first = strategy.members[:1]
        image = images[first][0].cpu()
        filled = fill_from_surroundings(image[None], proposal.filled[None])[0]
        axes[line, 0].imshow(proposal.mask.float().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[line, 0].set_title(
            f"#{rank} proposed region ({proposal.area:.1%} of the image)", fontsize=7
        )
        axes[line, 1].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[line, 1].contour(
            proposal.filled.float().numpy(), levels=[0.5], colors="white", linewidths=1.0
        )
        axes[line, 1].set_title(
            f"member of {evidence.class_name(strategy.class_index)}", fontsize=7, parse_math=False
        )
        axes[line, 2].imshow(filled.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[line, 2].set_title(
            f"region filled: {proposal.flip_rate:.0%} of {strategy.size} predictions flip",
            fontsize=7,
        )
    fig.suptitle(f"{fit_title(title)} (discovery: proposed spurious regions, filled)", fontsize=10)
    fig.tight_layout()
    return fig


def _upsample(heatmap: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(
        heatmap.float()[None, None], size=size, mode="bilinear", align_corners=False
    )[0, 0].clamp_min(0)
