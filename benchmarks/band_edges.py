"""What cutting photos into bands costs in rate: the tiled −ELBO per band against one band.

A band (`bbcodec.plan.image_bands`) is coded as an image of its own: its tiles, latents and
KL are those of the whole photo (bands cut between tile rows), but its pixel model sees
zeros above the band's first row. With the same latent sample z for both, the difference is
the pixel term alone: −log2 p(x | z) summed over the bands against the whole photo. (The
coder adds, per band, its own direct start and a chunk's framing: measure those by coding,
``--code N``.)

    python benchmarks/band_edges.py ../shared/data/kodak --model vlae-photo \
        --band-rows 128 256 512 [--grey] [--code 3] [--json out.json]

Kodak is a test set: measuring here is fine, choosing by it is not.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bbcodec.models import heads
from bbcodec.models.priors import gaussian_log_prob
from bbcodec.models.tiles import padded_tiles, tile_boxes
from bbcodec.plan import image_bands
from bbcodec.zoo import load_model

LN2 = math.log(2)


@torch.no_grad()
def terms_bits(model, image: np.ndarray, band_rows: list[int], seed: int = 0) -> dict:
    """{"kl": bits, 0: pixel bits whole, b: pixel bits in bands of b rows, ...} at one
    latent sample per tile (seeded), the same for every band height."""
    config = model.config
    tile_h, tile_w = config.image_hw
    height, width = image.shape[:2]
    boxes = tile_boxes(height, width, tile_h, tile_w)
    tiles = torch.from_numpy(padded_tiles(image, boxes, tile_h, tile_w))
    q = model.posterior(tiles)
    generator = torch.Generator().manual_seed(seed)
    z = q.mean + q.std * torch.randn(q.std.shape, generator=generator)
    kl = float((gaussian_log_prob(z, q.mean, q.std) - model.coding_prior.log_prob_dims(z)).sum())
    tile_features = model.to_features(z)
    features = torch.zeros(1, height, width, config.channels)
    for row, (r0, r1, c0, c1) in enumerate(boxes):
        features[0, r0:r1, c0:c1] = tile_features[row, : r1 - r0, : c1 - c0]
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    out = {"kl": kl / LN2}
    for rows in [0, *band_rows]:
        bits = 0.0
        for r0, r1 in image_bands(height, rows):
            params = model.decoder(x[:, r0:r1], features[:, r0:r1])
            log_p = heads.log_prob(config.kind, x[:, r0:r1], params, config.n_mixtures)
            bits -= float(log_p.sum()) / LN2
        out[rows] = bits
    return out


def coded_bits(model, model_name: str, image: np.ndarray, band_rows: int) -> tuple[int, float]:
    """(file bits, encode seconds) of ``bbcodec compress`` with this band height, in this
    process, one torch thread."""
    from bbcodec.api import compress_to
    from bbcodec.codec import CodingSettings

    out = io.BytesIO()
    start = time.perf_counter()
    report = compress_to(out, image, model_name, CodingSettings(band_rows=band_rows))
    return report.file_bits, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--model", default="vlae-photo")
    parser.add_argument("--band-rows", type=int, nargs="+", default=[256])
    parser.add_argument("--code", type=int, default=0, help="also code the first N photos")
    parser.add_argument("--grey", action="store_true", help='the photos as grey (PIL "L")')
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    files = sorted(Path(args.folder).glob("*.png"))
    rows = []
    for path in files:
        image = np.asarray(Image.open(path).convert("L" if args.grey else "RGB"))
        terms = terms_bits(model, image, args.band_rows)
        dims = image.size
        row = {"file": path.name, "shape": list(image.shape), "kl_bits": terms["kl"]}
        row["neg_elbo_bits"] = {str(b): terms["kl"] + terms[b] for b in [0, *args.band_rows]}
        rows.append(row)
        extra = "  ".join(
            f"{b}: {100 * (terms[b] - terms[0]) / (terms['kl'] + terms[0]):+.3f} %"
            for b in args.band_rows
        )
        print(f"{path.name} {image.shape[1]}x{image.shape[0]}  −ELBO "
              f"{(terms['kl'] + terms[0]) / dims:.4f} bpd  bands {extra}", flush=True)  # fmt: skip
    total = {b: sum(r["neg_elbo_bits"][str(b)] for r in rows) for b in [0, *args.band_rows]}
    dims = sum(math.prod(r["shape"]) for r in rows)
    print(f"all {len(rows)}: −ELBO {total[0] / dims:.4f} bpd; " + "; ".join(
        f"bands of {b}: {total[b] / dims:.4f} bpd ({100 * (total[b] / total[0] - 1):+.3f} %)"
        for b in args.band_rows))  # fmt: skip
    coded = []
    for path in files[: args.code]:
        image = np.asarray(Image.open(path).convert("L" if args.grey else "RGB"))
        for b in [0, *args.band_rows]:
            bits, seconds = coded_bits(model, args.model, image, b)
            coded.append({"file": path.name, "band_rows": b, "file_bits": bits, "seconds": seconds})
            print(f"coded {path.name} band_rows {b}: {bits / image.size:.4f} bpd "
                  f"({bits} bits, {seconds:.0f} s)", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "band_rows": args.band_rows,
                                               "photos": rows, "coded": coded}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
