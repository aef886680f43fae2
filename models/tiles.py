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


#: Pixels of the strip of whole tile rows the pixel network runs over at once in
#: `tiled_elbo_terms` (the photo models take about 3 KB a pixel there), so its memory is
#: bounded whatever the size of the photo.
ELBO_STRIP_PIXELS = 1 << 16


@torch.no_grad()
def tiled_elbo_terms(
    model, image: np.ndarray, batch_tiles: int = 256, strip_pixels: int = ELBO_STRIP_PIXELS,
    latents: torch.Tensor | None = None,
) -> tuple[float, float]:  # fmt: skip
    """One-sample (reconstruction, KL) in nats of one (H, W[, 3]) uint8 image, tiled.

    The −ELBO the tiled codec's rate is measured against: Σ over tiles of
    log q(z_T|x_T) − log p(z_T) at z_T ~ q, plus −log p(x | z) over the whole image.
    With ``latents`` given ((T, D) for the T tiles of `tile_boxes`, or (1, D) for all, in
    latent units) the tiles have those latents, known to both sides, and the KL is 0: with
    the prior's mean z̄* this is the codelength −log p(x | z̄*) of
    ``tile_latents="prior-mean"`` coding (`bbcodec.codec.tiled`).
    The latents are sampled for all tiles first (in batches of ``batch_tiles``); the pixel
    network then runs over strips of whole tile rows of about ``strip_pixels`` pixels,
    each with the rows above it that its causal neighbourhood reaches, so it computes
    what one pass over the image would (to float rounding) in bounded memory.
    """
    config = model.config
    tile_h, tile_w = config.image_hw
    height, width = image.shape[:2]
    boxes = tile_boxes(height, width, tile_h, tile_w)
    device = next(model.parameters()).device
    kl = 0.0
    if latents is None:
        sampled = []
        for start in range(0, len(boxes), batch_tiles):
            tiles = padded_tiles(image, boxes[start : start + batch_tiles], tile_h, tile_w)
            q = model.posterior(torch.from_numpy(tiles).to(device))
            z = q.mean + q.std * torch.randn_like(q.std)
            log_q = gaussian_log_prob(z, q.mean, q.std)
            kl += float((log_q - model.coding_prior.log_prob_dims(z)).sum())
            sampled.append(z)
        z = torch.cat(sampled)
    else:
        z = latents.to(device).expand(len(boxes), -1)
    x = torch.from_numpy(np.array(image))[None].to(device)  # a copy: the input may be read-only
    decoder = model.decoder
    if decoder.row is not None:  # the full causal past: one pass over the image
        strip_rows, reach = height, 0
    else:
        strip_rows = tile_h * max(1, strip_pixels // (tile_h * width))
        reach = decoder.local.rows_above
    per_tile_row = -(-width // tile_w)  # boxes are row-major
    recon = 0.0
    for r0 in range(0, height, strip_rows):
        r1, top = min(r0 + strip_rows, height), max(0, r0 - reach)
        features = torch.zeros(1, r1 - top, width, config.channels, device=device)
        first, last = r0 // tile_h * per_tile_row, -(-r1 // tile_h) * per_tile_row
        for start in range(first, last, batch_tiles):
            stop = min(start + batch_tiles, last)
            tile_features = model.to_features(z[start:stop])
            for feature, (b0, b1, c0, c1) in zip(tile_features, boxes[start:stop]):
                features[0, b0 - top : b1 - top, c0:c1] = feature[: b1 - b0, : c1 - c0]
        params = decoder(x[:, top:r1], features)[:, r0 - top :]
        recon -= float(heads.log_prob(config.kind, x[:, r0:r1], params, config.n_mixtures).sum())
    return recon, kl
