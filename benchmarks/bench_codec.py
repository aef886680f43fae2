"""The codec end to end: ``bbcodec bench``, then where encode and decode spend their time.

1. Runs ``bbcodec bench`` (achieved bits/dim vs −ELBO vs PNG / WebP / JPEG-XL, encode and
   decode images/s, JSON and plot) on the first N images.
2. Profiles one encode (`bbcodec.api.compress_to`) and one decode
   (`bbcodec.api.decompress_from`) of the same images with cProfile and sorts the self time
   of every function into a few buckets:

   ====================  ===============================================================
   bucket                what falls in it
   ====================  ===============================================================
   network: torch ops    torch's C++ ops (``torch.*`` built-ins, ``Tensor`` methods)
   network: Python       nn.Module dispatch and the model code (``torch/``, ``models/``)
   tables: numpy         coding parameters: logistic-mixture tables, float64 hand-over,
                         numpy calls (``bbcodec/coding/{logistic,handover,leaves}.py``)
   constriction          the ANS coder's push / pop (``constriction`` built-ins)
   rate accounting       information content of what was coded (``quantization.py``,
                         ``rate.py``, the per-image meter)
   other Python          everything else: combinators, adapter glue, container, hashing
   ====================  ===============================================================

   cProfile charges a cost to every Python call, so the Python buckets are overstated
   next to the un-profiled timings of step 1; the shares still show what dominates.

Without ``--model`` a tiny randomly initialised VLAE for the data's kind and shape is made
(the rate identity holds for any weights, so the codec path is exercised honestly; its
rates are of course not those of a trained model).

    .venv/bin/python benchmarks/bench_codec.py --data ../shared/data/binarized_mnist.npz -n 200
    .venv/bin/python benchmarks/bench_codec.py --model vlae-bmnist \\
        --data ../shared/data/binarized_mnist.npz -n 1000 --json bench-vlae-bmnist.json
    .venv/bin/python benchmarks/bench_codec.py --model vlae-cifar10 \\
        --data ../shared/data/kodak -n 1 --no-bench   # one photo: seconds, and where they go
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bbcodec.api import compress_to, decompress_from
from bbcodec.cli.main import main as bbcodec_main
from bbcodec.codec import CodingSettings
from bbcodec.models.data import dataset_kind, load_image_runs
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights
from bbcodec.zoo import load_model

BUCKETS = (
    "network: torch ops",
    "network: Python",
    "tables: numpy",
    "constriction",
    "rate accounting",
    "other Python",
)
_TABLE_FILES = ("bbcodec/coding/logistic.py", "bbcodec/coding/handover.py",
                "bbcodec/coding/leaves.py")  # fmt: skip
_RATE_FILES = ("bbcodec/coding/quantization.py", "bbcodec/coding/rate.py")
#: Functions (in the coding layer or the image codec) that only measure information content.
_RATE_FUNCTIONS = ("record_push", "record_pop", "_split", "_symbol_bits",
                   "fixed_point_probabilities", "_rows_fixed_point")  # fmt: skip


def bucket(filename: str, name: str) -> str:
    """The bucket of one profiled function (see the module docstring)."""
    path = filename.replace("\\", "/")
    if filename == "~":  # a built-in: its name says whose it is
        # constriction's classes are pyo3 types, shown as e.g. 'builtins.AnsCoder'
        if "constriction" in name or "'builtins." in name:
            return "constriction"
        if "torch" in name:
            return "network: torch ops"
        if "numpy" in name:
            return "tables: numpy"
        return "other Python"
    if "/torch/" in path or "/models/" in path:
        return "network: Python"
    ours = "/bbcodec/" in path  # the model code was sorted above
    if path.endswith(_RATE_FILES) or (ours and name in _RATE_FUNCTIONS):
        return "rate accounting"
    if path.endswith(_TABLE_FILES) or "/numpy/" in path:
        return "tables: numpy"
    return "other Python"


def profile(fn) -> tuple[float, dict[str, float], list[tuple[float, str]]]:
    """Runs ``fn()`` under cProfile: (wall seconds, self seconds per bucket, top functions)."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    fn()
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    buckets: dict[str, float] = defaultdict(float)
    top = []
    for (filename, line, name), (_, calls, self_s, _, _) in stats.items():
        buckets[bucket(filename, name)] += self_s
        where = name if filename == "~" else f"{Path(filename).name}:{line} {name}"
        top.append((self_s, f"{where} ({calls:,} calls)"))
    top.sort(reverse=True)
    return wall, dict(buckets), top


