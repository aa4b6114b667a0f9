"""The ``colour`` view and the up-front check of every configured policy name."""

import re

import pytest
import torch

from harness.augment import check_policy, resolve_policy
from harness.errors import ConfigError


def _two_colour_images(n=16, size=12):
    """Images of one pattern (a square on a background), each in its own pair of random colours."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[3:8, 4:10] = True
    fg, bg = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    return torch.where(mask, fg, bg), mask


def test_colour_view_changes_colours_but_keeps_every_pixel_in_place():
    x, mask = _two_colour_images()
    y = resolve_policy("colour")(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    for img in y:
        # a per-pixel colour map: the square's pixels share one colour, the background's another
        assert torch.allclose(img[:, mask], img[:, mask][:, :1].expand(-1, int(mask.sum())), atol=1e-6)
        assert torch.allclose(img[:, ~mask], img[:, ~mask][:, :1].expand(-1, int((~mask).sum())), atol=1e-6)
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3
    assert 0.5 < float(changed.float().mean())  # p = 0.8 of a jitter, p = 0.2 of grayscale


def test_colour_view_is_reproducible_from_its_generator():
    x, _ = _two_colour_images()
    policy = resolve_policy("colour")
    assert torch.equal(policy(x, torch.Generator().manual_seed(3)), policy(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(policy(x, torch.Generator().manual_seed(3)), policy(x, torch.Generator().manual_seed(4)))


def test_a_misspelt_policy_name_fails_with_the_key_and_the_choices():
    check_policy("train.augment", "colour")
    with pytest.raises(ConfigError, match=r"train\.augment: unknown augmentation 'color'; did you mean 'colour'"):
        check_policy("train.augment", "color")


@pytest.mark.parametrize("overrides, key", [
    (["train.augment=crp"], r"train\.augment"),
    (["method=mocov2", "method.augment=mocov"], r"mocov2: augment"),
    (["method=uhml", "method.augment=crop_flp"], r"uhml: augment"),
    (["method=hack", "method.augmentation=flp"], r"hack: augmentation"),
])
def test_every_policy_key_is_checked_before_any_work(overrides, key):
    from harness.config import validate
    from harness.sweep import compose

    with pytest.raises(ConfigError, match=f"{key}: unknown augmentation"):
        validate(compose(overrides))


def test_a_policy_that_returns_another_dtype_or_shape_is_an_error_not_a_rescaled_view():
    from harness.engine import Viewer

    viewer = Viewer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (8, 8), torch.device("cpu"),
                    generator=torch.Generator().manual_seed(0))
    raw = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    viewer._policies["as_bytes"] = lambda x, g: (x * 255).to(torch.uint8)  # a plugin's policy in 0-255 bytes
    viewer._policies["cropped"] = lambda x, g: x[..., :4, :4]
    for name, got in (("as_bytes", "torch.uint8 (4, 3, 8, 8)"), ("cropped", "torch.float32 (4, 3, 4, 4)")):
        with pytest.raises(TypeError, match=rf"augmentation '{name}' returned {re.escape(got)}"):
            viewer(raw, name)
    torch.testing.assert_close(viewer(raw, "none"), (raw.float() / 255 - 0.5) / 0.25)
