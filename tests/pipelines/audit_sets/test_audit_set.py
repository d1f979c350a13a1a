"""Audit-set manifests: a round trip, and a clear error for each kind of bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFile

from pipelines.audit_sets.images import AuditSetError, load_audit_set, write_audit_set
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    batch = make_lesions(6, ruler="always", seed=5, size=32)
    write_audit_set(tmp_path / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    return tmp_path / "audit"


def _rewrite(manifest: Path, text: str) -> Path:
    manifest.write_text(text)
    return manifest


def test_round_trip_keeps_pixels_labels_and_masks(tmp_path):
    batch = make_lesions(6, ruler="always", seed=5, size=32)
    manifest = write_audit_set(tmp_path, batch.images, batch.labels, batch.masks, CLASS_NAMES)
    loaded = load_audit_set(manifest, class_names=CLASS_NAMES)
    assert len(loaded) == 6
    assert torch.equal(loaded.labels, batch.labels)
    assert torch.equal(loaded.masks[:], batch.masks)
    assert (loaded.images[:] - batch.images).abs().max() <= 0.5 / 255 + 1e-6
    assert loaded.image_ids[0] == "images/00000.png"


def test_images_and_masks_index_like_tensors_and_decode_only_what_is_asked(audit_dir):
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    everything = loaded.images[:]
    assert loaded.images.shape == everything.shape == (6, 3, 32, 32)
    assert loaded.masks.shape == (6, 32, 32) and loaded.masks[:].dtype == torch.bool
    assert torch.equal(loaded.images[2], everything[2])
    assert torch.equal(loaded.images[torch.tensor([4, 1])], everything[[4, 1]])
    assert torch.equal(loaded.images[[5]], everything[5:])
    assert torch.equal(loaded.images[1:5:2], everything[1:5:2])
    assert loaded.images[torch.tensor([], dtype=torch.long)].shape == (0, 3, 32, 32)
    shard = loaded.subset(2, 5)
    assert shard.images.shape == (3, 3, 32, 32) and shard.image_ids == loaded.image_ids[2:5]
    assert torch.equal(shard.masks[:], loaded.masks[2:5])
    # Nothing is held: a file replaced after loading is what the next batch sees.
    Image.new("RGB", (32, 32), (255, 0, 0)).save(audit_dir / "images/00003.png")
    assert loaded.images[3][0].min() == 1.0 and loaded.images[3][1].max() == 0.0


def test_stacks_take_boolean_row_masks_and_refuse_element_indexing(audit_dir):
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    rows = torch.tensor([True, False, False, True, False, False])
    assert torch.equal(loaded.images[rows], loaded.images[:][rows])
    assert torch.equal(loaded.masks[rows.numpy()], loaded.masks[:][rows])
    with pytest.raises(TypeError, match="indexes rows only"):
        loaded.images[0, 1]
    with pytest.raises(IndexError, match="boolean index of 2 for 6 rows"):
        loaded.images[torch.tensor([True, False])]
    with pytest.raises(TypeError, match="one-dimensional"):
        loaded.images[torch.tensor([[0, 1]])]


def test_an_image_resized_after_loading_is_refused_when_read(audit_dir):
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    Image.new("RGB", (16, 16)).save(audit_dir / "images/00002.png")
    with pytest.raises(
        AuditSetError,
        match=r"manifest\.csv:4 column 'image': size \(16, 16\) differs from the audit set's",
    ):
        loaded.images[1:3]


def test_an_image_that_breaks_after_loading_names_its_line_when_read(audit_dir):
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    (audit_dir / "images/00004.png").write_bytes(b"not a png")
    with pytest.raises(AuditSetError, match=r"manifest\.csv:6 column 'image': cannot decode"):
        loaded.images[2:6]


def test_a_manifest_without_region_columns_has_no_regions(audit_dir):
    manifest = _rewrite(
        audit_dir / "plain.csv", "image,label\nimages/00000.png,benign\nimages/00001.png,1\n"
    )
    loaded = load_audit_set(manifest, class_names=CLASS_NAMES)
    assert not loaded.has_regions and loaded.masks.shape == (2, 32, 32)
    assert not loaded.masks[:].any() and loaded.labels.tolist() == [0, 1]
    assert load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES).has_regions


def test_boxes_become_rectangular_masks(audit_dir):
    manifest = _rewrite(
        audit_dir / "boxes.csv",
        'image,label,spurious_box\nimages/00000.png,benign,"2,3,10,5"\n'
        'images/00001.png,1,"0,0,32,16"\n',
    )
    loaded = load_audit_set(manifest, class_names=CLASS_NAMES)
    assert loaded.masks[0].sum() == 8 * 2 and loaded.masks[0][3:5, 2:10].all()
    assert loaded.masks[1][:16].all() and not loaded.masks[1][16:].any()
    assert loaded.labels.tolist() == [0, 1]


def test_grayscale_and_rgba_images_are_converted_to_rgb(audit_dir):
    Image.open(audit_dir / "images/00000.png").convert("L").save(audit_dir / "images/00000.png")
    Image.open(audit_dir / "images/00001.png").convert("RGBA").save(audit_dir / "images/00001.png")
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    assert loaded.images.shape == (6, 3, 32, 32)
    assert torch.equal(loaded.images[0][0], loaded.images[0][1])


@pytest.mark.parametrize(
    ("manifest_text", "message"),
    [
        ("label,spurious_mask\nbenign,masks/00000.png\n", r"required column 'image' is missing"),
        ("image,spurious_mask\nimages/00000.png,masks/00000.png\n", r"required column 'label'"),
        (
            "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
            "images/00001.png,melanoma,masks/00001.png\n",
            r"unknown labels: manifest\.csv:3 'melanoma' \(known: benign, malignant\)",
        ),
        (
            "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
            "images/nope.png,benign,masks/00001.png\n",
            r"manifest\.csv:3 column 'image': file not found: images/nope\.png",
        ),
        (
            "image,label,spurious_mask\n../outside.png,benign,masks/00000.png\n",
            r"manifest\.csv:2 column 'image': path '\.\./outside\.png' leaves the audit-set folder",
        ),
        (
            "image,label,spurious_mask\n/etc/passwd,benign,masks/00000.png\n",
            r"manifest\.csv:2 column 'image': absolute path '/etc/passwd' is not allowed",
        ),
        (
            "image,label,spurious_mask\nimages/00000.png,benign,masks/missing.png\n",
            r"manifest\.csv:2 column 'spurious_mask': file not found: masks/missing\.png",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"1,2,3"\n',
            r"manifest\.csv:2 column 'spurious_box': box '1,2,3' is not four integers",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"0,0,40,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '0,0,40,5' is empty or outside",
        ),
        (
            "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
            "images/00000.png,benign,masks/00000.png\n",
            r"lists an image more than once: manifest\.csv:2 'images/00000\.png'",
        ),
        ("image,label,spurious_mask\n", r"has no rows: the audit set is empty"),
        (
            "image,label,spurious_mask\nimages/00000.png,,masks/00000.png\n",
            r"column 'label' is empty on manifest\.csv:2",
        ),
        (
            "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
            "images/00001.png,benign,\n",
            r"manifest\.csv:3 column 'spurious_mask': no spurious_mask or spurious_box given",
        ),
        (  # only a box column: the error names it, not the absent mask column
            "image,label,spurious_box\nimages/00000.png,benign,\n",
            r"manifest\.csv:2 column 'spurious_box': no spurious_mask or spurious_box given",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"-2,0,5,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '-2,0,5,5' has a negative coordinate",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"8,0,4,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '8,0,4,5' is empty or inverted",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"5,0,5,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '5,0,5,5' is empty or inverted",
        ),
        (
            'image,label,spurious_box\nimages/00000.png,benign,"0,6,4,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '0,6,4,5' is empty or inverted",
        ),
        (  # zero height
            'image,label,spurious_box\nimages/00000.png,benign,"0,5,4,5"\n',
            r"manifest\.csv:2 column 'spurious_box': box '0,5,4,5' is empty or inverted",
        ),
    ],
)
def test_bad_manifests_name_file_line_and_column(audit_dir, manifest_text, message):
    manifest = _rewrite(audit_dir / "manifest.csv", manifest_text)
    with pytest.raises(AuditSetError, match=message):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_missing_manifest(tmp_path):
    with pytest.raises(AuditSetError, match="audit-set manifest not found"):
        load_audit_set(tmp_path / "nope.csv")


def test_symlink_out_of_the_folder_is_refused(audit_dir, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (32, 32)).save(outside)
    os.symlink(outside, audit_dir / "images" / "link.png")
    manifest = _rewrite(
        audit_dir / "manifest.csv",
        "image,label,spurious_mask\nimages/link.png,benign,masks/00000.png\n",
    )
    with pytest.raises(AuditSetError, match=r"'images/link\.png' leaves the audit-set folder"):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_corrupt_image_names_its_line(audit_dir):
    (audit_dir / "images/00002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(
        AuditSetError, match=r"manifest\.csv:4 column 'image': cannot decode 00002\.png"
    ):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)


def test_empty_or_wrongly_sized_masks_are_refused(audit_dir):
    Image.new("L", (32, 32), 0).save(audit_dir / "masks/00001.png")
    with pytest.raises(
        AuditSetError, match=r"manifest\.csv:3 column 'spurious_mask': mask .* is empty"
    ):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    Image.new("L", (16, 16), 255).save(audit_dir / "masks/00001.png")
    with pytest.raises(AuditSetError, match=r"manifest\.csv:3 .*mask size \(16, 16\) differs"):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)


def test_images_of_another_size_are_refused(audit_dir):
    Image.new("RGB", (40, 32)).save(audit_dir / "images/00003.png")
    with pytest.raises(
        AuditSetError, match=r"manifest\.csv:5 column 'image': size \(32, 40\) differs"
    ):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)


def test_without_class_names_labels_must_be_indices(audit_dir):
    with pytest.raises(AuditSetError, match="known: integer class indices"):
        load_audit_set(audit_dir / "manifest.csv")
    manifest = _rewrite(
        audit_dir / "manifest.csv",
        "image,label,spurious_mask\nimages/00000.png,1,masks/00000.png\n",
    )
    assert load_audit_set(manifest).labels.tolist() == [1]


def test_a_manifest_that_is_not_utf8_is_a_clear_error(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"image,label,spurious_mask\n\xff\xfe\x00bad,benign,m.png\n")
    with pytest.raises(AuditSetError, match=r"cannot read manifest .*utf-8"):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_a_truncated_image_names_its_line(audit_dir):
    image = audit_dir / "images" / "00001.png"
    image.write_bytes(image.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(AuditSetError, match=r"manifest\.csv:3 column 'image': cannot decode"):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)


def test_a_row_with_more_fields_than_the_header_is_refused_not_cut(tmp_path):
    """Found by the fuzzer: pandas silently turned the extra field into the row index."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,label,spurious_mask\n,,,\n")
    with pytest.raises(AuditSetError, match=r"manifest\.csv:2 has 4 fields but the header has 3"):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_a_quoted_field_over_several_lines_keeps_the_line_numbers_of_later_rows(audit_dir):
    manifest = _rewrite(
        audit_dir / "multi.csv",
        'image,label,spurious_mask\n"images/00000.png",benign,masks/00000.png\n'
        '"images/00001.png",benign,"masks/\n\n00001.png"\n'
        "images/nope.png,benign,masks/00002.png\n",
    )
    with pytest.raises(AuditSetError) as raised:
        load_audit_set(manifest, class_names=CLASS_NAMES)
    message = str(raised.value)
    assert "multi.csv:3 column 'spurious_mask'" in message  # the record starting on line 3
    assert "multi.csv:6 column 'image': file not found: images/nope.png" in message


