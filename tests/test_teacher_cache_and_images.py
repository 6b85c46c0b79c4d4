"""The shared foundations of the data side: the crash-safe teacher cache and safe image opening."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dataset_builder.images import BadImageError, open_micrograph, to_rgb
from dataset_builder.question_families import QUESTION_FAMILIES, caption_for_category, family_by_key
from dataset_builder.teacher.protocol import encode_micrograph


def test_question_families_cover_the_paper():
    assert len(QUESTION_FAMILIES) == 10
    assert sum(len(f.questions) for f in QUESTION_FAMILIES) == 22
    assert "nanowires" in caption_for_category("Nanowires")
    with pytest.raises(KeyError, match="unknown question family 'nope'"):
        family_by_key("nope")


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "I;16", "CMYK", "RGBA", "F"])
def test_every_mode_becomes_rgb(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(1000, 4000, (8, 8), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((8, 8), dtype=np.float32))
    else:
        image = Image.new(mode, (8, 8))
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (8, 8)


def test_sixteen_bit_is_stretched_not_darkened():
    values = np.linspace(1000, 4000, 64, dtype=np.uint16).reshape(8, 8)
    converted = np.asarray(to_rgb(Image.fromarray(values)))
    assert converted.min() == 0 and converted.max() == 255


@pytest.mark.parametrize("max_side", [4000, 1024])
def test_the_teacher_gets_the_side_it_asks_for_from_a_large_original(tmp_path, max_side):
    """Decoding reduces large originals, but never below the teacher's --max-side (above 2048 px too)."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.tile(np.arange(250, dtype=np.uint8), (500, 20))).save(path)  # 5000 x 500
    encoded = encode_micrograph(path, max_side=max_side)
    sent = Image.open(io.BytesIO(base64.b64decode(encoded.data_url.removeprefix("data:image/jpeg;base64,"))))
    assert sent.size == (encoded.width, encoded.height) == (max_side, max_side // 10)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is a text file", "not an image"), (None, "corrupt or truncated")],
)
def test_bad_files_name_the_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        Image.new("RGB", (64, 64), "white").save(path, "JPEG")
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as error:
        open_micrograph(path)
    assert str(path) in str(error.value)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)
    with pytest.raises(BadImageError, match="decompression bomb|exceeds"):
        open_micrograph(path, max_pixels=50_000_000)
