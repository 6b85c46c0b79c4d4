"""Train-time augmentation of micrographs, on batches of model-ready pixels, with kornia.

A micrograph has no up, no left and no preferred scale: the same sample is imaged at any rotation, mirrored, at
many magnifications, with another detector gain and more or less noise. The augmentation draws those variations:
a crop over a range of scales (resized back to the model's input size), flips, quarter turns, brightness, contrast
and Gaussian noise. It works on whole batches of tensors (kornia), so it costs milliseconds a batch on a CPU and runs
on the GPU where the pixels are. Evaluation never augments.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch


@dataclass(frozen=True)
class AugmentationSettings:
    """What the augmentation may change. `min_crop_scale` is the smallest crop as a share of the image area (1.0:
    no cropping); brightness and contrast are factor ranges; `noise_std` is in units of the [0, 1] pixel range."""

    min_crop_scale: float = 0.35
    flips: bool = True
    quarter_turns: bool = True
    brightness: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.7, 1.3)
    noise_std: float = 0.03

    def __post_init__(self):
        if not 0.05 <= self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must lie in [0.05, 1], got {self.min_crop_scale}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")


class MicrographAugmentation(torch.nn.Module):
    """pixel_values `(N, 3, S, S)` in [-1, 1] -> the same shape, each image with its own random variation."""

    def __init__(self, image_size: int, settings: AugmentationSettings = AugmentationSettings()):
        super().__init__()
        steps = []
        if settings.min_crop_scale < 1.0:
            steps.append(K.RandomResizedCrop((image_size, image_size), scale=(settings.min_crop_scale, 1.0)))
        if settings.flips:
            steps += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
        if settings.quarter_turns:
            steps.append(K.RandomRotation90(times=(0, 3)))
        steps += [K.RandomBrightness(settings.brightness, p=0.8), K.RandomContrast(settings.contrast, p=0.8)]
        if settings.noise_std > 0:
            steps.append(K.RandomGaussianNoise(std=settings.noise_std, p=0.5))
        self.steps = K.AugmentationSequential(*steps)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augments in [0, 1] (where kornia's photometric ranges are defined) and maps back to [-1, 1]. With a
        `generator` the draws are reproducible: kornia draws from torch's global RNG, which is seeded from it here
        and restored afterwards, so the caller's random stream is left as it was."""
        if generator is None:
            return self._augment(pixel_values)
        state = torch.random.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        try:
            return self._augment(pixel_values)
        finally:
            torch.random.set_rng_state(state)

    def _augment(self, pixel_values: torch.Tensor) -> torch.Tensor:
        unit = (pixel_values.float() + 1.0) / 2.0
        # Micrographs are grey, repeated in three channels (`to_rgb`): varying one channel is a third of the work,
        # and the noise stays grey, as a detector's is. Colour images are varied channel by channel.
        is_grey = unit.shape[1] == 3 and torch.equal(unit[:, :1].expand_as(unit), unit)
        varied = self.steps(unit[:, :1]).expand_as(unit) if is_grey else self.steps(unit)
        return (varied.clamp(0.0, 1.0) * 2.0 - 1.0).to(pixel_values.dtype).contiguous()
