"""Known answers for the audit set's region checks, at their boundaries."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from PIL import Image

from pipelines.audit_sets.regions import AuditSetError, region_mask, region_of

SIZE = (4, 6)  # (height, width)


def test_no_region_is_an_all_false_mask_of_the_image_size():
    mask = region_mask(None, SIZE, "m.csv:2")
    assert mask.dtype == torch.bool and tuple(mask.shape) == SIZE and not mask.any()


def test_a_box_is_end_exclusive_in_pixels():
    mask = region_mask((1, 1, 3, 2), SIZE, "m.csv:2")
    expected = torch.zeros(SIZE, dtype=torch.bool)
    expected[1:2, 1:3] = True
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    edge = region_mask((5, 3, 6, 4), SIZE, "m.csv:2")  # the last pixel: x1 = width, y1 = height
    assert edge.sum() == 1 and edge[3, 5]


@pytest.mark.parametrize("box", [(2, 0, 2, 2), (0, 2, 3, 2), (0, 0, 7, 2), (0, 0, 2, 5)])
def test_an_empty_or_outside_box_is_refused(box):
    with pytest.raises(
        AuditSetError, match=r"^m\.csv:2: box '.*' is empty or outside the 6x4 image$"
    ):
        region_mask(box, SIZE, "m.csv:2")


def test_a_box_covering_the_image_is_refused_and_one_short_of_it_is_not():
    with pytest.raises(AuditSetError) as whole:
        region_mask((0, 0, 6, 4), SIZE, "m.csv:2")
    assert str(whole.value) == (
        "m.csv:2: box '0,0,6,4' covers the whole 6x4 image: nothing is left outside the "
        "region to compare it with"
    )
    assert region_mask((1, 0, 5, 4), SIZE, "m.csv:2").sum() == 16  # 4 of 6 columns
    assert region_mask((0, 1, 6, 3), SIZE, "m.csv:2").sum() == 12  # 2 of 4 rows


def test_mask_files_full_or_undecodable_are_refused_naming_the_row(tmp_path):
    full = tmp_path / "full.png"
    Image.new("L", (6, 4), 255).save(full)
    with pytest.raises(AuditSetError) as covered:
        region_mask(full, SIZE, "m.csv:3")
    assert str(covered.value) == (
        "m.csv:3: mask full.png covers the whole image (every pixel is non-zero): nothing is "
        "left outside the region to compare it with"
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(AuditSetError, match=r"^m\.csv:3: cannot decode broken\.png: "):
        region_mask(broken, SIZE, "m.csv:3")
    lab = tmp_path / "lab.tif"
    Image.new("LAB", (6, 4)).save(lab)
    with pytest.raises(AuditSetError, match=r"^m\.csv:3: lab\.tif: "):
        region_mask(lab, SIZE, "m.csv:3")


def test_a_row_names_a_mask_when_it_has_one_else_its_box(tmp_path):
    box_row = pd.Series({"image": "a.png", "spurious_mask": "", "spurious_box": "1,1,2,2"})
    assert region_of(tmp_path, box_row) == ((1, 1, 2, 2), "spurious_box")
    mask_row = pd.Series({"image": "a.png", "spurious_mask": "m.png", "spurious_box": "1,1,2,2"})
    assert region_of(tmp_path, mask_row) == (tmp_path / "m.png", "spurious_mask")
    assert region_of(tmp_path, pd.Series({"image": "a.png"})) == (None, "image")
