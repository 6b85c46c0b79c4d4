"""Opening real-world micrographs safely: every good image is usable, every bad one is named with a reason.

Labs hand us JPEG, PNG and TIFF in every flavour (palette, 16-bit greyscale, RGB), at sizes up to
3072x2304, and folders that also hold zero-byte files, truncated downloads, text files named `.jpg`
and, now and then, a decompression bomb. `open_micrograph` turns each of those into either an RGB
image or a `BadImageError` that says which file and why; callers collect the errors into a report.

A small file can hold a large image (a 9000x9000 16-bit PNG compresses to 200 KB), so decoding costs what the image
needs, not what it could: a JPEG is decoded at a reduced scale, any other image is box-reduced as soon as it is
decoded, to no less than `max_side` pixels on its longer side (the model reads 224, the teacher is sent 1024 by
default); an image whose decoded pixels alone would exceed `max_bytes` is refused before decoding; and 16/32-bit
and float pixels are stretched in float32, one band of rows at a time, over the range of their finite values.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# The processor's conversions: the model files stand alone on the Hub, so the package imports theirs.
from modeling_mvaema.processing_mvaema import HIGH_BIT_DEPTH_MODES, stretched_to_8_bit, to_rgb

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})

# 3072x2304 (the largest SEM-dataset images) is 7.1 Mpx; anything beyond ~16x that is refused as a bomb.
MAX_IMAGE_PIXELS = 120_000_000
# Images are reduced while decoded to no less than this longer side: twice the teacher's default, far above the
# model's 224 px, and above every SEM-dataset image, which are decoded whole.
DECODE_MAX_SIDE = 2048
# The decoded pixels of one image at most: a 9000x9000 16-bit micrograph (155 MiB) fits, 9000x9000 RGBA does not.
MAX_DECODED_BYTES = 256 * 2**20


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


LAYOUT_HINT = "expected one sub-folder per category holding its images: IMAGE_ROOT/<Category>/<image>"


@dataclass(frozen=True)
class FolderImage:
    """An image-named file of a category folder."""

    path: Path  # as found under the root (symlinks not resolved)
    relative_path: str  # relative to the image root, "/"-separated: the name reports and caches use
    category: str  # the category folder's name


@dataclass
class FolderScan:
    """What `scan_image_folder` found: the categories, their image files, and every other visible file."""

    root: Path
    categories: tuple[str, ...]  # category folder names, sorted
    images: list[FolderImage]  # sorted by relative path
    skipped: list[SkippedImage]  # visible files that are not used, with the reason
    files_found: int  # visible files, used or not


def scan_image_folder(image_root: str | os.PathLike) -> FolderScan:
    """Every image file under `image_root/<Category>/` (sub-folders included): the one folder rule of the package.

    The rule, the same for the teacher (which pays per image) and the builder (which must find the teacher's
    answers again): names starting with "." are ignored at any depth (hidden files, `.ipynb_checkpoints`,
    macOS `._` files); symbolic links are followed, to category folders, sub-folders and files alike, but a folder
    reached twice through links is read once (no cycles). Other visible files are listed in `skipped`.
    """
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found; {LAYOUT_HINT}")
    categories = category_folders(root)
    if not categories:
        raise ValueError(f"{root}: no category sub-folders; {LAYOUT_HINT}")
    skipped = [
        SkippedImage(path.name, "not inside a category folder")
        for path in sorted(root.iterdir())
        if not path.name.startswith(".") and path.is_file()
    ]
    images: list[FolderImage] = []
    visited: set[str] = set()
    for category in categories:
        for path in visible_files(root / category, visited):
            relative = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(FolderImage(path, relative, category))
            else:
                reason = f"not an image file (extension {path.suffix!r} is not one of {', '.join(sorted(IMAGE_SUFFIXES))})"
                skipped.append(SkippedImage(relative, reason))
    images.sort(key=lambda image: image.relative_path)
    return FolderScan(root, categories, images, skipped, files_found=len(images) + len(skipped))


def category_folders(image_root: Path) -> tuple[str, ...]:
    """Names of the visible sub-folders of `image_root`, links to folders included, sorted."""
    return tuple(sorted(path.name for path in image_root.iterdir() if not path.name.startswith(".") and path.is_dir()))


def visible_files(folder: Path, visited: set[str] | None = None) -> list[Path]:
    """Visible regular files under `folder` (the package's folder rule: names starting with "." ignored, links
    followed), each folder read once; folders already in `visited` (real paths, shared across calls) are skipped."""
    visited = set() if visited is None else visited
    files = []
    for current, folder_names, file_names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in visited:
            folder_names[:] = []
            continue
        visited.add(real)
        folder_names[:] = sorted(name for name in folder_names if not name.startswith("."))
        for name in sorted(file_names):
            path = Path(current) / name
            if not name.startswith(".") and path.is_file():
                files.append(path)
    return files


def open_micrograph(
    path: str | os.PathLike,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_side: int = DECODE_MAX_SIDE,
    max_bytes: int = MAX_DECODED_BYTES,
) -> Image.Image:
    """Decode `path` into an RGB image, reduced by a whole factor while its longer side stays at least `max_side`,
    or raise `BadImageError` naming the file and the problem."""
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
                factor = reduction_factor(image.size, max_side)
                if factor > 1:  # JPEG decodes at 1/2, 1/4 or 1/8 scale directly; other formats ignore this
                    image.draft(image.mode, (width // factor, height // factor))
                check_decoded_bytes(path, image, max_bytes)
                image.load()
                return decoded_to_rgb(path, image, reduction_factor(image.size, max_side))
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(path, f"decompression bomb refused ({error})") from error
    except UnidentifiedImageError as error:
        raise BadImageError(path, "not an image PIL can identify (wrong extension or corrupt header)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"corrupt or truncated image ({error})") from error


def reduction_factor(size: tuple[int, int], max_side: int) -> int:
    """The largest whole factor that keeps the longer side at least `max_side` (and the shorter one a pixel)."""
    return max(1, min(max(size) // max_side, min(size)))


def check_decoded_bytes(path: Path, image: Image.Image, max_bytes: int) -> None:
    """Refuse, from its header, an image whose decoded pixels would take more than `max_bytes`."""
    # PIL keeps 1 byte a pixel for modes 1, L and P, 2 for 16-bit greyscale, 4 for all others (3 bands padded to 4).
    per_pixel = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    needed = image.width * image.height * per_pixel
    if needed > max_bytes:
        raise BadImageError(path, f"{image.width}x{image.height} {image.mode} pixels: decoding needs "
                                  f"{needed / 2**20:,.0f} MiB, over the {max_bytes / 2**20:,.0f} MiB limit per image")


def decoded_to_rgb(path: Path, image: Image.Image, factor: int) -> Image.Image:
    """The decoded `image`, reduced by `factor` (the last rows and columns that do not fill a box are left out), as
    8-bit RGB."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return to_rgb(stretched_to_8_bit(image, factor, source=str(path)))
    if factor == 1:
        return to_rgb(image)
    whole_boxes = (0, 0, image.width // factor * factor, image.height // factor * factor)
    if image.mode in ("1", "P", "PA"):  # bits and palette indexes cannot be averaged: keep one pixel per box
        size = (image.width // factor, image.height // factor)
        return to_rgb(image.resize(size, Image.Resampling.NEAREST, whole_boxes))
    return to_rgb(image.reduce(factor, whole_boxes))
