"""Every Pillow mode decodes to the model's [0, 1] range, or is refused with the reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.audit_sets.decoding import DecodeError, image_array, mask_array, oriented_size
from pipelines.audit_sets.images import AuditSetError, load_audit_set, write_audit_set
from xai_checks.examples.synthetic import CLASS_NAMES, make_lesions

RAMP = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float64).reshape(16, 16)
"""A gray ramp over the whole range: every mode must bring it back, not clip it."""


def _reopened(image: Image.Image, fmt: str = "PNG") -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize(
    ("build", "fmt", "tolerance"),
    [
        (lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)), "PNG", 0.5 / 255),
        (lambda: Image.fromarray((RAMP * 65535).round().astype(np.uint16)), "PNG", 0.5 / 65535),
        (lambda: Image.fromarray((RAMP * 65535).round().astype(np.uint16)), "TIFF", 0.5 / 65535),
        (
            lambda: Image.fromarray((RAMP * (2**31 - 1)).round().astype(np.int32)),
            "TIFF",
            1e-6,
        ),
        (lambda: Image.fromarray(RAMP.astype(np.float32)), "TIFF", 1e-6),
        (
            lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("LA"),
            "PNG",
            0.5 / 255,
        ),
        (
            lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("RGBA"),
            "PNG",
            0.5 / 255,
        ),
        (
            lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("P"),
            "PNG",
            0.5 / 255,
        ),
        (
            lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("CMYK"),
            "TIFF",
            0.5 / 255,
        ),
        (
            lambda: Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("YCbCr"),
            "TIFF",
            2 / 255,
        ),
    ],
    ids=["L", "I;16 png", "I;16 tiff", "I tiff", "F tiff", "LA", "RGBA", "P", "CMYK", "YCbCr"],
)
def test_every_gray_ramp_decodes_to_the_same_unit_range(build, fmt, tolerance):
    decoded = image_array(_reopened(build(), fmt))
    assert decoded.shape == (3, 16, 16) and decoded.dtype == np.float32
    assert np.abs(decoded - RAMP[None]).max() <= tolerance + 1e-6
    assert decoded.max() == pytest.approx(1.0, abs=2 / 255)  # not clipped, not shrunk


def test_a_sixteen_bit_image_is_not_clipped_to_white():
    dark = Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16))
    assert np.asarray(dark.convert("RGB")).min() == 255  # Pillow's own conversion: white
    assert image_array(_reopened(dark)) == pytest.approx(1000 / 65535)


def test_colour_and_bilevel_modes_keep_their_colours():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 64
    adaptive = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    for mode in ("RGB", "RGBA", "RGBX", "RGBa", "HSV", "P"):
        image = adaptive if mode == "P" else Image.fromarray(rgb).convert(mode)
        decoded = image_array(image)
        assert decoded[:, 0, 0] == pytest.approx([1.0, 0.0, 64 / 255], abs=3 / 255), mode
    bilevel = Image.fromarray(np.eye(4, dtype=bool))
    assert image_array(bilevel)[1].tolist() == np.eye(4).tolist()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.new("LAB", (4, 4)), r"mode 'LAB' has no faithful conversion"),
        (Image.fromarray(np.full((4, 4), -5, dtype=np.int32)), r"negative values \(min -5\)"),
        (
            Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32)),
            r"lie in \[0, 1\] \(found 3 to 3\)",
        ),
        (Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)), r"must be finite"),
    ],
    ids=["LAB", "negative int", "float above 1", "NaN"],
)
def test_modes_without_a_faithful_conversion_are_refused(image, message):
    with pytest.raises(DecodeError, match=message):
        image_array(image)


def test_exif_orientation_is_applied_to_pixels_and_size():
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[0, 7] = 255  # top-right corner of a landscape image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    stored = Image.open(io.BytesIO(buffer.getvalue()))
    assert oriented_size(stored) == (8, 4)
    decoded = image_array(stored)
    assert decoded.shape == (3, 8, 4)
    assert decoded[0, 7, 3] == 1.0 and decoded[0].sum() == 1.0  # now the bottom-right corner


@pytest.mark.parametrize(
    "build",
    [
        lambda m: Image.fromarray(m.astype(np.uint8)),  # 0/1, the common mistake
        lambda m: Image.fromarray(m.astype(np.uint8) * 255),
        lambda m: Image.fromarray(m.astype(np.uint16) * 3),
        lambda m: Image.fromarray(m),  # mode "1"
        lambda m: Image.fromarray(m.astype(np.float32)),
        lambda m: Image.fromarray(m.astype(np.uint8) * 255).convert("RGB"),
        lambda m: Image.fromarray(m.astype(np.uint8) * 255).convert("CMYK"),
        lambda m: Image.fromarray(m.astype(np.uint8) * 255).convert("YCbCr"),
    ],
    ids=["L 0/1", "L 0/255", "I;16", "1", "F", "RGB", "CMYK", "YCbCr"],
)
def test_non_zero_is_spurious_in_every_mask_mode(build):
    region = np.zeros((8, 8), dtype=bool)
    region[2:5, 1:4] = True
    assert np.array_equal(mask_array(build(region)), region)


def test_palette_masks_are_read_by_colour_and_transparent_pixels_mark_nothing():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 255, 255, 0, 0, 0])  # index 0 is white, index 1 black
    palette.putpixel((0, 0), 1)
    expected = np.ones((4, 4), dtype=bool)
    expected[0, 0] = False
    assert np.array_equal(mask_array(palette), expected)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, but transparent except one pixel
    rgba[1, 2, 3] = 255
    marked = mask_array(Image.fromarray(rgba))
    assert marked.sum() == 1 and marked[1, 2]


def test_lossy_masks_are_refused():
    mask = Image.fromarray(np.eye(8, dtype=np.uint8) * 255)
    with pytest.raises(DecodeError, match="JPEG masks are lossy"):
        mask_array(_reopened(mask, "JPEG"))


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    batch = make_lesions(4, ruler="always", seed=5, size=32)
    write_audit_set(tmp_path / "audit", batch.images, batch.labels, batch.masks, CLASS_NAMES)
    return tmp_path / "audit"


def test_a_sixteen_bit_audit_set_loads_as_its_eight_bit_twin(audit_dir):
    eight = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    gray8 = eight.images[:].mean(dim=1)
    for i in range(4):  # rewrite every image as 16-bit grayscale, every mask as 0/1
        name = f"{i:05d}.png"
        level = (gray8[i].numpy() * 65535).round().astype(np.uint16)
        Image.fromarray(level).save(audit_dir / "images" / name)
        binary = (np.asarray(Image.open(audit_dir / "masks" / name)) > 0).astype(np.uint8)
        Image.fromarray(binary).save(audit_dir / "masks" / name)
    sixteen = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    assert (sixteen.images[:] - gray8[:, None]).abs().max() <= 1e-4
    assert sixteen.images[:].max() < 1.0  # not the white squares of a clipping conversion
    assert torch.equal(sixteen.masks[:], eight.masks[:])


def test_a_mode_that_cannot_be_decoded_names_its_line_and_the_reason(audit_dir):
    Image.fromarray(np.full((32, 32), 7.0, dtype=np.float32)).save(audit_dir / "images/x.tiff")
    (audit_dir / "manifest.csv").write_text(
        "image,label,spurious_mask\nimages/00000.png,benign,masks/00000.png\n"
        "images/x.tiff,benign,masks/00001.png\n"
    )
    loaded = load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
    with pytest.raises(AuditSetError, match=r"manifest\.csv:3 column 'image': x\.tiff: float"):
        loaded.images[:]


@pytest.mark.parametrize(
    ("region", "write"),
    [
        ("spurious_box", '"0,0,32,32"'),
        ("spurious_mask", "masks/full.png"),
    ],
)
def test_a_region_covering_the_whole_image_is_refused_when_the_manifest_loads(
    audit_dir, region, write
):
    Image.new("L", (32, 32), 1).save(audit_dir / "masks/full.png")
    (audit_dir / "manifest.csv").write_text(
        f"image,label,{region}\nimages/00000.png,benign,{write}\n"
    )
    with pytest.raises(AuditSetError, match=r"manifest\.csv:2 column .*covers the whole"):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)


def test_a_mode_without_conversion_is_refused_from_the_header_before_any_compute(audit_dir):
    Image.new("LAB", (32, 32)).save(audit_dir / "images/lab.tiff")
    (audit_dir / "manifest.csv").write_text("image,label\nimages/lab.tiff,benign\n")
    with pytest.raises(
        AuditSetError, match=r"manifest\.csv:2 column 'image': lab\.tiff: image mode 'LAB'"
    ):
        load_audit_set(audit_dir / "manifest.csv", class_names=CLASS_NAMES)
