"""Pixels to the model's [0, 1] range, for every mode Pillow decodes; one rule for masks.

Why a table and not ``convert("RGB")``: Pillow's conversions clip 16- and
32-bit images to 8 bits, so a 16-bit X-ray becomes a white square, and a
model that sees white squares passes any attribution check. Each mode is
scaled by its container's range (as ``skimage.img_as_float`` does): 8-bit
by 255, 16-bit by 65535, 32-bit integers by 2³¹ − 1; float images must
already lie in [0, 1]. Grayscale is repeated over three channels; alpha is
dropped (a transparent pixel keeps its colour); the EXIF orientation is
applied. A mode with no faithful conversion (``LAB``, negative integers,
float outside [0, 1]) is refused with the reason.

Masks: a pixel is spurious when any colour channel is non-zero (and, if the
mask has alpha, it is not fully transparent). Palette masks are read by
colour, not index. Lossy (JPEG) masks are refused: their compression noise
would make near-black pixels spurious.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DecodeError", "check_mode", "image_array", "mask_array", "oriented_size"]

EIGHT_BIT = frozenset({"1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"})
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
"""WebP may be lossless, but Pillow cannot tell; masks are refused in all three."""
ORIENTATION = 0x0112
TRANSPOSED = frozenset({5, 6, 7, 8})
"""EXIF orientations that swap width and height."""


class DecodeError(ValueError):
    """The file decodes, but not to anything the model can be audited on; says why."""


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(H, W) after the EXIF orientation, read from the header alone."""
    width, height = image.size
    if image.getexif().get(ORIENTATION) in TRANSPOSED:
        width, height = height, width
    return height, width


def check_mode(image: Image.Image) -> None:
    """Refuse, from the header alone, a mode no table row decodes."""
    if image.mode not in EIGHT_BIT | SIXTEEN_BIT | PREMULTIPLIED.keys() | {"I", "F"}:
        raise DecodeError(_NO_CONVERSION.format(mode=image.mode))


_NO_CONVERSION = (
    "image mode {mode!r} has no faithful conversion to RGB; save it as RGB, "
    "grayscale (8 or 16 bit) or float in [0, 1]"
)


def image_array(image: Image.Image) -> np.ndarray:
    """(3, H, W) float32 in [0, 1]: the image as the model sees it."""
    image = ImageOps.exif_transpose(image)
    mode = PREMULTIPLIED.get(image.mode)
    if mode is not None:
        image = image.convert(mode)
    if image.mode in EIGHT_BIT:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))
    gray = _gray_unit(image)
    return np.ascontiguousarray(np.broadcast_to(gray, (3, *gray.shape)))


def _gray_unit(image: Image.Image) -> np.ndarray:
    """One-band images of more than 8 bits, scaled by the container's range."""
    values = np.asarray(image)
    if image.mode in SIXTEEN_BIT:
        return values.astype(np.float32) / 65535.0
    if image.mode == "I":
        if values.min() < 0:
            raise DecodeError(
                f"32-bit integer image has negative values (min {int(values.min())}); "
                "save it as 8- or 16-bit, or as float in [0, 1]"
            )
        return (values.astype(np.float64) / (2**31 - 1)).astype(np.float32)
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise DecodeError(
                "float image values must be finite and lie in [0, 1] (found NaN or Inf)"
            )
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise DecodeError(f"float image values must lie in [0, 1] (found {low:g} to {high:g})")
        return values.astype(np.float32)
    raise DecodeError(_NO_CONVERSION.format(mode=image.mode))


def mask_array(image: Image.Image) -> np.ndarray:
    """(H, W) bool: non-zero (and not fully transparent) pixels are spurious."""
    if image.format in LOSSY_FORMATS:
        raise DecodeError(
            f"{image.format} masks are lossy (compression noise would mark pixels spurious); "
            "save masks as PNG"
        )
    image = ImageOps.exif_transpose(image)
    if image.mode in PREMULTIPLIED:
        image = image.convert(PREMULTIPLIED[image.mode])
    if image.mode in {"P", "PA"}:
        image = image.convert("RGBA")
    if image.mode == "LAB":
        raise DecodeError("LAB masks are not supported; save masks as grayscale PNG")
    values = np.asarray(image)
    if values.ndim == 2:
        return values != 0
    if image.mode in {"LA", "RGBA"}:
        colour, alpha = values[..., :-1], values[..., -1]
        return (colour != 0).any(axis=-1) & (alpha != 0)
    # RGB, RGBX, CMYK, YCbCr, HSV: by colour (YCbCr black is (0, 128, 128), CMYK white is 0)
    return (np.asarray(image.convert("RGB")) != 0).any(axis=-1)
