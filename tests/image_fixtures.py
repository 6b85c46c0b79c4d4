"""Large images in small files, and the peak memory a call adds, for the decoding and prediction tests."""

import re
from pathlib import Path

import numpy as np
from PIL import Image

PROC_STATUS = Path("/proc/self/status")


def resident_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process, in MiB."""
    return int(re.search(rf"{field}:\s+(\d+) kB", PROC_STATUS.read_text()).group(1)) / 1024


def peak_mib_added_by(action) -> float:
    """How far `action()` raised this process's peak resident memory above what it held before: Linux resets the
    peak to the current size on writing 5 to /proc/self/clear_refs."""
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_mib("VmRSS")
    action()
    return resident_mib("VmHWM") - before


def large_sixteen_bit_png(path: Path) -> Path:
    """9000 x 9000 px of 16-bit greyscale, under the pixel limit, in a PNG of about 200 KB."""
    pixels = np.full((9000, 9000), 1000, dtype=np.uint16)
    pixels[::7, ::5] = 4000
    pixels[4000:4100] = 60000
    Image.fromarray(pixels).save(path, compress_level=1)
    return path
