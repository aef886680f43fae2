"""A very large photo through the command line: round trip, wall time and peak memory.

Builds an RGB photo of ``--size`` (default 6000×4000, width × height) from Kodak photos
mirrored side by side (each copy flipped so neighbours meet at a mirror edge), writes it
as a PNG, then runs

    bbcodec compress BIG.png -o BIG.bbc --workers W --max-pixels N
    bbcodec decompress BIG.bbc -o BACK.png --workers W --max-pixels N

and checks that BACK.png holds the same pixels. While each command runs, the resident
memory of its whole process tree (the command, its worker server and workers) is summed
every 0.1 s; the peak of that sum and of the largest single process are reported (RSS:
pages shared between the forked processes count once per process, so the sum is an upper
bound). Run it on an otherwise idle machine:

    python benchmarks/big_photo.py --data ../shared/data/kodak --workers 2 \\
        --json benchmarks/results/big-photo-6000x4000.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from bbcodec.models.data import image_files, read_image

#: The command line of the environment running this script.
BBCODEC = Path(sys.executable).with_name("bbcodec")


def mirrored_photo(photos: list[Path], width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: the RGB photos, in turn, tiled side by side and row by
    row, every other copy flipped left-right and every other row of copies upside down."""
    tiles = [read_image(path)[0] for path in photos]
    tiles = [t for t in tiles if t.ndim == 3 and t.shape[:2] == tiles[0].shape[:2]]
    tile_h, tile_w = tiles[0].shape[:2]
    out = np.empty((height, width, 3), dtype=np.uint8)
    k = 0
    for row, r0 in enumerate(range(0, height, tile_h)):
        for col, c0 in enumerate(range(0, width, tile_w)):
            tile = tiles[k % len(tiles)]
            k += 1
            tile = tile[:, ::-1] if col % 2 else tile
            tile = tile[::-1] if row % 2 else tile
            h, w = min(tile_h, height - r0), min(tile_w, width - c0)
            out[r0 : r0 + h, c0 : c0 + w] = tile[:h, :w]
    return out


def run_measured(argv: list[str]) -> dict:
    """Runs a bbcodec command; its wall seconds and peak resident memory (MB), summed over
    its process tree and of its largest process."""
    start = time.perf_counter()
    process = subprocess.Popen([str(BBCODEC), *argv, "-q"], stdout=subprocess.DEVNULL)
    root = psutil.Process(process.pid)
    peak_sum = peak_one = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        sizes = []
        for p in tree:
            try:
                sizes.append(p.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        peak_sum, peak_one = max(peak_sum, sum(sizes)), max(peak_one, max(sizes, default=0))
        time.sleep(0.1)
    if process.wait():
        raise SystemExit(f"bbcodec {argv[0]} failed (exit status {process.returncode})")
    return {
        "seconds": time.perf_counter() - start,
        "peak_mb_summed": peak_sum / 2**20,
        "peak_mb_largest_process": peak_one / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", help="model name (default: the default for the photo)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    photo = mirrored_photo(image_files(args.data), width, height)
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as folder:
        big, coded, back = (Path(folder) / name for name in ("big.png", "big.bbc", "back.png"))
        Image.fromarray(photo).save(big, compress_level=1)
        workers = ["--workers", str(args.workers), "--max-pixels", str(width * height)]
        encode = run_measured(["compress", str(big), "-o", str(coded), *workers, *model])
        file_bytes = coded.stat().st_size
        decode = run_measured(["decompress", str(coded), "-o", str(back), *workers])
        exact = bool(np.array_equal(np.asarray(Image.open(back)), photo))
    result = {
        "size": [width, height],
        "workers": args.workers,
        "model": args.model or "default",
        "file_bytes": file_bytes,
        "bits_per_subpixel": file_bytes * 8 / photo.size,
        "exact": exact,
        "encode": encode,
        "decode": decode,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