def test_empty_image_cells_are_reported_as_empty_not_as_duplicates(audit_dir):
    manifest = _rewrite(
        audit_dir / "empty.csv",
        "image,label,spurious_mask\n,benign,masks/00000.png\n,benign,masks/00001.png\n",
    )
    with pytest.raises(AuditSetError) as raised:
        load_audit_set(manifest, class_names=CLASS_NAMES)
    message = str(raised.value)
    assert "empty.csv:2 column 'image': empty image path" in message
    assert "empty.csv:3 column 'image': empty image path" in message
    assert "more than once" not in message


def test_two_spellings_of_one_image_are_duplicates(audit_dir):
    manifest = _rewrite(
        audit_dir / "dup.csv",
        "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
        "./images/00000.png,benign,masks/00000.png\n"
        "images/../images/00001.png,benign,masks/00001.png\n"
        "images/00001.png,benign,masks/00001.png\n",
    )
    with pytest.raises(
        AuditSetError,
        match=r"lists an image more than once: dup\.csv:2 'images/00000\.png', "
        r"dup\.csv:3 '\./images/00000\.png', dup\.csv:4 'images/\.\./images/00001\.png', "
        r"dup\.csv:5",
    ):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_a_header_naming_a_column_twice_is_refused_not_taken_as_the_first(audit_dir):
    manifest = _rewrite(
        audit_dir / "twice.csv",
        "image,label,label,spurious_mask\nimages/00000.png,benign,malignant,masks/00000.png\n",
    )
    with pytest.raises(
        AuditSetError, match=r"twice\.csv:1 the header names column\(s\) \['label'\]"
    ):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_a_nul_byte_in_a_path_is_an_error_naming_its_line(audit_dir):
    manifest = audit_dir / "nul.csv"
    manifest.write_bytes(b"image,label\nimages/00000.png,benign\nimages/0\x00.png,benign\n")
    with pytest.raises(AuditSetError, match=r"nul\.csv:3 column 'image': path .* contains a NUL"):
        load_audit_set(manifest, class_names=CLASS_NAMES)


