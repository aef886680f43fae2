"""`bbcodec.models.latent` on tiny random models: slerp, samplers, attribute vectors, the
latent report, labels and grids."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

from bbcodec.errors import DataError, UsageError
from bbcodec.models import latent

pytestmark = pytest.mark.usefixtures("isolated")


def test_slerp_ends_at_the_two_latents_and_keeps_equal_norms():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, generator=g), torch.randn(6, generator=g)
    path = latent.slerp(a, b, torch.tensor([0.0, 1.0]))
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[1], b, atol=1e-6)
    b = b * a.norm() / b.norm()
    norms = latent.slerp(a, b, torch.linspace(0, 1, 9)).norm(dim=1)
    assert torch.allclose(norms, a.norm().expand(9), rtol=1e-5)
    line = a + torch.linspace(0, 1, 9)[:, None] * (b - a)
    assert line.norm(dim=1)[4] < a.norm() * 0.999  # the straight line cuts the corner
    same = latent.slerp(a, a, torch.linspace(0, 1, 3))  # parallel: no division by sin 0
    assert torch.allclose(same, a.expand(3, -1))


@pytest.mark.parametrize(
    "family,kind", [("vlae", "binary"), ("vlae", "rgb"), ("delta-vae", "grey")]
)
def test_samplers_repeat_under_a_seed(family, kind):
    model = random_model(tiny_config(family, kind))
    d = model.config.total_latent_dim

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        z = latent.sample_prior(model, 3, g)
        return z, latent.sample_pixels(model, z, g)

    (z1, x1), (z2, x2), (z3, _) = draw(1), draw(1), draw(2)
    assert z1.shape == (3, d) and x1.shape == (3, *model.config.image_shape)
    assert x1.dtype == torch.uint8 and torch.equal(z1, z2) and torch.equal(x1, x2)
    assert not torch.equal(z1, z3)
    if kind == "binary":
        assert int(x1.max()) <= 1


def test_shared_noise_decodes_differ_only_by_z():
    model = random_model(tiny_config("vlae", "binary"))
    z = torch.randn(1, 4)
    x = latent.sample_pixels_shared(model, z.expand(3, -1), seed=5)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    alone = latent.sample_pixels(model, z, torch.Generator().manual_seed(5))
    assert torch.equal(x[:1], alone)


def test_attribute_vector_is_the_difference_of_class_means():
    labels = np.array([3, 1, 3, 3, 1, 3, 3])
    split = latent.attribute_split(labels, source=3, target=1, per_class=2, n_edit=10)
    assert split.source.tolist() == [0, 2] and split.target.tolist() == [1, 4]
    assert split.edit.tolist() == [3, 5, 6]
    means = torch.arange(14.0).view(7, 2)
    vector = latent.attribute_vector(means[split.source], means[split.target])
    expected = means[[1, 4]].mean(0) - means[[0, 2]].mean(0)
    assert torch.equal(vector, expected)


@pytest.mark.parametrize(
    "source,target,per_class,message",
    [(3, 3, 2, "both class 3"), (3, 7, 2, "class 7 has no images"),
     (1, 3, 2, "lower --per-class")],
)  # fmt: skip
def test_attribute_split_refuses_what_it_cannot_do(source, target, per_class, message):
    with pytest.raises(UsageError, match=message):
        latent.attribute_split(np.array([3, 1, 3, 1]), source, target, per_class, 4)


@pytest.mark.parametrize("family", ["vlae", "delta-vae"])
def test_report_kl_per_dimension_sums_to_the_kl(family):
    model = random_model(tiny_config(family, "binary"))
    images = random_images(model.config, 20)
    r = latent.latent_report(model, images, seed=1, batch_size=7)
    assert len(r.kl_dims_nats) == r.latent_dim == model.config.total_latent_dim
    assert math.isclose(sum(r.kl_dims_nats), r.kl_nats, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(r.kl_nats + r.recon_nats, r.neg_elbo_nats, rel_tol=1e-12)
    assert math.isclose(r.kl_bpd, r.kl_nats / (64 * math.log(2)), rel_tol=1e-12)
    assert r.active_units == sum(r.active) == sum(v > 0.01 for v in r.mean_variance)
    assert r == latent.latent_report(model, images, seed=1, batch_size=7)


def test_images_of_another_size_are_refused():
    model = random_model(tiny_config("vlae", "binary"))
    with pytest.raises(DataError, match="shape"):
        latent.posterior_means(model, np.zeros((2, 16, 16), np.uint8))


def test_grid_has_the_stated_size():
    cells = np.zeros((2, 3, 4, 5, 3), np.uint8)
    out = latent.grid(cells, pad=2, zoom=3)
    assert out.shape == (3 * (2 * 6 + 2), 3 * (3 * 7 + 2), 3)
    assert out[0, 0, 0] == latent.BACKGROUND and out[6, 6, 0] == 0
    assert latent.grid_shape(16) == (4, 4) and latent.grid_shape(5) == (2, 3)


def test_evenly_spaced_picks_spread_over_the_split():
    assert latent.evenly_spaced(12, 3).tolist() == [0, 6, 11]
    assert latent.evenly_spaced(3, 5).tolist() == [0, 1, 2]


def _idx_labels(path, labels, magic=2049):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", magic, len(labels)) + bytes(labels))


def test_labels_from_idx_and_npz(tmp_path):
    _idx_labels(tmp_path / "l.gz", [1, 2, 3])
    assert latent.read_labels(tmp_path / "l.gz", "test", 3).tolist() == [1, 2, 3]
    np.savez(tmp_path / "y.npz", y_test=np.array([4, 5], np.uint8), y_train=np.zeros(9, np.uint8))
    assert latent.read_labels(tmp_path / "y.npz", "test", 2).tolist() == [4, 5]
    with pytest.raises(DataError, match="3 labels for 4 images"):
        latent.read_labels(tmp_path / "l.gz", "test", 4)
    _idx_labels(tmp_path / "i.gz", [0] * 4, magic=2051)
    with pytest.raises(DataError, match="image file"):
        latent.read_labels(tmp_path / "i.gz", "test", 4)
    with pytest.raises(DataError, match="no label array y_valid"):
        latent.read_labels(tmp_path / "y.npz", "valid", 2)
    np.savez(tmp_path / "o.npz", labels=np.array([object()] * 2))
    with pytest.raises(DataError, match="corrupt or unreadable"):  # never unpickled
        latent.read_labels(tmp_path / "o.npz", "test", 2)
    with pytest.raises(DataError, match="no such file|cannot read"):
        latent.read_labels(tmp_path / "missing.gz", "test", 2)
