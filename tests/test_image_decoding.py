"""Decoding that costs what the image needs: reduced while decoded, bounded in bytes, and stretched over the
finite pixels only (issue 24, defects 3 and 4)."""

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from image_fixtures import PROC_STATUS, large_sixteen_bit_png, peak_mib_added_by
from PIL import Image

from dataset_builder.images import DECODE_MAX_SIDE, BadImageError, open_micrograph


@pytest.fixture(scope="module")
def large_png(tmp_path_factory) -> Path:
    return large_sixteen_bit_png(tmp_path_factory.mktemp("large") / "deep.png")


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="peak memory is read from Linux's /proc/self")
def test_a_large_sixteen_bit_png_opens_reduced_in_a_few_hundred_megabytes(large_png):
    opened = []
    added = peak_mib_added_by(lambda: opened.append(open_micrograph(large_png)))
    assert added < 300  # the 16-bit pixels alone are 155 MiB; stretching them whole in float64 took 1.3 GiB more
    reduction = 9000 // DECODE_MAX_SIDE
    assert opened[0].size == (9000 // reduction,) * 2 and opened[0].mode == "RGB"
    assert opened[0].getextrema()[0] == (0, 255)  # still stretched over the image's own range


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels of 8-bit RGBA (colour type 6) and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def test_an_image_whose_pixels_would_not_fit_is_named_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(9000, 9000))  # under the pixel limit, but 309 MiB of RGBA once decoded
    with pytest.raises(BadImageError, match=r"decoding needs 309 MiB, over the 256 MiB limit per image") as error:
        open_micrograph(path)
    assert str(path) in str(error.value)
    small = tmp_path / "small.png"
    Image.new("RGB", (1000, 800)).save(small)
    with pytest.raises(BadImageError, match=r"decoding needs 3 MiB, over the 1 MiB limit per image"):
        open_micrograph(small, max_bytes=2**20)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (4 * DECODE_MAX_SIDE, DECODE_MAX_SIDE), (90, 90, 90)).save(path, quality=50)
    # 64 MiB at full scale: only a JPEG decoded at a quarter of its size fits in 8 MiB.
    assert open_micrograph(path, max_bytes=8 * 2**20).size == (DECODE_MAX_SIDE, DECODE_MAX_SIDE // 4)
    assert open_micrograph(path, max_side=DECODE_MAX_SIDE // 2).size == (DECODE_MAX_SIDE // 2, DECODE_MAX_SIDE // 8)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "CMYK", "I", "F"])
def test_every_mode_is_reduced_to_at_least_the_side_asked_for(mode, tmp_path):
    path = tmp_path / f"image-{mode}.tiff"
    Image.new(mode, (450, 130)).save(path)
    opened = open_micrograph(path, max_side=100)
    assert opened.mode == "RGB" and opened.size == (112, 32)  # reduced 4 times: the longer side stays >= 100


def test_a_nan_pixel_leaves_the_float_image_stretched_and_is_named(tmp_path, caplog):
    values = np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    values[10, 20] = np.nan
    values[11, 20] = np.inf
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    with caplog.at_level(logging.WARNING):
        pixels = np.asarray(open_micrograph(path))[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 200
    assert pixels[10, 20] == 0 and pixels[11, 20] == 0  # the pixels with no value are shown black
    assert f"{path}: NaN or infinite pixels" in caplog.text


def test_an_image_with_no_finite_pixel_is_black_and_named(tmp_path, caplog):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32)).save(path)
    with caplog.at_level(logging.WARNING):
        assert np.asarray(open_micrograph(path)).max() == 0
    assert f"{path}: NaN or infinite pixels" in caplog.text


def test_sixteen_bit_decoding_matches_the_processor_on_small_images(tmp_path):
    """Images below the reduction threshold decode as `to_rgb` always decoded them (training data unchanged)."""
    from modeling_mvaema.processing_mvaema import to_rgb

    values = np.random.default_rng(0).integers(1000, 4000, (300, 200), dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert np.array_equal(np.asarray(open_micrograph(path)), np.asarray(to_rgb(Image.open(path))))
