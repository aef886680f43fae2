"""Does a photo model's decoder use its latents? Bits back against the prior's mean latent.

A model's tiled photos code their latents with bits back (rate: the −ELBO, the pixels'
−log p(x | z) at z ~ q plus every tile's KL) or not at all, every tile's latent being the
prior's mean walk z̄* (rate: −log p(x | z̄*); `bbcodec.codec.tiled`). The second wins by
the KL when the decoder ignores z (posterior collapse), and loses when it needs z. This
measures both, one sample per tile (`bbcodec.models.tiles.tiled_elbo_terms`), on the
validation photos of the training set (`bbcodec.models.photos`, never Kodak), and says
which the model's registry entry should record (``tile_latents``, `bbcodec.zoo`;
``--record`` writes it there).
Also printed: −log p(x | posterior means), the best the latents could do without bits
back's KL. Totals weight photos by their sub-pixels.

    .venv/bin/python benchmarks/tile_latents.py --model vlae-photo-2 --record \\
        --json benchmarks/results/tile-latents-vlae-photo-2.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from bbcodec.codec import CodingSettings
from bbcodec.codec.adapter import ModelAdapter
from bbcodec.models.photos import load_photos
from bbcodec.models.tiles import padded_tiles, tile_boxes, tiled_elbo_terms
from bbcodec.zoo import load_model, record_tile_latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a shipped name or a weights file")
    parser.add_argument("--data", default="../shared/data/photos")
    parser.add_argument("--side", type=int, default=256, help="central crop of each photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--record", action="store_true", help="write the choice in the registry")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model).eval()
    settings = CodingSettings()
    adapter = ModelAdapter(model, settings.grid, direct_stds=settings.direct_latent_stds)
    z_star = torch.from_numpy(settings.grid.to_values(adapter.prior_mean_symbols())).float()
    photos = load_photos(args.data, model.config.kind, "valid")
    rows, totals = [], {"recon": 0.0, "kl": 0.0, "prior_mean": 0.0, "posterior_mean": 0.0}
    dims = 0
    for index, photo in enumerate(photos):
        h, w = photo.shape[:2]
        top, left = max(0, (h - args.side) // 2), max(0, (w - args.side) // 2)
        crop = photo[top : top + args.side, left : left + args.side]
        with torch.inference_mode():
            torch.manual_seed(args.seed)
            recon, kl = tiled_elbo_terms(model, crop)
            prior_mean, _ = tiled_elbo_terms(model, crop, latents=z_star)
            means = _posterior_means(model, crop)
            posterior_mean, _ = tiled_elbo_terms(model, crop, latents=means)
        nats = {
            "recon": recon,
            "kl": kl,
            "prior_mean": prior_mean,
            "posterior_mean": posterior_mean,
        }
        bpd = {k: v / (crop.size * math.log(2)) for k, v in nats.items()}
        rows.append(
            {"photo": index, "shape": list(crop.shape), **{f"{k}_bpd": v for k, v in bpd.items()}}
        )
        totals = {k: totals[k] + nats[k] for k in totals}
        dims += crop.size
    t = {k: v / (dims * math.log(2)) for k, v in totals.items()}
    neg_elbo = t["recon"] + t["kl"]
    choice = "prior-mean" if t["prior_mean"] < neg_elbo else "bits-back"
    summary = {
        "model": args.model, "data": args.data, "split": "valid", "photos": len(rows),
        "side": args.side, "seed": args.seed, "neg_elbo_bpd": neg_elbo, "kl_bpd": t["kl"],
        "prior_mean_bpd": t["prior_mean"], "posterior_mean_recon_bpd": t["posterior_mean"],
        "prior_mean_vs_neg_elbo_pct": 100 * (t["prior_mean"] / neg_elbo - 1),
        "choice": choice, "rows": rows,
    }  # fmt: skip
    print(
        f"{args.model} on {len(rows)} validation photos ({args.side}x{args.side} centres): "
        f"−ELBO {neg_elbo:.4f} bits/sub-pixel (KL {t['kl']:.4f}); −log p(x | prior mean) "
        f"{t['prior_mean']:.4f} ({summary['prior_mean_vs_neg_elbo_pct']:+.2f} %); "
        f"−log p(x | posterior means) {t['posterior_mean']:.4f} → tile_latents: {choice}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.record:
        record_tile_latents(args.model, choice)


def _posterior_means(model, crop) -> torch.Tensor:
    """(T, D) posterior means of the crop's tiles (`tile_boxes` order)."""
    tile_h, tile_w = model.config.image_hw
    boxes = tile_boxes(crop.shape[0], crop.shape[1], tile_h, tile_w)
    return model.posterior(torch.from_numpy(padded_tiles(crop, boxes, tile_h, tile_w))).mean


if __name__ == "__main__":
    main()
