"""Token sequences to spatial grids, for Vision Transformers.

A ViT's hidden states are (N, T, D) with T = prefix + h * w: the prefix holds
the CLS token and any distillation or register tokens, the rest are patches in
row-major order. The grid is inferred from T and the input's aspect ratio, so
no patch count (14 x 14 for ViT-B/16 at 224 px) is hard-coded.
"""

from __future__ import annotations

import math

from torch import Tensor

from xai_checks.errors import XAICheckError

__all__ = ["MAX_PREFIX_TOKENS", "TokenGrid", "infer_token_grid", "tokens_to_map"]

MAX_PREFIX_TOKENS = 8
"""CLS, distillation and register tokens together; more than this is not a ViT layout we know."""


_ASPECT_SLACK = math.log(1.15)


class TokenGrid(tuple[int, int, int]):
    """``(prefix, h, w)``: how many leading tokens to drop and the patch grid behind them."""

    __slots__ = ()

    @property
    def prefix(self) -> int:
        return self[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self[1], self[2]


def infer_token_grid(n_tokens: int, image_size: tuple[int, int]) -> TokenGrid:
    """The smallest prefix whose remaining tokens tile the image's aspect ratio.

    For T = 197 at 224 x 224 this is one CLS token and 14 x 14 patches; for
    T = 196 (no CLS) it is no prefix. The smallest prefix wins: with a square
    image, T and T - 1 are never both perfect squares (beyond T = 1). The
    aspect may be off by up to ``_ASPECT_SLACK`` (an input size that is not a
    multiple of the patch size is cropped by the patch embedding).
    """
    height, width = image_size
    target = math.log(height / width)
    for prefix in range(min(MAX_PREFIX_TOKENS, n_tokens - 2) + 1):
        patches = n_tokens - prefix
        fits = [
            (abs(math.log(h / (patches // h)) - target), h, patches // h)
            for h in range(1, patches + 1)
            if patches % h == 0
        ]
        error, h, w = min(fits)
        if error <= _ASPECT_SLACK:
            return TokenGrid((prefix, h, w))
    raise XAICheckError(
        f"cannot lay {n_tokens} tokens onto a patch grid for a {height}x{width} input "
        f"(tried dropping 0..{MAX_PREFIX_TOKENS} prefix tokens); is this layer's output "
        "(N, tokens, features)?"
    )


def tokens_to_map(tokens: Tensor, grid: TokenGrid) -> Tensor:
    """(N, T, D) hidden states to an (N, D, h, w) feature map, prefix tokens dropped."""
    n, _, d = tokens.shape
    h, w = grid.shape
    return tokens[:, grid.prefix :, :].reshape(n, h, w, d).permute(0, 3, 1, 2)
