"""Photos through the command line, one file each: wall time with every worker on one photo,
and files written under one CPU capability read back under another.

For each photo of ``--data`` (every image file, converted to grey with Pillow's
``convert("L")`` under ``--grey``), in turn:

- ``bbcodec compress PHOTO -o PHOTO.bbc --workers W --threads 1``, in a subprocess whose
  PyTorch uses ``--encode-capability`` (``default``: the plain, non-vectorised kernels a
  CPU without AVX2 gets; ``native``: this CPU's own);
- ``bbcodec decompress PHOTO.bbc -o BACK.png --workers W' --threads T'`` in a subprocess
  with the native kernels;
- the pixels read back are compared with the photo's.

Each command's wall time is the photo's time with all its workers on it (the bands of one
photo are coded side by side, `bbcodec.plan.image_bands`), start-up of Python, torch and
the model included. Run it on an otherwise idle machine for the speed figures, e.g.:

    python benchmarks/photo_files.py --data ../shared/data/kodak --workers 2 \\
        --json benchmarks/results/photo-files-kodak.json
    python benchmarks/photo_files.py --data ../shared/data/kodak --grey --workers 2 \\
        --json benchmarks/results/photo-files-kodak-grey.json
    python benchmarks/photo_files.py --data ../shared/data/kodak --encode-capability default \\
        --decode-workers 1 --decode-threads 2 --json benchmarks/results/photo-portable-kodak.json
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
from PIL import Image

from bbcodec.models.data import image_files, read_image

#: The command line of the environment running this script.
BBCODEC = Path(sys.executable).with_name("bbcodec")


def _run(argv: list[str], capability: str) -> float:
    """Runs a bbcodec command under the given PyTorch CPU capability; its wall seconds."""
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    start = time.perf_counter()
    subprocess.run([str(BBCODEC), *argv, "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def code_photo(photo: Path, folder: Path, args: argparse.Namespace) -> dict:
    """Compresses and decompresses one photo file; its row of the results."""
    pixels, _ = read_image(photo)
    if args.grey:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
        photo = folder / f"{photo.stem}-grey.png"
        Image.fromarray(pixels).save(photo)
    coded, back = folder / f"{photo.stem}.bbc", folder / f"{photo.stem}-back.png"
    model = ["--model", args.model] if args.model else []
    latents = ["--tile-latents", args.tile_latents] if args.tile_latents else []
    encode_s = _run(
        ["compress", str(photo), "-o", str(coded), *model, *latents, "--workers",
         str(args.workers), "--threads", "1"], args.encode_capability,
    )  # fmt: skip
    decode_s = _run(
        ["decompress", str(coded), "-o", str(back), "--workers", str(args.decode_workers),
         "--threads", str(args.decode_threads)], "native",
    )  # fmt: skip
    decoded, _ = read_image(back)
    file_bytes = coded.stat().st_size
    for f in (coded, back):
        f.unlink()
    return {
        "image": photo.name, "shape": list(pixels.shape), "file_bytes": file_bytes,
        "bits_per_subpixel": 8 * file_bytes / pixels.size,
        "encode_seconds": encode_s, "decode_seconds": decode_s,
        "exact": bool(np.array_equal(decoded, pixels)),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--grey", action="store_true", help="convert each photo to grey first")
    parser.add_argument("--model", help="model name (default: the default for the photo)")
    parser.add_argument("--tile-latents", help="compress --tile-latents (default: the model's)")
    parser.add_argument("--workers", type=int, default=2, help="compress --workers")
    parser.add_argument("--encode-capability", default="native", help="native or default")
    parser.add_argument("--decode-workers", type=int, help="(default: --workers)")
    parser.add_argument("--decode-threads", type=int, default=1)
    parser.add_argument("-n", type=int, help="the first N photos only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.decode_workers is None:
        args.decode_workers = args.workers
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for photo in image_files(args.data)[: args.n]:
            row = code_photo(photo, Path(tmp), args)
            rows.append(row)
            print(
                f"{row['image']:16} {row['bits_per_subpixel']:.4f} bits/sub-pixel  "
                f"encode {row['encode_seconds']:.1f} s  decode {row['decode_seconds']:.1f} s  "
                f"exact {row['exact']}",
                flush=True,
            )
    subpixels = sum(int(np.prod(r["shape"])) for r in rows)
    summary = {
        "data": str(args.data), "grey": args.grey, "model": args.model,
        "tile_latents": args.tile_latents,
        "workers": args.workers, "encode_capability": args.encode_capability,
        "decode_workers": args.decode_workers, "decode_threads": args.decode_threads,
        "n_photos": len(rows), "all_exact": all(r["exact"] for r in rows),
        "bits_per_subpixel": 8 * sum(r["file_bytes"] for r in rows) / subpixels,
        "encode_seconds_mean": float(np.mean([r["encode_seconds"] for r in rows])),
        "encode_seconds_max": max(r["encode_seconds"] for r in rows),
        "decode_seconds_mean": float(np.mean([r["decode_seconds"] for r in rows])),
        "decode_seconds_max": max(r["decode_seconds"] for r in rows),
        "photos": rows,
    }  # fmt: skip
    print(
        f"{len(rows)} photos: {summary['bits_per_subpixel']:.4f} bits/sub-pixel, encode "
        f"{summary['encode_seconds_mean']:.1f} s mean ({summary['encode_seconds_max']:.1f} max), "
        f"decode {summary['decode_seconds_mean']:.1f} s mean "
        f"({summary['decode_seconds_max']:.1f} max), all exact: {summary['all_exact']}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["all_exact"] else 3


if __name__ == "__main__":
    sys.exit(main())
