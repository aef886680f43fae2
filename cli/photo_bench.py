"""``bbcodec bench`` on photos: images of other sizes than the model's, each its own file.

For every photo, in one run: encode it into its own ``.bbc`` file in memory (timed), decode
it (timed) and compare the pixels, the model's tiled −ELBO (`tiled_elbo_terms`, one
z-sample per tile), and PNG, WebP and JPEG-XL, one lossless file each. Totals are bits per
sub-pixel over all photos (sum of bits / sum of sub-pixels).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def bench_photos(
    args: argparse.Namespace, model, images: list[np.ndarray], labels: list[str]
) -> tuple[dict[str, Any], str | None]:
    """Code each (H, W[, 3]) image alone; returns (JSON-ready results, failure or None).

    With ``--workers`` N > 1, N processes (one torch thread each) take a photo at a time;
    each photo's seconds are measured in the process that coded it.
    """
    import torch
    from tqdm import tqdm

    from bbcodec.baselines import BASELINES
    from bbcodec.image_codec import CodingSettings
    from bbcodec.parallel import code_chunks
    from bbcodec.zoo import list_models

    registered = args.model in {info.name for info in list_models()}
    workers = min(args.workers or os.cpu_count() or 1, len(images))
    threads = 1 if workers > 1 else torch.get_num_threads()
    settings = CodingSettings(seed=args.seed, device=args.device, torch_threads=threads)
    tasks = ((label, image, args.model if registered else None)
             for label, image in zip(labels, images, strict=True))  # fmt: skip
    rows, failures = [], []
    results = code_chunks(model, settings, workers, _bench_photo, tasks)
    for row, failure in tqdm(results, desc="photos", total=len(images), disable=args.quiet):
        rows.append(row)
        if failure:
            failures.append(failure)
    total_dims = sum(r["dims"] for r in rows)

    def total(bpd_of) -> float:
        return sum(bpd_of(r) * r["dims"] for r in rows) / total_dims

    achieved = total(lambda r: r["achieved_bpd"])
    neg_elbo = total(lambda r: r["neg_elbo_bpd"])
    decode_times = [r["decode_seconds"] for r in rows if r["decode_seconds"] is not None]
    result = {
        "model": str(args.model),
        "data": str(args.data),
        "mode": "photos, one file each",
        "n_images": len(rows),
        "total_dims": total_dims,
        "neg_elbo_bpd": neg_elbo,
        "kl_bpd": total(lambda r: r["kl_bpd"]),
        "achieved_bpd": achieved,
        "information_bpd": total(lambda r: r["information_bpd"]),
        "gap_pct": 100.0 * (achieved / neg_elbo - 1.0),
        "baselines": {name: total(lambda r, name=name: r["baselines"][name]) for name in BASELINES},
        "encode_seconds_per_image": {
            "mean": float(np.mean([r["encode_seconds"] for r in rows])),
            "max": float(np.max([r["encode_seconds"] for r in rows])),
        },
        "decode_seconds_per_image": {
            "mean": float(np.mean(decode_times)) if decode_times else None,
            "max": float(np.max(decode_times)) if decode_times else None,
        },
        "roundtrip_ok": not failures,
        "threads": threads,
        "workers": workers,
        "device": args.device,
        "seed": args.seed,
        "coding_settings": settings.to_dict(),
        "images": rows,
    }
    return result, ("; ".join(failures) if failures else None)


def _bench_photo(codec, label: str, image: np.ndarray, model_name: str | None, progress):
    """One photo: its own file encoded and decoded (timed, pixels compared), its tiled −ELBO
    and the classic codecs. Returns (row, failure or None). Runs in a worker or in-process
    (`bbcodec.parallel.code_chunks`); ``model_name`` is recorded in the file if given."""
    import torch
    from bbcodec.models.tiles import tiled_elbo_terms

    from bbcodec.api import compress_to, decompress_from
    from bbcodec.baselines import BASELINES, run_baselines
    from bbcodec.container import ContainerError

    model, failure = codec.adapter.model, None
    buffer = io.BytesIO()
    t0 = time.perf_counter()
    report = compress_to(buffer, image, model_name or model, codec.settings)
    encode_s = time.perf_counter() - t0
    buffer.seek(0)
    t0 = time.perf_counter()
    try:
        (decoded,) = list(decompress_from(buffer, model))
        decode_s = time.perf_counter() - t0
        if not np.array_equal(decoded[0], image):
            failure = f"{label} decodes to other pixels"
    except ContainerError as exc:
        decode_s = None
        failure = f"{label} does not decode: {exc}"
    torch.manual_seed(codec.settings.seed)  # the same z-samples however photos are spread
    with torch.inference_mode():
        recon_nats, kl_nats = tiled_elbo_terms(model, image)
    baselines = run_baselines(image[None], BASELINES, progress=False)
    dims = image.size
    row = {
        "image": label, "shape": list(image.shape), "dims": dims,
        "file_bytes": report.file_bits // 8, "achieved_bpd": report.achieved_bpd,
        "information_bpd": report.information_bits / dims,
        "initial_bits": report.initial_bits,
        "neg_elbo_bpd": (recon_nats + kl_nats) / (dims * math.log(2)),
        "kl_bpd": kl_nats / (dims * math.log(2)),
        "encode_seconds": encode_s, "decode_seconds": decode_s,
        "baselines": {name: r.bpd for name, r in baselines.items()},
    }  # fmt: skip
    return row, failure


def print_photo_table(r: dict[str, Any]) -> None:
    """Per-photo rates and times, then the totals, as a table on stdout."""
    names = list(r["baselines"])
    print(f"model      {r['model']}")
    print(f"data       {r['data']}: {r['n_images']} photos, each its own file")
    head = f"{'image':>12} {'size':>9} {'bbcodec':>8} {'−ELBO':>7} " + " ".join(
        f"{n:>7}" for n in names
    )
    print(head + f" {'enc s':>6} {'dec s':>6}")
    for row in r["images"]:
        size = "×".join(map(str, row["shape"][1::-1]))
        dec = "-" if row["decode_seconds"] is None else f"{row['decode_seconds']:.1f}"
        print(f"{Path(row['image']).name[-12:]:>12} {size:>9} {row['achieved_bpd']:8.3f} "
              f"{row['neg_elbo_bpd']:7.3f} " + " ".join(f"{row['baselines'][n]:7.3f}" for n in names)
              + f" {row['encode_seconds']:6.1f} {dec:>6}")  # fmt: skip
    print(f"{'all':>12} {'':>9} {r['achieved_bpd']:8.3f} {r['neg_elbo_bpd']:7.3f} "
          + " ".join(f"{r['baselines'][n]:7.3f}" for n in names))  # fmt: skip
    enc, dec = r["encode_seconds_per_image"], r["decode_seconds_per_image"]
    print(f"bits/dim over all photos; achieved is {r['gap_pct']:+.2f} % from the −ELBO; "
          f"seconds per photo: encode mean {enc['mean']:.1f} (max {enc['max']:.1f}), decode "
          f"mean {dec['mean'] or float('nan'):.1f} (max {dec['max'] or float('nan'):.1f})")  # fmt: skip


def write_photo_plot(r: dict[str, Any], path: Path) -> None:
    """Bits/dim per photo: bbcodec next to its −ELBO and the classic codecs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [Path(row["image"]).stem for row in r["images"]]
    series = {"bbcodec (achieved)": [row["achieved_bpd"] for row in r["images"]],
              "−ELBO": [row["neg_elbo_bpd"] for row in r["images"]]}  # fmt: skip
    for codec in r["baselines"]:
        series[codec] = [row["baselines"][codec] for row in r["images"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(names)) + k * width, values, width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, fontsize=7)
    ax.set_ylabel("bits per sub-pixel")
    ax.set_title(f"{r['model']} on {r['data']}: each photo its own file")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