def test_a_byte_order_mark_is_skipped(audit_dir):
    text = (audit_dir / "manifest.csv").read_text()
    manifest = audit_dir / "bom.csv"
    manifest.write_bytes("\ufeff".encode() + text.encode())
    loaded = load_audit_set(manifest, class_names=CLASS_NAMES)
    assert len(loaded) == 6 and loaded.has_regions


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(audit_dir, monkeypatch):
    """9000 x 9000 in 250 KB: refused with its line before a pixel is decoded."""
    huge = audit_dir / "images/00001.png"
    Image.new("1", (9000, 9000), 0).save(huge)
    assert huge.stat().st_size < 300_000
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recorded(self):
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recorded)
    with pytest.raises(
        AuditSetError,
        match=r"manifest\.csv:3 column 'image': 00001\.png is 9000x9000 = 81,000,000 pixels, "
        r"over the budget of 16,777,216 \(XAI_GATE_MAX_IMAGE_PIXELS\)",
    ):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    assert (32, 32) in decoded and (9000, 9000) not in decoded  # line 2's mask was decoded


def test_the_pixel_budget_is_the_operators_to_set(audit_dir, monkeypatch):
    monkeypatch.setenv("XAI_GATE_MAX_IMAGE_PIXELS", str(32 * 32 - 1))
    with pytest.raises(AuditSetError, match=r"manifest\.csv:2 column 'image': 00000\.png is 32x32"):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    monkeypatch.setenv("XAI_GATE_MAX_IMAGE_PIXELS", "1e6")
    with pytest.raises(AuditSetError, match="XAI_GATE_MAX_IMAGE_PIXELS must be a positive whole"):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    monkeypatch.setenv("XAI_GATE_MAX_IMAGE_PIXELS", str(32 * 32))
    assert len(load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)) > 0


def test_one_image_through_a_symlink_a_hard_link_and_a_copy_is_a_duplicate(audit_dir):
    images = audit_dir / "images"
    os.symlink("00000.png", images / "linked.png")
    os.link(images / "00000.png", images / "hard.png")
    (images / "copy.png").write_bytes((images / "00000.png").read_bytes())
    manifest = _rewrite(
        audit_dir / "dup.csv",
        "image,label,spurious_mask\n"
        "images/00000.png,benign,masks/00000.png\n"
        "images/linked.png,benign,masks/00000.png\n"
        "images/hard.png,benign,masks/00000.png\n"
        "images/copy.png,benign,masks/00000.png\n"
        "images/00001.png,benign,masks/00001.png\n",
    )
    with pytest.raises(AuditSetError) as refused:
        load_audit_set(manifest, class_names=CLASS_NAMES)
    message = str(refused.value)
    assert (
        "lists an image more than once: dup.csv:2 'images/00000.png', dup.csv:3 "
        "'images/linked.png', dup.csv:4 'images/hard.png', dup.csv:5 'images/copy.png' "
        "(compared by content: another spelling, a link or a copy is the same image)"
    ) in message
    assert "00001" not in message
