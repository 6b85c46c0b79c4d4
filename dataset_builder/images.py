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

from PIL import Image, UnidentifiedImageError

# The processor's conversion: the model files stand alone on the Hub, so the package imports theirs.
from modeling_mvaema.processing_mvaema import to_rgb

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
