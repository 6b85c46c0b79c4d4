"""The content-addressed image store under the datasets cache: renderings and images extracted from a corpus.

Files are named by the image id they belong to (the SHA-256 of the original file's bytes), so every build and
every corpus loaded on this machine shares one copy. Two kinds live here:

- `<image_id><suffix>`: an original image file, extracted from a prepared corpus after its bytes were checked
  against the id;
- `<image_id>.rgb8.png`: the 8-bit RGB rendering of an image whose mode a plain `convert("RGB")` (what
  `datasets.Image` and image processors do) would get wrong: 16-bit greyscale is clipped to white and
  transparency turns black.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
from PIL import Image

IMAGE_STORE_DIRNAME = "sem_instruct_images"
RENDERING_SUFFIX = ".rgb8.png"
# Modes that `PIL.Image.convert("RGB")` maps faithfully.
FAITHFUL_RGB_MODES = frozenset({"1", "L", "P", "RGB", "CMYK", "YCbCr"})


def image_store_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir or datasets.config.HF_DATASETS_CACHE).expanduser() / IMAGE_STORE_DIRNAME


def converts_faithfully(header: Image.Image) -> bool:
    """Whether `header.convert("RGB")` keeps what the image shows (reads the header only, no decode)."""
    return header.mode in FAITHFUL_RGB_MODES and "transparency" not in header.info


def store_rendering(rgb_image: Image.Image, store_dir: Path, image_id: str) -> str:
    """Path of the stored 8-bit PNG of `rgb_image` (the decoded image `image_id`), written on first use."""

    def encode_png() -> bytes:
        buffer = io.BytesIO()
        rgb_image.save(buffer, format="PNG")
        return buffer.getvalue()

    return store_once(store_dir / f"{image_id}{RENDERING_SUFFIX}", encode_png)


def store_once(target: Path, make_bytes: Callable[[], bytes]) -> str:
    """Write a content-addressed file unless it exists, through a temporary file of its own renamed into place:
    parallel builds, or threads storing byte-identical files, never see half a file nor each other's temp file."""
    if not target.exists():
        handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
        try:
            with handle:
                handle.write(make_bytes())
            os.replace(handle.name, target)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
    return str(target)
