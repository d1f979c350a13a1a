"""Token grids: inferred from the sequence length and the input's aspect ratio."""

from __future__ import annotations

import pytest
import torch

from xai_checks._tokens import infer_token_grid, tokens_to_map
from xai_checks.errors import XAICheckError


@pytest.mark.parametrize(
    ("n_tokens", "size", "expected"),
    [
        (197, (224, 224), (1, 14, 14)),  # ViT-B/16: CLS + 14 x 14
        (196, (224, 224), (0, 14, 14)),  # no CLS (global-pool ViTs)
        (198, (224, 224), (2, 14, 14)),  # DeiT: CLS + distillation token
        (50, (224, 224), (1, 7, 7)),  # ViT-B/32
        (17, (32, 128), (1, 2, 8)),  # non-square input: 2 x 8 patches of 16 px
        (33, (32, 64), (1, 4, 8)),  # or 4 x 8 patches of 8 px
        (197, (230, 226), (1, 14, 14)),  # sizes that are not multiples of the patch
        (261, (384, 384), (5, 16, 16)),  # CLS + 4 register tokens
    ],
)
def test_grid_is_inferred_from_token_count_and_aspect(n_tokens, size, expected):
    grid = infer_token_grid(n_tokens, size)
    assert tuple(grid) == expected
    assert grid.prefix == expected[0] and grid.shape == expected[1:]


def test_impossible_token_count_is_a_clear_error():
    with pytest.raises(XAICheckError, match="cannot lay 3 tokens onto a patch grid for a 32x32"):
        infer_token_grid(3, (32, 32))  # 1 x 3 or 1 x 2 patches do not tile a square


def test_tokens_become_a_row_major_feature_map_without_the_prefix():
    n, h, w, d = 2, 3, 4, 5
    patches = torch.arange(n * h * w * d, dtype=torch.float32).reshape(n, h * w, d)
    tokens = torch.cat([torch.full((n, 1, d), -1.0), patches], dim=1)
    fmap = tokens_to_map(tokens, infer_token_grid(1 + h * w, (30, 40)))
    assert fmap.shape == (n, d, h, w)
    # Patch (row 1, column 2) is token 1 + 1 * w + 2; its features become channels.
    torch.testing.assert_close(fmap[:, :, 1, 2], tokens[:, 1 + 1 * w + 2, :])
    assert (fmap != -1.0).all()
