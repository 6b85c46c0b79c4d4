import pytest
import torch

from instruct_tuning.augmentation import AugmentationSettings, MicrographAugmentation


def pixels(count: int = 6, size: int = 32) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.sin(xs / 3.0) * torch.cos(ys / 5.0)
    return torch.stack([base.expand(3, -1, -1) * (0.5 + index / (2 * count)) for index in range(count)])


def test_augmentation_keeps_shape_and_range_and_varies_each_image():
    augment = MicrographAugmentation(32)
    batch = pixels()
    out = augment(batch, generator=torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= -1.0 and out.max() <= 1.0
    changed = (out - batch).abs().flatten(1).mean(dim=1)
    assert bool((changed > 1e-3).all()), "every image is varied"


def test_same_generator_seed_gives_the_same_batch_and_leaves_the_global_stream_alone():
    augment = MicrographAugmentation(32)
    batch = pixels()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = augment(batch, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3), expected_next)
    second = augment(batch, generator=torch.Generator().manual_seed(7))
    other = augment(batch, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_quarter_turns_and_flips_only_move_pixels():
    settings = AugmentationSettings(min_crop_scale=1.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), noise_std=0.0)
    batch = pixels()
    out = MicrographAugmentation(32, settings)(batch, generator=torch.Generator().manual_seed(1))
    for original, moved in zip(batch, out):
        torch.testing.assert_close(moved.flatten().sort().values, original.flatten().sort().values)
    assert not torch.equal(out, batch)


@pytest.mark.parametrize(
    ("field", "value", "message"), [("min_crop_scale", 0.0, "min_crop_scale"), ("noise_std", -1.0, "noise_std")]
)
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentationSettings(**{field: value})


def test_grey_micrographs_stay_grey_and_colour_images_are_varied_per_channel():
    """A grey micrograph (three equal channels) is varied once and repeated, noise included; a colour image keeps
    its own channels."""
    augment = MicrographAugmentation(32)
    grey = augment(pixels(), generator=torch.Generator().manual_seed(2))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    colour = pixels() * torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
    varied = augment(colour, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(varied[:, 0], varied[:, 1])
    assert (varied[:, 1] - colour[:, 1]).abs().mean() > 1e-3