def tiny_model_for(images: np.ndarray, folder: Path) -> Path:
    """A tiny random VLAE for images of this kind and shape (32×32 tiles for photos of
    several shapes, given as a list), saved in ``folder``."""
    kind = dataset_kind(np.stack(images[:1]))
    tile = tuple(images.shape[1:3]) if isinstance(images, np.ndarray) else (32, 32)
    config = ModelConfig("vlae", kind, tile, latent_dim=8, channels=8,
                         n_blocks=1, made_hidden=16, kernel_size=3)  # fmt: skip
    torch.manual_seed(0)
    path = folder / f"tiny-{kind}.safetensors"
    save_weights(LatentVariableModel(config), path)
    return path


def print_breakdown(n: int, encode, decode, top_k: int) -> None:
    (enc_wall, enc, enc_top), (dec_wall, dec, dec_top) = encode, decode
    enc_total, dec_total = sum(enc.values()), sum(dec.values())
    print(f"\nwhere the time goes (cProfile, self time, {n} images)")
    print(f"  {'':<20} {'encode s':>9} {'share':>6}   {'decode s':>9} {'share':>6}")
    for name in BUCKETS:
        e, d = enc.get(name, 0.0), dec.get(name, 0.0)
        print(f"  {name:<20} {e:9.3f} {100 * e / enc_total:5.1f}%   "
              f"{d:9.3f} {100 * d / dec_total:5.1f}%")  # fmt: skip
    print(f"  {'total (profiled)':<20} {enc_total:9.3f} {'':>6}   {dec_total:9.3f}")
    print(f"  {'images/s (profiled)':<20} {n / enc_wall:9.1f} {'':>6}   {n / dec_wall:9.1f}")
    for label, top in (("encode", enc_top), ("decode", dec_top)):
        print(f"\n  top {top_k} functions by self time, {label}:")
        for seconds, where in top[:top_k]:
            print(f"    {seconds:7.3f} s  {where}")


def main(argv: list[str] | None = None) -> int:
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", help="NAME or weights PATH (default: a tiny random VLAE)")
    p.add_argument("--data", default=str(default_data), help=f"dataset (default {default_data})")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("-n", type=int, default=200, help="images (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--max-batch", type=int, help="codec's largest batch (default: its own)")
    p.add_argument("--json", help="bench JSON (default: a temporary file)")
    p.add_argument("--plot", help="bench plot (default: beside the JSON)")
    p.add_argument("--top", type=int, default=8, help="functions listed per side (default 8)")
    p.add_argument("--no-bench", action="store_true", help="profile only, skip `bbcodec bench`")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    runs = load_image_runs(args.data, args.split)  # photos of several sizes: a list
    images = runs[0][: args.n] if len(runs) == 1 else [im for run in runs for im in run][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        model_arg = args.model or str(tiny_model_for(images, Path(tmp)))
        if not args.no_bench:
            json_path = args.json or str(Path(tmp) / "bench.json")
            bench_argv = ["bench", "--model", model_arg, "--data", args.data, "--split",
                          args.split, "-n", str(len(images)), "--threads", str(args.threads),
                          "--json", json_path, "-q"]  # fmt: skip
            if args.plot or not args.json:
                bench_argv += ["--plot", args.plot or str(Path(tmp) / "bench.png")]
            if args.max_batch:
                bench_argv += ["--max-batch", str(args.max_batch)]
            code = bbcodec_main(bench_argv)
            if code != 0:
                return code

        model = load_model(model_arg)
        overrides = {"max_batch": args.max_batch} if args.max_batch else {}
        settings = CodingSettings(torch_threads=args.threads, **overrides)
        buffer = io.BytesIO()
        encode = profile(lambda: compress_to(buffer, images, model, settings))
        decoded = []

        def decode() -> None:
            buffer.seek(0)
            decoded.extend(decompress_from(buffer, model))

        decode_profile = profile(decode)
        if not all(map(np.array_equal, (im for part in decoded for im in part), images)):
            print("error: the profiled roundtrip did not give back the images", file=sys.stderr)
            return 3
        print_breakdown(len(images), encode, decode_profile, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
