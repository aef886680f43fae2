"""The decimal tables that ship precomputed (`bbcodec.coding.fixed_point.SHIPPED_TABLES`).

Every table the exact path asks for — binary, grey and RGB VLAEs, a δ-VAE, a photo coded
tiled — must be in the shipped file, and every shipped table must equal its decimal
definition, integer for integer. ``python tests/coding/test_tables.py --write`` rewrites
the file from the definitions and prints the sha256 for `SHIPPED_TABLES_SHA256`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import random_images, random_model, tiny_config

from bbcodec import api
from bbcodec.coding import exact_gaussian
from bbcodec.coding import fixed_point as fp


def request_all_tables() -> None:
    """Code a few images with every model family and pixel kind on the exact path, so that
    each decimal table coding uses is asked for (`fp.REQUESTED`)."""
    torch.set_num_threads(1)
    exact_gaussian.normal_cdf_table()
    for family, kind in (("vlae", "binary"), ("vlae", "grey"), ("vlae", "rgb"),
                         ("delta-vae", "rgb")):  # fmt: skip
        config = tiny_config(family, kind)
        model = random_model(config)
        images = random_images(config, 2)
        assert np.array_equal(
            api.decompress(api.compress(images, model=model), model=model), images
        )
    photo = random_model(tiny_config("vlae", "rgb"))
    image = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    assert np.array_equal(api.decompress(api.compress(image, model=photo), model=photo)[0], image)


@pytest.fixture(scope="module")
def requested():
    request_all_tables()
    return dict(fp.REQUESTED)


def test_the_shipped_file_is_the_one_the_code_names():
    assert fp.SHIPPED_TABLES.is_file()
    assert fp.shipped_tables(), "tables.npz does not match SHIPPED_TABLES_SHA256"


def test_every_table_coding_asks_for_is_shipped(requested):
    missing = sorted(set(requested) - set(fp.shipped_tables()))
    assert not missing, f"computed at run time, not shipped: {missing}"


def test_every_shipped_table_equals_its_decimal_definition(requested):
    shipped = fp.shipped_tables()
    assert set(shipped) <= set(requested), "a shipped table no coding path asks for"
    for key, values in shipped.items():
        assert np.array_equal(values, fp.decimal_values(*requested[key])), key


def test_a_file_that_does_not_match_is_not_used(tmp_path, monkeypatch):
    damaged = tmp_path / "tables.npz"
    data = bytearray(fp.SHIPPED_TABLES.read_bytes())
    data[-100] ^= 1
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(fp, "SHIPPED_TABLES", damaged)
    fp.shipped_tables.cache_clear()
    try:
        assert fp.shipped_tables() == {}
        table = fp.decimal_table(fp._tanh, -8, 8, 6, fp.FRAC_BITS)  # computed instead
        assert np.array_equal(table.values, fp.decimal_values(fp._tanh, -8, 8, 6, fp.FRAC_BITS))
    finally:
        fp.shipped_tables.cache_clear()


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    fp.SHIPPED_TABLES_SHA256 = "none: compute everything"
    fp.shipped_tables.cache_clear()
    request_all_tables()
    print(fp.write_tables())
