"""Reading one image file safely: a format allowlist, a pixel limit, and one conversion to RGB.

``read_image`` is the only way sotakit decodes a file of an image folder: the index pass
(folder_index.py) and ``FolderSource.load`` both call it, so a file that passed the scan is read
the same way during training. Odd but valid files are converted rather than mangled: EXIF
orientation applied, CMYK/L/P/LA/RGBA converted, 16-bit grayscale scaled (Pillow's
``convert("RGB")`` clips it to white), and the first frame of an animated GIF or multi-page TIFF taken.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

# What the file name promises -> what Pillow must find inside. torchvision's IMG_EXTENSIONS plus
# GIF. MPO is a JPEG with extra pictures appended (phone cameras write it under .jpg).
EXTENSION_FORMATS = {
    ".jpg": ("JPEG", "MPO"), ".jpeg": ("JPEG", "MPO"), ".png": ("PNG",), ".gif": ("GIF",), ".bmp": ("BMP",),
    ".tif": ("TIFF",), ".tiff": ("TIFF",), ".webp": ("WEBP",), ".ppm": ("PPM",), ".pgm": ("PPM",),
}
# Pillow is asked to try only these parsers: a file is never handed to one of its ~40 rarer
# plugins (PSD, EPS via Ghostscript, ...), which is where image-library vulnerabilities cluster.
# (MPO is not a parser of its own: Pillow's JPEG parser returns it.)
ALLOWED_FORMATS = tuple(sorted({f for fs in EXTENSION_FORMATS.values() for f in fs} - {"MPO"}))

# Transparent pixels are composited on white. Their stored colour is arbitrary (often black or a
# leftover colour) and ``convert("RGB")`` would expose it; white is how such images are shown on a
# page (logos, product shots, icons); and a fixed colour keeps the pixels a function of the file.
BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageRejected(Exception):
    """A file that is not a usable image; ``reason`` is a short code, ``detail`` says what was found."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_image(path: str, *, max_pixels: int | None = None) -> tuple[Image.Image, dict]:
    """Decode ``path`` fully and return (RGB image, info) or raise ImageRejected.

    ``info`` holds the stored ``format``, ``mode``, ``width`` and ``height`` (after EXIF rotation)
    and ``detail``, the conversions applied. ``max_pixels`` (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``) excludes larger images before any pixel is decoded; Pillow itself
    only warns between 1x and 2x its limit.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSION_FORMATS:
        raise ImageRejected("not_an_image_name", f"extension {ext or '(none)'!r} is not one of "
                            f"{' '.join(sorted(EXTENSION_FORMATS))}")
    if os.path.getsize(path) == 0:
        raise ImageRejected("empty", "file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path, formats=ALLOWED_FORMATS) as im:
                fmt = im.format
                if fmt not in EXTENSION_FORMATS[ext]:
                    raise ImageRejected("mislabelled", f"extension {ext} but the content is {fmt}; "
                                        f"rename it to .{fmt.lower()} to use it")
                if limit and im.width * im.height > limit:
                    raise ImageRejected("oversized",
                                        f"{im.width}x{im.height} = {im.width * im.height} pixels, "
                                        f"more than the limit {limit}")
                im.load()  # a full decode: Image.verify() passes truncated JPEGs
                rgb, detail = to_rgb(im)
                info = {"format": fmt, "mode": im.mode, "width": rgb.width, "height": rgb.height,
                        "detail": detail}
                return rgb, info
    except ImageRejected:
        raise
    except Image.UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"content is none of {', '.join(ALLOWED_FORMATS)}") from None
    except Image.DecompressionBombError as e:
        raise ImageRejected("oversized", str(e)) from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, zlib and struct errors
        reason = "truncated" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "decode_error"
        raise ImageRejected(reason, f"{type(e).__name__}: {e}") from None


def to_rgb(im: Image.Image) -> tuple[Image.Image, str]:
    """The current frame of a loaded image as 8-bit RGB, upright; plus a note of what was converted."""
    notes = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"frame 1 of {frames}")  # Image.open leaves frame 0 current; we never seek
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        im = Image.fromarray(scale_to_8bit(np.asarray(im))).convert("RGB")
        notes.append(f"{mode} scaled to 8 bit")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        background = Image.new("RGBA", im.size, BACKGROUND + (255,))
        im = Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
        notes.append(f"{mode} transparency composited on white")
    elif mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK (Adobe's inverted CMYK is undone by Pillow), YCbCr
        notes.append(f"{mode} converted")
    return im, "; ".join(notes)


def scale_to_8bit(a: np.ndarray) -> np.ndarray:
    """0..65535 to 0..255 with rounding (v * 255 / 65535): mid-gray 32768 becomes 128, not 255.

    Mode "I" (32-bit) holds what Pillow reads from 16-bit PNG/TIFF, so it is read on the same scale
    (values outside 0..65535 are clipped), not stretched per image, which would change with content.
    """
    v = np.clip(a.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)
