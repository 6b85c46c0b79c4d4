"""Train-time augmentation of micrographs, on batches of model-ready pixels, with one resampling per batch.

A micrograph has no up, no left and no preferred scale: the same sample is imaged at any rotation, mirrored, at
many magnifications, with another detector gain and more or less noise. The augmentation draws those variations:
a crop over a range of scales (resized back to the model's input size), flips, quarter turns, brightness, contrast
and Gaussian noise.

The crop, the flips and the quarter turn of an image are one affine map of its output grid onto its input, so the
whole batch is resampled by one `torch.nn.functional.affine_grid` + `grid_sample` call (bilinear, as a resized crop
is), and the photometric changes are a scale and a shift per image. A pipeline of per-transform kornia modules did
the same in 85 ms a batch of 44 micrographs on 2 CPU cores, a fifth of a training step; this costs about a tenth of
that (benchmarks/training_throughput.py measures both parts of a step). Evaluation never augments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationSettings:
    """What the augmentation may change. `min_crop_scale` is the smallest crop as a share of the image area (1.0:
    no cropping), its aspect ratio drawn from `crop_ratio`; brightness and contrast are factor ranges (brightness
    shifts by factor - 1 in units of the [0, 1] pixel range, contrast scales), each applied with probability
    `photometric_probability`; `noise_std` is in units of the [0, 1] pixel range, added with probability
    `noise_probability`."""

    min_crop_scale: float = 0.35
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flips: bool = True
    quarter_turns: bool = True
    brightness: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.7, 1.3)
    photometric_probability: float = 0.8
    noise_std: float = 0.03
    noise_probability: float = 0.5

    def __post_init__(self):
        if not 0.05 <= self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must lie in [0.05, 1], got {self.min_crop_scale}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        for name in ("crop_ratio", "brightness", "contrast"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, got {(low, high)}")
        for name in ("photometric_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


# The eight symmetries of the square (four quarter turns, each mirrored or not) as exact integer matrices: a turn or
# a flip then moves pixel centres onto pixel centres and bilinear resampling copies values unchanged.
CROP_CANDIDATES = 10
QUARTER_TURNS = torch.tensor([[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]]],
                             dtype=torch.float32)


class MicrographAugmentation(torch.nn.Module):
    """pixel_values `(N, C, S, S)` in [-1, 1] -> the same shape, each image with its own random variation."""

    def __init__(self, image_size: int, settings: AugmentationSettings = AugmentationSettings()):
        super().__init__()
        self.image_size = image_size
        self.settings = settings

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws every image's variation from `generator` (default: torch's global stream). Resampling is linear, so
        it works on the [-1, 1] values; the photometric ranges are defined on [0, 1]."""
        # Micrographs are grey, repeated in three channels (`to_rgb`): varying one channel is a third of the work,
        # and the noise stays grey, as a detector's is. Colour images are varied channel by channel.
        channels = pixel_values.shape[1]
        is_grey = channels == 3 and all(torch.equal(pixel_values[:, 0], pixel_values[:, c]) for c in (1, 2))
        varied = self._augment(pixel_values[:, :1] if is_grey else pixel_values, generator)
        return (varied.expand(-1, channels, -1, -1) if is_grey else varied).to(pixel_values.dtype).contiguous()

    def _augment(self, pixel_values: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        settings, count, device = self.settings, pixel_values.shape[0], pixel_values.device
        draws = RandomDraws(count, generator)
        grid = F.affine_grid(self.output_to_input(draws).to(device),
                             [count, pixel_values.shape[1], self.image_size, self.image_size], align_corners=False)
        sampled = F.grid_sample(pixel_values.float(), grid, mode="bilinear", padding_mode="reflection",
                                align_corners=False)
        shift = torch.where(draws.happens(settings.photometric_probability), draws.uniform(*settings.brightness) - 1.0, 0.0)
        scale = torch.where(draws.happens(settings.photometric_probability), draws.uniform(*settings.contrast), 1.0)
        # In [0, 1]: brightness, then contrast, each clamped to the pixel range as a detector saturates.
        unit = sampled.mul_(0.5).add_(0.5 + shift.view(-1, 1, 1, 1).to(device)).clamp_(0.0, 1.0)
        unit = unit.mul_(scale.view(-1, 1, 1, 1).to(device)).clamp_(0.0, 1.0)
        noisy = draws.happens(settings.noise_probability) if settings.noise_std > 0 else torch.zeros(count, dtype=torch.bool)
        if noisy.any():
            rows = noisy.nonzero().squeeze(1).to(device)
            noise = torch.randn((len(rows), *unit.shape[1:]), generator=generator).to(device)
            unit[rows] = (unit[rows] + noise.mul_(settings.noise_std)).clamp_(0.0, 1.0)
        return unit.mul_(2.0).sub_(1.0)

    def output_to_input(self, draws: "RandomDraws") -> torch.Tensor:
        """`(N, 2, 3)` affine maps from each output grid (normalised coordinates in [-1, 1]) to its input: a quarter
        turn and mirrors of the square, then scaled into the crop and moved to its centre.

        The draws are those of the kornia pipeline of mvaema 0.2.0, so that an epoch teaches what it taught: each
        mirror with probability 1/2; a turn with probability 1/2, of round(U(0, 3)) quarters (kornia's
        `RandomRotation90(times=(0, 3))`); the crop as torchvision's `RandomResizedCrop` draws it (kornia's too):
        ten candidates of area U(min_crop_scale, 1) and log-uniform aspect ratio, the first that fits in the
        image, else the whole image, placed uniformly inside it."""
        settings, count = self.settings, draws.count
        turns = torch.zeros(count, dtype=torch.long)
        if settings.quarter_turns:
            turns = torch.where(draws.happens(0.5), draws.uniform(0.0, 3.0).round().long(), 0)
        symmetry = QUARTER_TURNS[turns]
        if settings.flips:
            mirror = torch.stack([draws.sign(), draws.sign()], dim=1)  # (N, 2): the x and y axes of the output
            symmetry = symmetry * mirror[:, None, :]
        size, centre = torch.ones(count, 2), torch.zeros(count, 2)
        if settings.min_crop_scale < 1.0:
            area = draws.uniform(settings.min_crop_scale, 1.0, CROP_CANDIDATES)
            ratio = draws.uniform(math.log(settings.crop_ratio[0]), math.log(settings.crop_ratio[1]), CROP_CANDIDATES).exp()
            candidates = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], dim=2)  # (N, 10, 2): w, h
            fits = (candidates <= 1.0).all(dim=2)
            first_fit = fits.int().argmax(dim=1)  # the first candidate that fits (0 when none does)
            chosen = candidates[torch.arange(count), first_fit]
            size = torch.where(fits.any(dim=1, keepdim=True), chosen, torch.ones_like(chosen))
            centre = draws.uniform(-1.0, 1.0, 2) * (1.0 - size)
        return torch.cat([size[:, :, None] * symmetry, centre[:, :, None]], dim=2)


class RandomDraws:
    """Per-image random numbers for a batch of `count` images from one generator (None: torch's global stream)."""

    def __init__(self, count: int, generator: torch.Generator | None):
        self.count, self.generator = count, generator

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(self.count, *shape, generator=self.generator)

    def happens(self, probability: float) -> torch.Tensor:
        return torch.rand(self.count, generator=self.generator) < probability

    def integers(self, high: int) -> torch.Tensor:
        return torch.randint(0, high, (self.count,), generator=self.generator)

    def sign(self) -> torch.Tensor:
        return torch.where(self.happens(0.5), -1.0, 1.0)
