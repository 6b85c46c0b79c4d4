"""Opening real-world micrographs safely: every good image is usable, every bad one is named with a reason.

Labs hand us JPEG, PNG and TIFF in every flavour (palette, 16-bit greyscale, RGB), at sizes up to
3072x2304, and folders that also hold zero-byte files, truncated downloads, text files named `.jpg`
and, now and then, a decompression bomb. `open_micrograph` turns each of those into either an RGB
image or a `BadImageError` that says which file and why; callers collect the errors into a report.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})

# 3072x2304 (the largest SEM-dataset images) is 7.1 Mpx; anything beyond ~16x that is refused as a bomb.
MAX_IMAGE_PIXELS = 120_000_000


class BadImageError(ValueError):
    """An image file that cannot be used; `str()` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class SkippedImage:
    path: str
    reason: str


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. 16/32-bit greyscale is stretched over its own min..max range, because
    scaling by the type's maximum would turn a 12-bit detector's image nearly black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((values - low) * scale).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def open_micrograph(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Fully decode `path` into an RGB image, or raise `BadImageError` naming the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise BadImageError(path, f"cannot read file ({error.strerror})") from error
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadImageError(
                        path, f"{width}x{height} pixels exceeds the {max_pixels:,}-pixel limit (decompression bomb?)"
                    )
                image.load()
                return to_rgb(image)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise BadImageError(path, "not an image PIL can identify (wrong extension or corrupt header)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"corrupt or truncated image ({error})") from error
