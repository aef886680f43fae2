"""The smallest images code exactly with the shipped default model (tiled: one latent for
the one partial tile, pixels in a wavefront with steps that hold no pixel)."""

import numpy as np
import pytest

import bbcodec


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (32, 1), (1, 32), (3, 2), (5, 3)])
def test_shipped_default_codes_tiny_rgb_images_exactly(hw):
    image = np.random.default_rng(sum(hw)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    data = bbcodec.compress(image, model="auto")
    (decoded,) = bbcodec.decompress(data)
    np.testing.assert_array_equal(decoded, image)
