"""Tiled −ELBO of photo folders under several models: how a model would code each photo,
in seconds per photo instead of the minutes coding takes.

For each photo (every image file of ``--data``, converted to grey with Pillow's
``convert("L")`` under ``--grey``) and each model: the one-sample tiled −ELBO
(`bbcodec.models.tiles.tiled_elbo_terms`, the figure `bbcodec bench` prints next to the
coded rate, which the codec meets within a fraction of a percent) in bits per sub-pixel,
and its KL part. Totals weight photos by their sub-pixels. Models are shipped names,
``.safetensors`` files or run folders (a run's ``checkpoint.pt`` if it has not finished).

    .venv/bin/python benchmarks/photo_elbo.py --data ../shared/data/kodak \\
        --model vlae-cifar10 --model vlae-photo --json benchmarks/results/photo-elbo-kodak.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bbcodec.models.data import image_files, read_image
from bbcodec.models.photos import to_kind
from bbcodec.models.tiles import tiled_elbo_terms


def _load(name: str):
    path = Path(name)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        from bbcodec.models.train import weights_from_checkpoint

        weights_from_checkpoint(path, path / "interim.safetensors")
        name = str(path / "interim.safetensors")
    from bbcodec.zoo import load_model

    return load_model(name).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--grey", action="store_true", help="convert each photo to grey first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    files = image_files(args.data)
    photos = []
    for f in files:
        image, kind = read_image(f)
        if kind == "grey":
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(to_kind(image, "grey" if args.grey else "rgb"))
    results = {"data": args.data, "grey": args.grey, "seed": args.seed, "models": {}}
    for name in args.model:
        model = _load(name)
        rows, nats, kl_nats, dims = [], 0.0, 0.0, 0
        started = time.perf_counter()
        for f, photo in zip(files, photos, strict=True):
            torch.manual_seed(args.seed)
            recon, kl = tiled_elbo_terms(model, photo)
            bpd = (recon + kl) / (photo.size * np.log(2))
            rows.append(
                {"photo": f.name, "neg_elbo_bpd": bpd, "kl_bpd": kl / (photo.size * np.log(2))}
            )
            nats, kl_nats, dims = nats + recon + kl, kl_nats + kl, dims + photo.size
        total = nats / (dims * np.log(2))
        results["models"][name] = {
            "neg_elbo_bpd": total, "kl_bpd": kl_nats / (dims * np.log(2)), "photos": rows,
            "seconds": time.perf_counter() - started,
        }  # fmt: skip
        print(f"{name}: tiled −ELBO {total:.4f} bits/sub-pixel over {len(photos)} photos")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
