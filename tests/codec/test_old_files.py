"""Files written by earlier releases still decode, to the same pixels."""

import numpy as np
from paths import REPO

import bbcodec
from bbcodec.codec import CodingSettings
from bbcodec.container import ContainerReader
from bbcodec.models.data import load_images

FIXTURES = REPO / "tests" / "fixtures"


def test_a_format_2_file_from_before_the_posterior_window_decodes():
    """`readme-digits-v2.bbc`: the README's 32 example digits, compressed by
    `bbcodec compress examples/binarized-mnist` at commit 5bb5350 (format version 2, the
    posterior coded on the whole ±32 grid)."""
    path = FIXTURES / "readme-digits-v2.bbc"
    with open(path, "rb") as f:
        header = ContainerReader(f).header
    assert header.version == 2 and "posterior_window_stds" not in header.settings
    settings = CodingSettings.from_header(header)
    assert settings.posterior_window_stds is None and settings.initial_bits == "seed"
    decoded = bbcodec.decompress(path.read_bytes())
    np.testing.assert_array_equal(decoded, load_images(REPO / "examples" / "binarized-mnist"))
