"""Tiles: how a model trained on (th, tw) images covers an image of any size.

Tile (a, b) covers rows ``a·th .. min((a+1)·th, H)`` and columns ``b·tw .. min((b+1)·tw, W)``,
row-major; tiles at the bottom and right edges may be smaller. A tile's latent is inferred
from its pixels padded to (th, tw) by repeating the edge, and its feature map, cropped to the
tile, conditions the tile's pixels; the pixel network itself runs over the whole image.
Used by the tiled codec (`bbcodec.codec.tiled`) and `tiled_elbo_terms`.
"""

from __future__ import annotations

import numpy as np
import torch

from bbcodec.models import heads
from bbcodec.models.priors import gaussian_log_prob

Box = tuple[int, int, int, int]


def tile_boxes(height: int, width: int, tile_h: int, tile_w: int) -> list[Box]:
    """(row0, row1, col0, col1) of every tile, row-major."""
    return [
        (r, min(r + tile_h, height), c, min(c + tile_w, width))
        for r in range(0, height, tile_h)
        for c in range(0, width, tile_w)
    ]


def padded_tiles(image: np.ndarray, boxes: list[Box], tile_h: int, tile_w: int) -> np.ndarray:
    """(k, th, tw[, 3]) pixels of the boxes of an (H, W[, 3]) image, edge-padded."""
    out = []
    for r0, r1, c0, c1 in boxes:
        pad = ((0, tile_h - (r1 - r0)), (0, tile_w - (c1 - c0))) + ((0, 0),) * (image.ndim - 2)
        out.append(np.pad(image[r0:r1, c0:c1], pad, mode="edge"))
    return np.stack(out)


@torch.no_grad()
def tiled_elbo_terms(model, image: np.ndarray, batch_tiles: int = 256) -> tuple[float, float]:
    """One-sample (reconstruction, KL) in nats of one (H, W[, 3]) uint8 image, tiled.

    The −ELBO the tiled codec's rate is measured against: Σ over tiles of
    log q(z_T|x_T) − log p(z_T) at z_T ~ q, plus −log p(x | z) over the whole image.
    """
    config = model.config
    tile_h, tile_w = config.image_hw
    height, width = image.shape[:2]
    boxes = tile_boxes(height, width, tile_h, tile_w)
    tiles = padded_tiles(image, boxes, tile_h, tile_w)
    device = next(model.parameters()).device
    features = torch.zeros(1, height, width, config.channels, device=device)
    kl = 0.0
    for start in range(0, len(boxes), batch_tiles):
        x = torch.from_numpy(tiles[start : start + batch_tiles]).to(device)
        q = model.posterior(x)
        z = q.mean + q.std * torch.randn_like(q.std)
        log_q = gaussian_log_prob(z, q.mean, q.std)
        kl += float((log_q - model.coding_prior.log_prob_dims(z)).sum())
        tile_features = model.to_features(z)
        for row, (r0, r1, c0, c1) in enumerate(boxes[start : start + batch_tiles]):
            features[0, r0:r1, c0:c1] = tile_features[row, : r1 - r0, : c1 - c0]
    x = torch.from_numpy(np.array(image))[None].to(device)  # a copy: the input may be read-only
    params = model.decoder(x, features)
    recon = -float(heads.log_prob(config.kind, x, params, config.n_mixtures).sum())
    return recon, kl
