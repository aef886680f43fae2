"""Looking at the latents: decodes that sample pixels, paths between latents, attribute
vectors, latent utilisation, and image grids (what ``bbcodec latent`` draws).

All latents z are float32 torch tensors (N, D) in latent units (D = the model's
``total_latent_dim``); images are uint8 arrays or tensors (N, H, W) or (N, H, W, 3), 0/1
for binary models. Decodes *sample* every pixel from p(x|z), one at a time in raster
order through the coding path (`bbcodec.models.pixelcnn.PixelStepper`), with an explicit
`torch.Generator`: the same seed gives the same pixels. Only images of the model's own
size are handled here (no tiling).

- `posterior_means` — E_q[z|x] for images;
- `sample_prior` — z from the model's coding prior (the δ-VAE's auxiliary prior);
- `sample_pixels` — x ~ p(x|z) for a batch of z; `sample_pixels_shared` — the same, with
  every z given the same random numbers, so decodes differ only by z;
- `slerp` — the spherical path between two latents;
- `attribute_split`, `attribute_vector` — mean latent of one class minus another's;
- `latent_report` — KL per latent dimension, active units, rate/distortion split;
- `read_labels` — class labels from an IDX label file or an ``.npz`` array;
- `evenly_spaced` — which n images of a split to show (a split may be sorted by class);
- `display`, `grid`, `grid_shape` — images to 0..255, cells to one grid image.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from bbcodec.errors import DataError, UsageError
from bbcodec.models import heads
from bbcodec.models.evaluate import check_images, evaluate
from bbcodec.models.vae import LatentVariableModel, nats_to_bpd

__all__ = [
    "AttributeSplit",
    "LatentReport",
    "attribute_split",
    "attribute_vector",
    "display",
    "evenly_spaced",
    "grid",
    "grid_shape",
    "latent_report",
    "posterior_means",
    "read_labels",
    "sample_pixels",
    "sample_pixels_shared",
    "sample_prior",
    "slerp",
]


def evenly_spaced(count: int, n: int) -> np.ndarray:
    """Indices of n images spread evenly over a split of ``count`` (all of them when n ≥
    count), first and last included: (min(n, count),) int64, increasing."""
    if n >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, n).round().astype(np.int64)


# ----- latents and decodes ----------------------------------------------------------------


@torch.no_grad()
def posterior_means(
    model: LatentVariableModel, images: np.ndarray, batch_size: int = 250
) -> torch.Tensor:
    """E_q[z|x] of uint8 images (N, H, W[, 3]) → (N, D) float32, on the model's device.

    Raises:
        DataError: images the model cannot code (kind, size).
    """
    check_images(model.config, images)
    device = next(model.parameters()).device
    means = [
        model.posterior(torch.from_numpy(images[i : i + batch_size]).to(device)).mean
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(means)


@torch.no_grad()
def sample_prior(model: LatentVariableModel, n: int, generator: torch.Generator) -> torch.Tensor:
    """n latents z ~ p(z) from the coding prior, dimension by dimension: (n, D) float32."""
    device = next(model.parameters()).device
    z = torch.zeros(n, model.config.total_latent_dim, device=device)
    for i in range(z.shape[1]):
        mean, std = model.prior_step(z, i)
        z[:, i] = mean + std * torch.randn(n, generator=generator).to(device)
    return z


@torch.no_grad()
def sample_pixels(
    model: LatentVariableModel, z: torch.Tensor, generator: torch.Generator, progress: bool = False
) -> torch.Tensor:
    """x ~ p(x|z): every pixel drawn from its conditional, in raster order.

    Args:
        z: (N, D) latents on the model's device.
        generator: a CPU generator; it draws the same numbers for the same batch size.
        progress: a tqdm bar over the pixels (stderr).
    Returns:
        (N, H, W) or (N, H, W, 3) uint8 CPU tensor (0/1 for binary models).
    """
    c = model.config
    height, width = c.image_hw
    out = torch.zeros((len(z), *c.image_shape), dtype=torch.uint8)
    stepper = model.pixel_stepper(z)
    for t in tqdm(range(height * width), desc="decode", unit="px", disable=not progress):
        pixels = heads.sample(c.kind, stepper.params(t).cpu(), c.n_mixtures, generator)
        stepper.write(t, pixels.to(z.device))
        out[:, t // width, t % width] = pixels
    return out


def sample_pixels_shared(
    model: LatentVariableModel, z: torch.Tensor, seed: int, progress: bool = False
) -> torch.Tensor:
    """x ~ p(x|z) for each z alone, the sampler restarted from ``seed`` each time: every
    image gets the same random numbers, so the images differ only by their z.

    Args:
        z: (N, D) latents on the model's device.
    Returns:
        (N, H, W[, 3]) uint8 CPU tensor.
    """
    rows = tqdm(z, desc="decode", unit="img", disable=not progress)
    return torch.cat(
        [sample_pixels(model, zi[None], torch.Generator().manual_seed(seed)) for zi in rows]
    )


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from a to b (Shoemake 1985), as in MusicVAE's latent paths.

    slerp(t) = sin((1−t)ω)/sin ω · a + sin(tω)/sin ω · b, ω the angle between a and b; for
    (nearly) parallel a and b it falls back to the straight line. Equal-norm endpoints keep
    their norm along the whole path; t = 0 gives a, t = 1 gives b.

    Args:
        a, b: (D,) latents.
        t: (T,) positions along the path, usually in [0, 1].
    Returns:
        (T, D), same dtype as a.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp(min=1e-30)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega) < 1e-6:
        path = (1 - t64) * a64 + t64 * b64
    else:
        path = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.sin(
            omega
        )
    return path.to(a.dtype)


# ----- attribute vectors -------------------------------------------------------------------


class AttributeSplit(NamedTuple):
    """Image indices (int64 arrays) for an attribute vector from class A to class B."""

    source: np.ndarray  # class A images averaged (the first ``per_class``)
    target: np.ndarray  # class B images averaged (the first ``per_class``)
    edit: np.ndarray  # class A images the vector is added to (after ``source``)


def attribute_split(
    labels: np.ndarray, source: int, target: int, per_class: int, n_edit: int
) -> AttributeSplit:
    """Pick the images of an attribute vector: up to ``per_class`` of each class for the
    means, and up to ``n_edit`` further images of the source class to edit.

    Raises:
        UsageError: equal classes, a class with no images, or no source image left to edit.
    """
    if source == target:
        raise UsageError(f"--from and --to are both class {source}; pick two classes")
    of = {c: np.flatnonzero(labels == c) for c in (source, target)}
    present = ", ".join(str(c) for c in np.unique(labels))
    for c, found in of.items():
        if len(found) == 0:
            raise UsageError(f"class {c} has no images in the labels (classes present: {present})")
    edit = of[source][per_class : per_class + n_edit]
    if len(edit) == 0:
        raise UsageError(
            f"class {source} has {len(of[source])} images, all used for the vector "
            f"(--per-class {per_class}); lower --per-class to leave images to edit"
        )
    return AttributeSplit(of[source][:per_class], of[target][:per_class], edit)


def attribute_vector(source_means: torch.Tensor, target_means: torch.Tensor) -> torch.Tensor:
    """Mean posterior mean of class B minus that of class A: (N_A, D), (N_B, D) → (D,)."""
    return target_means.mean(0) - source_means.mean(0)


# ----- latent utilisation ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatentReport:
    """How a model uses its latent on a set of images. Nats are per image, means over the
    images with one z-sample each under the coding prior (as `bbcodec eval`).

    Attributes:
        n_images, latent_dim, dims_per_image: N, D and the sub-pixels per image.
        kl_nats, recon_nats, neg_elbo_nats: the rate, the distortion and their sum.
        kl_bpd, recon_bpd, neg_elbo_bpd: the same in bits per sub-pixel.
        kl_dims_nats: (D,) the KL's share of each latent dimension, in coding order: log
            q(z_i|x) − log p(z_i|z_<i) at the sampled z (exact for no single image, unbiased
            on average, may be negative); they sum to ``kl_nats``.
        mean_variance: (D,) Var over the images of E_q[z_i|x].
        active: (D,) whether ``mean_variance`` > ``active_threshold`` (Burda et al. 2016);
        active_units: how many are.
        seed: seeds the z-samples.
    """

    n_images: int
    latent_dim: int
    dims_per_image: int
    kl_nats: float
    recon_nats: float
    neg_elbo_nats: float
    kl_bpd: float
    recon_bpd: float
    neg_elbo_bpd: float
    kl_dims_nats: list[float]
    mean_variance: list[float]
    active: list[bool]
    active_units: int
    active_threshold: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def latent_report(
    model: LatentVariableModel,
    images: np.ndarray,
    seed: int = 0,
    batch_size: int = 250,
    progress: bool = False,
) -> LatentReport:
    """Measure KL per latent dimension, active units and the rate/distortion split.

    Args:
        model: the model, on its device.
        images: (N, H, W[, 3]) uint8.
        seed: seeds the z-samples (torch's RNG state is restored afterwards).
        progress: a tqdm bar over batches (stderr).
    Raises:
        DataError: images the model cannot code (kind, size).
    """
    device = next(model.parameters()).device
    r = evaluate(
        model, images, batch_size=batch_size, seed=seed, device=str(device), progress=progress
    )
    kl_dims = r.kl_dims_nats
    active = [v > r.active_threshold for v in r.posterior_mean_variance]
    n, d, dims = r.n_images, r.latent_dim, r.dims_per_image
    kl, recon = float(sum(kl_dims)), r.recon_nats
    return LatentReport(
        n_images=n,
        latent_dim=d,
        dims_per_image=dims,
        kl_nats=kl,
        recon_nats=recon,
        neg_elbo_nats=kl + recon,
        kl_bpd=nats_to_bpd(kl, dims),
        recon_bpd=nats_to_bpd(recon, dims),
        neg_elbo_bpd=nats_to_bpd(kl + recon, dims),
        kl_dims_nats=list(kl_dims),
        mean_variance=list(r.posterior_mean_variance),
        active=active,
        active_units=r.active_units,
        active_threshold=r.active_threshold,
        seed=seed,
    )


# ----- labels --------------------------------------------------------------------------------

_IDX_LABELS = 2049
_IDX_IMAGES = 2051


def read_labels(path: str | Path, split: str, n: int) -> np.ndarray:
    """Class labels for the n images of a split, read without pickle.

    Args:
        path: an IDX label file (magic 2049, gzip or raw, e.g. MNIST's
            ``t10k-labels-idx1-ubyte.gz``), or an ``.npz`` holding ``y_<split>`` (as
            ``cifar10.npz``) or ``labels``: a 1-D integer array.
        split: picks ``y_<split>`` in an ``.npz``.
        n: how many labels the images need; any other count is refused before reading.
    Returns:
        (n,) int64.
    Raises:
        DataError: a missing, unreadable or malformed file, or a count other than n.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            labels = _npz_labels(p, split, n)
        elif head.startswith(b"\x1f\x8b") or head[:3] == b"\0\0\x08":
            labels = _idx_labels(p, n)
        else:
            raise DataError(f"{p}: not an IDX label file or an .npz")
    except OSError as exc:
        raise DataError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except (EOFError, zipfile.BadZipFile, gzip.BadGzipFile, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p}: corrupt or unreadable labels ({exc})") from exc
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{p}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != n:
        raise DataError(f"{p}: {len(labels)} labels for {n} images")
    return labels.astype(np.int64)


def _idx_labels(p: Path, n: int) -> np.ndarray:
    with open(p, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw) if compressed else raw as f:
            head = f.read(8)
            if len(head) < 8:
                raise DataError(f"{p}: truncated IDX header")
            magic, count = struct.unpack(">II", head)
            if magic == _IDX_IMAGES:
                raise DataError(f"{p}: an IDX image file (magic 2051), not labels (magic 2049)")
            if magic != _IDX_LABELS:
                raise DataError(f"{p}: IDX magic {magic}, expected {_IDX_LABELS} (labels)")
            if count != n:
                raise DataError(f"{p}: {count} labels for {n} images")
            data = f.read(n + 1)
    if len(data) != n:
        raise DataError(f"{p}: the header says {n} labels, the file holds {len(data)}")
    return np.frombuffer(data, np.uint8)


def _npz_labels(p: Path, split: str, n: int) -> np.ndarray:
    with zipfile.ZipFile(p) as zf:
        members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
    key = next((k for k in (f"y_{split}", "labels") if k in members), None)
    if key is None:
        found = ", ".join(members) or "none"
        raise DataError(f"{p}: no label array y_{split} or labels; found: {found}")
    if members[key].file_size > 1024 + 8 * n:  # more than n int64 labels and a header
        raise DataError(f"{p}[{key!r}]: {members[key].file_size:,} bytes is too big for {n} labels")
    with np.load(p, allow_pickle=False) as arrays:
        return arrays[key]


# ----- grids --------------------------------------------------------------------------------

#: Grey between the cells of a grid (0..255).
BACKGROUND = 128


def display(images: np.ndarray | torch.Tensor, kind: str) -> np.ndarray:
    """Images of a model's kind → uint8 0..255 for viewing (binary 0/1 → 0/255)."""
    out = np.asarray(images, dtype=np.uint8)
    return out * np.uint8(255) if kind == "binary" else out


def grid(cells: np.ndarray, pad: int = 2, zoom: int = 1) -> np.ndarray:
    """Lay cells out as one image, ``pad`` background pixels around and between them,
    every pixel repeated ``zoom`` × ``zoom`` times.

    Args:
        cells: (R, C, h, w) or (R, C, h, w, 3) uint8, 0..255.
    Returns:
        (zoom·(R·(h + pad) + pad), zoom·(C·(w + pad) + pad)[, 3]) uint8.
    """
    rows, cols, h, w = cells.shape[:4]
    out = np.full(
        (rows * (h + pad) + pad, cols * (w + pad) + pad, *cells.shape[4:]), BACKGROUND, np.uint8
    )
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            out[top : top + h, left : left + w] = cells[r, c]
    return out.repeat(zoom, 0).repeat(zoom, 1)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for n images: cols = ⌈√n⌉."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols
