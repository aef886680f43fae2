"""The portable (exact-arithmetic) coding path against the float path, per shipped model.

For each model, on the first N test images, in one run:

- **rate**: bits/dim of the file each path writes, the information content the coder
  spent (the integer model's own bits-back −ELBO sample on these images, for the exact
  path) and the float model's −ELBO (`bbcodec.models.evaluate`, one z-sample per image);
- **speed**: encode and decode images/s of each path, one process, one torch thread,
  timed on ``--rounds`` parts of the images, each coded by both paths in turn, the two
  taking turns to go first (ABBA), so that both meet the same load on a busy machine; the
  information content is summed over those parts (each part a chunk of its own), the file
  size is one file of all N images;
- **portability**: the exact file encoded in a subprocess under
  ``ATEN_CPU_CAPABILITY=default`` (PyTorch's plain, non-vectorised kernels) with one
  thread, decoded in a subprocess under the native kernels with two threads; every image
  must come back.

    python benchmarks/exact_path.py -n 1000 --json benchmarks/results/exact-path.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = {
    "vlae-bmnist": "binarized_mnist.npz",
    "delta-vae-bmnist": "binarized_mnist.npz",
    "vlae-mnist": "mnist",
    "vlae-cifar10": "cifar10.npz",
    "delta-vae-cifar10": "cifar10.npz",
}

_CODE = """
import sys, numpy as np, torch, bbcodec
from bbcodec.codec import CodingSettings
torch.set_num_threads(int(sys.argv[4]))
if sys.argv[1] == "encode":
    images = np.load(sys.argv[2])
    data = bbcodec.compress(images, sys.argv[5], CodingSettings(torch_threads=int(sys.argv[4])))
    open(sys.argv[3], "wb").write(data)
else:
    np.save(sys.argv[3], bbcodec.decompress(open(sys.argv[2], "rb").read()))
"""


def _subprocess(args: list[str], capability: str | None) -> None:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    subprocess.run([sys.executable, "-c", _CODE, *args], check=True, env=env)


def portable(name: str, images: np.ndarray) -> bool:
    """Encode under the plain kernels (1 thread), decode under the native ones (2)."""
    with tempfile.TemporaryDirectory() as folder:
        source, coded, back = (Path(folder) / f for f in ("x.npy", "x.bbc", "y.npy"))
        np.save(source, images)
        _subprocess(["encode", str(source), str(coded), "1", name], "default")
        _subprocess(["decode", str(coded), str(back), "2", name], None)
        return bool(np.array_equal(np.load(back), images))


def measure(name: str, n: int, rounds: int) -> dict:
    import torch

    import bbcodec
    from bbcodec.codec import CodingSettings, ImageCodec
    from bbcodec.models.data import load_images
    from bbcodec.models.evaluate import evaluate
    from bbcodec.zoo import load_model

    torch.set_num_threads(1)
    model = load_model(name)
    images = load_images(DATA / MODELS[name], "test")[:n]
    dims = images[0].size * len(images)
    row = {"model": name, "n_images": len(images)}
    row["float_neg_elbo_bpd"] = evaluate(model, images, seed=0, progress=False).neg_elbo_bpd
    paths = ("float", "exact")
    timed = {path: {"encode_s": 0.0, "decode_s": 0.0, "information_bits": 0.0} for path in paths}
    for i, part in enumerate(np.array_split(images, rounds)):
        for arithmetic in paths if i % 2 == 0 else paths[::-1]:  # ABBA: the same load
            settings = CodingSettings(arithmetic=arithmetic, chunk_images=len(part))
            start = time.perf_counter()
            chunk, rate = ImageCodec(model, settings).encode_chunk(part)
            timed[arithmetic]["encode_s"] += time.perf_counter() - start
            start = time.perf_counter()
            decoded = ImageCodec(model, settings).decode_chunk(chunk)
            timed[arithmetic]["decode_s"] += time.perf_counter() - start
            timed[arithmetic]["information_bits"] += rate.information_bits
            assert np.array_equal(decoded, part), f"{name} {arithmetic}: pixels differ"
    for arithmetic in paths:
        settings = CodingSettings(arithmetic=arithmetic, chunk_images=len(images))
        data = bbcodec.compress(images, name, settings)
        row[arithmetic] = {
            "file_bpd": 8 * len(data) / dims,
            "information_bpd": timed[arithmetic]["information_bits"] / dims,
            "encode_images_per_s": len(images) / timed[arithmetic]["encode_s"],
            "decode_images_per_s": len(images) / timed[arithmetic]["decode_s"],
        }
    row["portable_default_to_native"] = portable(name, images)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="test images per model")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="parts the timed images are coded in, the two "
        "paths taking turns to go first, so that both meet the same load (default 4)",
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="shipped models")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        row = measure(name, args.n, args.rounds)
        rows.append(row)
        f, e = row["float"], row["exact"]
        print(
            f"{name:18} −ELBO {row['float_neg_elbo_bpd']:.4f}  file float {f['file_bpd']:.4f} "
            f"exact {e['file_bpd']:.4f} ({100 * (e['file_bpd'] / f['file_bpd'] - 1):+.2f} %)  "
            f"enc {f['encode_images_per_s']:.0f}→{e['encode_images_per_s']:.0f}/s  "
            f"dec {f['decode_images_per_s']:.0f}→{e['decode_images_per_s']:.0f}/s  "
            f"portable {row['portable_default_to_native']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
