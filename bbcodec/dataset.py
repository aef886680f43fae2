"""Dataset mode: a dataset coded as a folder of ``.bbc`` shards and a manifest, in this
process, in a pool of worker processes, or on a Dask cluster.

::

    DATASET                                   OUT_DIR/
    ───────                                   ────────
    plan_dataset  list the images, cut them   manifest.json       model, settings, and per
                  into shards, fingerprint                        shard: file, images, names,
                  the model, read OUT_DIR's                       bytes, sha256
                  manifest (what is done)     shard-000000.bbc    images 0 … N−1
    run_dataset   one task per shard still    shard-000001.bbc    images N … 2N−1
                  to code (`code_shard`),     …
                  records as they complete

Example (the API the CLI's dataset mode runs):
    >>> plan = plan_dataset("digits/", "digits-shards/", shard_images=100)  # doctest: +SKIP
    >>> report = run_dataset(plan, scheduler="local", workers=2)            # doctest: +SKIP
    >>> [len(a) for a in decode_dataset(read_dataset("digits-shards/"))]    # doctest: +SKIP
    [100, 100, 37]

**Sources.** A folder holding PNG files (at any depth) is a *tree*: its ``*.png`` files,
named by their path relative to the folder, sorted by path components; hidden files and
folders (``.name``) are skipped, and so are other files (`Source.skipped` lists them). One
PNG file is a tree of one image. Anything else is an *array*: one file or folder that
`bbcodec.models.data.load_images` reads (``.npy``, an ``.npz`` with train/valid/test or
x_train/… arrays, MNIST IDX, CIFAR-10 batches), one split of it. Shard ``k`` holds images
``k·N … (k+1)·N − 1`` (``N = shard_images``) in that order. The default model is the
shipped one for the kind and size of the first image (a tree) or of the array.

**A shard is one task, and an ordinary ``.bbc`` file** (``bbcodec decompress`` decodes one
alone). `code_shard` reads its own images from the (shared) storage, codes them with
`bbcodec.api.compress_to` in the task's process with one torch thread on the CPU, writes
``.shard-NNNNNN.bbc.<random>.part`` beside the shard, fsyncs it, checks that its header
names the planned weights, renames it to ``shard-NNNNNN.bbc`` and returns a `ShardRecord`
(size, sha256, dimensions). The plan fixes every setting (chunk size, batch size, seed,
one thread, CPU), so **a shard's bytes depend only on its images, the model and the
settings**: never on where, when, in which order or next to what it was coded. A job
(`ShardJob`) carries paths and names, never pixels; the client never touches pixels or
shard bytes except to verify what a task wrote.

**Runners** (`run_dataset`). Without a scheduler, the shards are coded in this process
(``workers=1``) or in `bbcodec.codec.workers`' pool of spawned worker processes, in
order, at most two per worker in flight; the pool's codec is not used, the task loads its
model by name as a cluster worker does, so both run exactly the same function. On Dask
(`dask_client`: a ``LocalCluster`` of worker processes with one thread each, started for
the run and closed after it, or a running scheduler at ``tcp://HOST:PORT``; or a caller's
client), each shard is one future (``client.map`` over the jobs, results taken with
``as_completed``); workers report the images each batch finished as worker events
(``log_event``), which the client adds to its progress, counting a retried shard's
images once. A local cluster's workers never see Ctrl-C (the client stops them), and
Dask's own log lines are off while a run uses a cluster: errors come as one line.

**Manifest** (``manifest.json``, JSON, written by the client only): ``format``
(``"bbcodec-dataset"``), ``version`` (1), ``complete``, ``model`` (registered name, or
``"custom"``: decompress then needs the weights), ``weights_sha256`` (the full
`bbcodec.api.weights_fingerprint`), ``settings`` (every `CodingSettings` field),
``shard_images``, ``source`` (kind, folder or file name, split), ``images``,
``shard_count``, and ``shards``: one record per finished shard, in image order — ``file``,
``first``, ``count``, ``names`` (a tree's relative file names; empty for an array),
``n_dims``, ``size_bytes``, ``sha256``. It is written atomically (temporary file, fsync,
rename) when the run starts, after a shard completes (at most every
`MANIFEST_INTERVAL_SECONDS`) and when the run ends, however it ends; ``complete`` is
true once every planned shard is recorded.

**Resume and faults.** A shard file appears only by rename, complete and synced; a task
that fails removes its ``.part``; a task whose process died leaves one, which the client
removes when the run starts and when it ends (after a local cluster or the pool is
stopped; a run holds a lock on the folder where the file system has locks). Running the
same command again re-plans and keeps a recorded shard whose file still has the
recorded size and sha256; any other shard (unrecorded, damaged, missing, or planned
differently because the tree's names changed) is coded again, and once all are recorded
shard files the manifest does not list are removed. A run that recorded no shard leaves
nothing (its folder, if it made it, is removed). A folder coded with another model,
other settings, another shard size or source is refused (``force``: coded afresh). The
record of a shard that finished less than `MANIFEST_INTERVAL_SECONDS` before the client
was killed is lost and that shard coded again. On a cluster, a task whose worker dies is
run again elsewhere (Dask's ``distributed.scheduler.allowed-failures``, 3 by default);
past that, or when the scheduler is lost, the run stops with one error line, keeping
what is recorded (a cancelled task still running on a remote worker may yet publish its
shard: the next run codes it again). Resume trusts that an input's contents did not
change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from bbcodec.errors import (
    ContainerError,
    DataError,
    DecodeError,
    SizeLimitError,
    UsageError,
    WeightsError,
)
from bbcodec.plan import (
    DEFAULT_MAX_PIXELS,
    MAX_DATASET_PIXELS_FACTOR,
    default_model_name,
    default_workers,
    plan_chunks,
)

if TYPE_CHECKING:
    from bbcodec.codec import CodingSettings

__all__ = [
    "DEFAULT_SHARD_IMAGES",
    "MANIFEST_NAME",
    "DatasetFiles",
    "DatasetPlan",
    "DatasetReport",
    "Manifest",
    "ShardJob",
    "ShardRecord",
    "Source",
    "check_scheduler",
    "code_shard",
    "dask_client",
    "decode_dataset",
    "open_source",
    "plan_dataset",
    "read_dataset",
    "run_dataset",
]

#: The manifest's file name in a dataset folder.
MANIFEST_NAME = "manifest.json"
#: The manifest's ``format`` value and the version this module writes and reads.
MANIFEST_FORMAT, MANIFEST_VERSION = "bbcodec-dataset", 1
#: Images per shard unless the caller says otherwise.
DEFAULT_SHARD_IMAGES = 1000
#: Least seconds between two manifest writes while shards complete (the last is always
#: written): bounds the cost of rewriting a long manifest on a fast run.
MANIFEST_INTERVAL_SECONDS = 1.0

_SHARD_FILE = re.compile(r"^shard-\d{6,}\.bbc$")
_TEMPORARY = re.compile(r"^\.(manifest\.json|shard-\d{6,}\.bbc)\.[0-9a-f]{16}\.part$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: ``progress(images, shards)``: images and shards finished since the last call.
Progress = Callable[[int, int], None] | None


# ----- sources -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's images are (see the module docstring).

    Attributes:
        kind: ``"tree"`` (PNG files under a folder) or ``"array"`` (one array file or
            dataset folder).
        root: absolute path of the tree's folder, or of the array's file or folder.
        split: the array's split (`bbcodec.models.data.SPLITS`); ``None`` for a tree.
        names: a tree's images, paths relative to ``root`` (POSIX, in shard order); empty
            for an array.
        n_images: images in all.
        first_kind: ``"binary"``, ``"grey"`` or ``"rgb"``: the first image's (a tree) or
            the array's kind.
        first_hw: (H, W) in pixels of the first image (of every image of an array).
        skipped: a tree's files that are not PNGs (relative paths; not coded).
    """

    kind: str
    root: str
    split: str | None
    names: tuple[str, ...]
    n_images: int
    first_kind: str
    first_hw: tuple[int, int]
    skipped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return Path(self.root).name


def open_source(
    path: str | os.PathLike, split: str = "test", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Source:
    """List a dataset's images without reading them (a tree's first image and an array
    are read: the kind decides the default model).

    Raises:
        FileNotFoundError: no such file or folder. DataError: a tree with no PNG files
        and no array either, or an unreadable first image. SizeLimitError: an image (or
        an array) over ``max_pixels`` (`bbcodec.models.data.load_images`' limits).
    """
    from bbcodec.models.data import dataset_kind, read_png

    p = Path(path).resolve()
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(path))
    if p.is_file() and p.suffix.lower() == ".png":
        p, names, skipped = p.parent, [p.name], []
    elif p.is_dir():
        names, skipped = _tree_files(p)
    else:
        names = []
    unsafe = [name for name in names if not _safe_name(name)]
    if unsafe:
        raise DataError(f"{p / unsafe[0]}: a name a dataset cannot record (hidden, or a backslash)")
    if not names:
        array = _array(str(p), split, max_pixels)
        return Source("array", str(p), split, (), len(array), dataset_kind(array),
                      array.shape[1:3])  # fmt: skip
    first, _ = read_png(p / names[0], max_pixels)
    return Source("tree", str(p), None, tuple(names), len(names), dataset_kind(first[None]),
                  first.shape[:2], tuple(skipped))  # fmt: skip


def _tree_files(root: Path) -> tuple[list[str], list[str]]:
    """(PNG files, other files) under ``root``: relative POSIX paths sorted by their
    components, hidden entries skipped."""
    pngs, others = [], []

    def fail(exc: OSError):
        raise exc

    for folder, dirs, files in os.walk(root, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                relative = Path(folder, name).relative_to(root)
                (pngs if name.lower().endswith(".png") else others).append(relative)
    pngs.sort(key=lambda p: p.parts)
    return [p.as_posix() for p in pngs], sorted(p.as_posix() for p in others)


def _array(root: str, split: str | None, max_pixels: int | None):
    """An array source's images, read once per process and kept (read-only) while the
    file's size and time stamp stay the same."""
    stat = os.stat(root)
    return _read_array(root, split, max_pixels, (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=1)
def _read_array(root: str, split: str | None, max_pixels: int | None, stamp: tuple):
    from bbcodec.models.data import load_images

    array = load_images(root, split or "test", max_pixels)
    array.flags.writeable = False  # shared by the shards of this process
    return array


# ----- one shard ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """What `code_shard` needs to code one shard: paths and names, no pixels.

    Attributes:
        index: the shard's number (0, 1, …).
        file: its file name in the dataset folder (``shard-NNNNNN.bbc``).
        folder: absolute path of the dataset folder.
        source_kind, source_root, split: the `Source` the images come from.
        first, count: its images are ``first … first + count − 1`` of the source.
        names: a tree's file names of those images (relative to ``source_root``).
        model: what the task loads: a registered name, or an absolute weights path.
        model_id: what the shard's header must name (the registered name, or "custom").
        weights_sha256: the weights' fingerprint (hex), checked against the header's.
        settings: every `bbcodec.codec.CodingSettings` field.
        max_pixels: the largest image read, in pixels (None: no limit).
    """

    index: int
    file: str
    folder: str
    source_kind: str
    source_root: str
    split: str | None
    first: int
    count: int
    names: tuple[str, ...]
    model: str
    model_id: str
    weights_sha256: str
    settings: dict
    max_pixels: int | None


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """A coded shard as the manifest records it.

    Attributes:
        file: the shard's file name.
        first, count: its images' range in the dataset.
        names: a tree's file names of those images (empty for an array).
        n_dims: sub-pixels coded (H × W × channels, summed over the images).
        size_bytes: the file's size.
        sha256: the file's sha256, hex.
    """

    file: str
    first: int
    count: int
    names: tuple[str, ...]
    n_dims: int
    size_bytes: int
    sha256: str

    def matches(self, job: ShardJob) -> bool:
        """Whether this record is of the shard ``job`` plans (same file and images)."""
        planned = (job.file, job.first, job.count, job.names)
        return (self.file, self.first, self.count, self.names) == planned


def code_shard(job: ShardJob, progress: Callable[[int], None] | None = None) -> ShardRecord:
    """Code one shard: read its images, code them, publish the file; the task of every
    runner (see the module docstring).

    Args:
        job: the shard.
        progress: called with the number of images finished, as batches finish.

    Raises:
        DataError, SizeLimitError: an image that cannot be read or is too large.
        ImageKindError: images the model cannot code. WeightsError: this process's
        weights for ``job.model`` are not the planned ones.
    """
    from bbcodec.api import compress_to
    from bbcodec.codec import CodingSettings
    from bbcodec.container import WEIGHTS_DIGEST_BYTES, ContainerReader

    images = _shard_images(job)
    with _atomic_write(Path(job.folder) / job.file) as f:
        report = compress_to(
            f, images, job.model, CodingSettings(**job.settings), progress, workers=1
        )
        f.flush()
        f.seek(0)
        data = f.read()
        header = ContainerReader(io.BytesIO(data), max_pixels=None).header
        expected = bytes.fromhex(job.weights_sha256)[:WEIGHTS_DIGEST_BYTES]
        if (header.model_id, header.weights_digest) != (job.model_id, expected):
            raise WeightsError(
                f"{job.model}: the weights on {socket.gethostname()} are not those the "
                f"dataset is coded with (sha256 {job.weights_sha256[:16]}…); give every "
                "worker the same weights"
            )
    sha256 = hashlib.sha256(data).hexdigest()
    return ShardRecord(job.file, job.first, job.count, job.names, report.n_dims, len(data), sha256)


def _shard_images(job: ShardJob):
    """The shard's images: a slice of the array, or its PNG files read one by one (each
    checked against ``max_pixels`` from its header, and all together against
    `MAX_DATASET_PIXELS_FACTOR` × ``max_pixels``, before it is decoded)."""
    from bbcodec.models.data import read_png

    if job.source_kind == "array":
        array = _array(job.source_root, job.split, job.max_pixels)
        if len(array) < job.first + job.count:
            raise DataError(
                f"{job.source_root}: holds {len(array)} images, fewer than planned "
                f"({job.first + job.count}); changed since the run was planned?"
            )
        return array[job.first : job.first + job.count]
    images, pixels = [], 0
    limit = None if job.max_pixels is None else MAX_DATASET_PIXELS_FACTOR * job.max_pixels
    for name in job.names:
        image, _ = read_png(Path(job.source_root, name), job.max_pixels)
        pixels += image.shape[0] * image.shape[1]
        if limit is not None and pixels > limit:
            raise SizeLimitError(
                f"{job.file}: its images hold over {limit:,} pixels ({MAX_DATASET_PIXELS_FACTOR}"
                " × --max-pixels), more than a shard may; give fewer --shard-images"
            )
        images.append(image)
    return images


@contextlib.contextmanager
def _atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Yields a file open for writing and reading on ``.NAME.<64 random bits>.part``
    beside ``path``; on success it is synced and renamed to ``path`` (replacing it), on
    any error (Ctrl-C too) removed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
    try:
        with open(tmp, "x+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----- the manifest ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A dataset folder's ``manifest.json`` (see the module docstring for the fields).

    Attributes:
        model_id: the registered model name, or ``"custom"``.
        weights_sha256: `bbcodec.api.weights_fingerprint` of the weights, hex.
        settings: every `bbcodec.codec.CodingSettings` field.
        shard_images: images per shard (the last may hold fewer).
        source_kind, source_name, split: the source (`Source`).
        n_images: images in the dataset.
        shard_count: shards planned.
        shards: the finished shards' records, in image order.
    """

    model_id: str
    weights_sha256: str
    settings: dict
    shard_images: int
    source_kind: str
    source_name: str
    split: str | None
    n_images: int
    shard_count: int
    shards: tuple[ShardRecord, ...] = ()

    @property
    def complete(self) -> bool:
        return len(self.shards) == self.shard_count

    def to_json(self) -> str:
        document = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "complete": self.complete,
            "model": self.model_id,
            "weights_sha256": self.weights_sha256,
            "settings": self.settings,
            "shard_images": self.shard_images,
            "source": {"kind": self.source_kind, "name": self.source_name, "split": self.split},
            "images": self.n_images,
            "shard_count": self.shard_count,
            "shards": [dataclasses.asdict(record) for record in self.shards],
        }
        return json.dumps(document, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: object) -> Manifest:
        """Parse and validate a manifest (`DataError` naming ``where`` if it is not one)."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{where}: not a readable manifest ({exc})") from None
        check = _Checker(where)
        check.that(isinstance(document, dict), "not a JSON object")
        check.that(document.get("format") == MANIFEST_FORMAT, "not a bbcodec dataset manifest")
        version = document.get("version")
        check.that(version == MANIFEST_VERSION, f"manifest version {version!r}, this bbcodec "
                   f"reads version {MANIFEST_VERSION}")  # fmt: skip
        source = check.field(document, "source", dict)
        shards = tuple(check.record(r) for r in check.field(document, "shards", list))
        manifest = cls(
            check.field(document, "model", str), check.field(document, "weights_sha256", str),
            check.field(document, "settings", dict), check.count(document, "shard_images"),
            check.field(source, "kind", str), check.field(source, "name", str),
            check.field(source, "split", (str, type(None))), check.count(document, "images", 0),
            check.count(document, "shard_count", 0), shards,
        )  # fmt: skip
        check.that(_SHA256.match(manifest.weights_sha256), "weights_sha256 is not a sha256")
        check.that(manifest.source_kind in ("tree", "array"), "unknown source kind")
        check.that(document.get("complete") == manifest.complete, "complete flag is wrong")
        check.that(len(shards) <= manifest.shard_count, "more shards than planned")
        ends = [(r.first, r.first + r.count) for r in shards]
        check.that(all(a[1] <= b[0] for a, b in itertools.pairwise(ends)),
                   "shards overlap or are out of order")  # fmt: skip
        check.that(all(end <= manifest.n_images for _, end in ends), "shard past the images")
        check.that(len({r.file for r in shards}) == len(shards), "two shards share a file")
        tree = manifest.source_kind == "tree"
        check.that(all(len(r.names) == (r.count if tree else 0) for r in shards),
                   "a shard's names do not match its images")  # fmt: skip
        names = [name for r in shards for name in r.names]
        check.that(len(set(names)) == len(names), "an image name is listed twice")
        return manifest


class _Checker:
    """`DataError` s for a malformed manifest, all naming the file."""

    def __init__(self, where: object):
        self.where = where

    def that(self, ok: Any, what: str) -> None:
        if not ok:
            raise DataError(f"{self.where}: malformed manifest: {what}")

    def field(self, document: dict, key: str, kind):
        value = document.get(key)
        self.that(isinstance(value, kind) and not isinstance(value, bool), f"bad {key!r}")
        return value

    def count(self, document: dict, key: str, low: int = 1) -> int:
        value = self.field(document, key, int)
        self.that(value >= low, f"{key!r} below {low}")
        return value

    def record(self, value) -> ShardRecord:
        self.that(isinstance(value, dict), "a shard record is not an object")
        names = tuple(self.field(value, "names", list))
        self.that(all(isinstance(n, str) and _safe_name(n) for n in names),
                  "an image name is not a relative .png path inside the folder")  # fmt: skip
        record = ShardRecord(
            self.field(value, "file", str), self.count(value, "first", 0),
            self.count(value, "count"), names, self.count(value, "n_dims"),
            self.count(value, "size_bytes"), self.field(value, "sha256", str),
        )  # fmt: skip
        self.that(_SHARD_FILE.match(record.file), f"bad shard file name {record.file!r}")
        self.that(_SHA256.match(record.sha256), f"{record.file}: sha256 is not a sha256")
        return record


def _safe_name(name: str) -> bool:
    """A relative ``.png`` path whose every part is a plain, non-hidden name (so writing
    it under a folder stays inside the folder)."""
    path = PurePosixPath(name)
    return (
        not path.is_absolute()
        and path.suffix.lower() == ".png"
        and "\0" not in name
        and "\\" not in name
        and str(path) == name
        and all(part and not part.startswith(".") for part in path.parts)
    )


def _read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a readable manifest (not UTF-8)") from None
    return Manifest.from_json(text, path)


def _shard_file(index: int, n_shards: int) -> str:
    return f"shard-{index:0{max(6, len(str(n_shards - 1)))}d}.bbc"


def _file_matches(path: Path, record: ShardRecord) -> bool:
    """Whether the file has the record's size and sha256."""
    try:
        if path.stat().st_size != record.size_bytes:
            return False
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() == record.sha256
    except FileNotFoundError:
        return False


# ----- planning ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    """What `run_dataset` does: `plan_dataset`'s result.

    Attributes:
        folder: the dataset folder (absolute).
        source: the images.
        manifest: the manifest to write: the plan's fields, and the shards already done.
        jobs: the shards still to code, in order.
    """

    folder: Path
    source: Source
    manifest: Manifest
    jobs: tuple[ShardJob, ...]

    @property
    def done_images(self) -> int:
        return sum(record.count for record in self.manifest.shards)

    def default_workers(self) -> int:
        """Worker processes for the shards to code: `bbcodec.plan.default_workers` for
        their images, at most one per shard."""
        return min(default_workers(sum(job.count for job in self.jobs)), max(len(self.jobs), 1))


def plan_dataset(
    dataset: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: str | None = None,
    *,
    shard_images: int = DEFAULT_SHARD_IMAGES,
    settings: CodingSettings | None = None,
    split: str = "test",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    force: bool = False,
) -> DatasetPlan:
    """Plan the coding of ``dataset`` into the folder ``out_dir`` (nothing is written).

    Args:
        dataset: a folder tree of PNG files or an array source (see `open_source`).
        out_dir: the dataset folder: new, empty, or one a run of the same plan wrote (its
            verified shards are kept).
        model: a registered name or a weights path (``None``: the shipped model for the
            images, `bbcodec.plan.default_model_name`); every worker loads it itself.
        shard_images: images per shard.
        settings: `bbcodec.codec.CodingSettings` (``None``: the defaults); the device
            must be the CPU, and ``torch_threads`` becomes 1. ``chunk_images=None``: one
            chunk per shard up to `bbcodec.plan.MAX_AUTO_CHUNK_IMAGES` images
            (`bbcodec.plan.plan_chunks`).
        split: the split of an array source that holds several.
        max_pixels: the largest image read, in pixels (``None``: no limit).
        force: ignore what ``out_dir`` holds and code every shard afresh.

    Raises:
        UsageError: bad ``shard_images`` or settings, or ``out_dir`` holding a dataset of
        another plan (without ``force``). FileExistsError: ``out_dir`` holds other
        files. FileNotFoundError: no ``dataset``, or no folder for ``out_dir``.
        DataError, SizeLimitError, ImageKindError, WeightsError: as `open_source` and
        `bbcodec.zoo.load_model` raise them.
    """
    from bbcodec.api import weights_fingerprint
    from bbcodec.codec import CodingSettings
    from bbcodec.zoo import list_models, load_model

    if not isinstance(shard_images, int) or isinstance(shard_images, bool) or shard_images < 1:
        raise UsageError(f"shard_images must be a positive integer, got {shard_images!r}")
    settings = CodingSettings() if settings is None else settings
    if settings.device != "cpu":
        raise UsageError(f"dataset mode codes on the CPU, not {settings.device}")
    folder = Path(out_dir).resolve()
    if not folder.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder for the output", str(folder.parent))
    source = open_source(dataset, split, max_pixels)
    if model is None:
        model = default_model_name(source.first_kind, [source.first_hw])
    model_obj = load_model(model)
    registered = model in {info.name for info in list_models()}
    model_id, spec = (model, model) if registered else ("custom", str(Path(model).resolve()))
    chunk_images, _ = plan_chunks(shard_images, settings.chunk_images, 1)
    settings = dataclasses.replace(settings, chunk_images=chunk_images, torch_threads=1)
    spans = [(first, min(shard_images, source.n_images - first))
             for first in range(0, source.n_images, shard_images)]  # fmt: skip
    manifest = Manifest(
        model_id, weights_fingerprint(model_obj).hex(), settings.to_dict(), shard_images,
        source.kind, source.name, source.split, source.n_images, len(spans),
    )  # fmt: skip
    shared = {
        "folder": str(folder), "source_kind": source.kind, "source_root": source.root,
        "split": source.split, "model": spec, "model_id": model_id,
        "weights_sha256": manifest.weights_sha256, "settings": manifest.settings,
        "max_pixels": max_pixels,
    }  # fmt: skip
    jobs = []
    for index, (first, count) in enumerate(spans):
        names = source.names[first : first + count]
        jobs.append(ShardJob(index=index, file=_shard_file(index, len(spans)), first=first,
                             count=count, names=names, **shared))  # fmt: skip
    done = _done_records(folder, manifest, jobs, force)
    files = {record.file for record in done}
    manifest = dataclasses.replace(manifest, shards=done)
    return DatasetPlan(folder, source, manifest, tuple(j for j in jobs if j.file not in files))


def _done_records(folder: Path, planned: Manifest, jobs: list[ShardJob], force: bool) -> tuple:
    """The records of ``folder``'s manifest whose shard is planned alike and whose file
    verifies (none with ``force``); `UsageError` for a manifest of another plan,
    `FileExistsError` for a folder that holds other files (even with ``force``)."""
    if not folder.exists():
        return ()
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
    entries = sorted(os.listdir(folder))
    others = [e for e in entries if not (e == MANIFEST_NAME or _SHARD_FILE.match(e) or
                                         _TEMPORARY.match(e))]  # fmt: skip
    if others:
        raise FileExistsError(
            errno.EEXIST,
            f"is a folder holding other files than a bbcodec dataset (e.g. {others[0]}); not "
            "writing shards into it",
            str(folder),
        )
    if force or MANIFEST_NAME not in entries:  # afresh, or shards of a run that recorded none
        return ()
    old = _read_manifest(folder)
    for what, before, now in _plan_fields(old, planned):
        if before != now:
            raise UsageError(
                f"{folder}: holds a dataset coded with other {what} ({before} there, {now} "
                "now); use another folder, or pass --force to code it afresh"
            )
    by_file = {job.file: job for job in jobs}
    return tuple(
        record
        for record in old.shards
        if record.file in by_file
        and record.matches(by_file[record.file])
        and _file_matches(folder / record.file, record)
    )


def _plan_fields(old: Manifest, new: Manifest) -> Iterator[tuple[str, Any, Any]]:
    """(what, there, now) for each field a resumed run must share with the old one."""
    yield "model", old.model_id, new.model_id
    yield "weights (sha256)", old.weights_sha256[:16], new.weights_sha256[:16]
    changed = sorted(k for k in {*old.settings, *new.settings}
                     if old.settings.get(k) != new.settings.get(k))  # fmt: skip
    yield ("coding settings", {k: old.settings.get(k) for k in changed},
           {k: new.settings.get(k) for k in changed})  # fmt: skip
    yield "shard size", old.shard_images, new.shard_images
    yield "source", _describe(old), _describe(new)


def _describe(manifest: Manifest) -> str:
    split = f", split {manifest.split}" if manifest.split else ""
    return f"{manifest.source_kind} of {manifest.n_images} images{split}"


# ----- running -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """What a run did and what the dataset holds.

    Attributes:
        n_images, n_shards: the dataset's images and shards.
        coded_images, coded_shards: those coded by this run (the rest were done).
        shard_bytes: the shard files' sizes, summed.
        manifest_bytes: the manifest's size.
        n_dims: sub-pixels in the dataset.
        seconds: wall time of the run, cluster start-up included.
        runner: where the shards were coded, in words ("in 2 worker processes", …).
    """

    n_images: int
    n_shards: int
    coded_images: int
    coded_shards: int
    shard_bytes: int
    manifest_bytes: int
    n_dims: int
    seconds: float
    runner: str

    @property
    def bits_per_dim(self) -> float:
        """The shard files' bits per sub-pixel (the manifest not counted)."""
        return 8 * self.shard_bytes / max(self.n_dims, 1)


def run_dataset(
    plan: DatasetPlan,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    progress: Progress = None,
) -> DatasetReport:
    """Code the plan's shards, recording each in the manifest as it completes.

    Args:
        plan: `plan_dataset`'s plan.
        workers: worker processes coding shards side by side (``None``:
            `DatasetPlan.default_workers`; 1: in this process), or with
            ``scheduler="local"`` the local cluster's workers.
        scheduler: run the shards on a Dask cluster (`dask_client`): ``"local"`` or a
            running scheduler's address; opened only if there is a shard to code, and
            closed (a local cluster's workers stopped) before the run ends.
        client: or a caller's `distributed.Client` (its cluster stays up).
        progress: called with the images and shards finished since the last call.

    On a cluster, the workers must reach the source and the folder at the same paths.

    Raises:
        UsageError: ``workers`` with an address or a client, both ``scheduler`` and
        ``client``, a scheduler that does not answer, or another run writing the folder.
        ConnectionError: the Dask scheduler was lost. ChildProcessError: a shard's task
        killed its workers past Dask's ``allowed-failures``. Whatever a task raises
        (`code_shard`). However the run stops, the shards done stay recorded (a folder
        this run made is removed if none is) and the same plan resumes.
    """
    if scheduler is not None and client is not None:
        raise UsageError("give a scheduler or a client, not both")
    if client is not None and workers is not None:
        raise UsageError("workers are the cluster's own when a Dask client is given")
    check_scheduler(scheduler, workers)
    started = time.perf_counter()
    report = _serialised(progress)
    n_workers = min(workers or plan.default_workers(), max(len(plan.jobs), 1))
    if client is not None or scheduler not in (None, "local"):
        runner = f"on the Dask cluster at {scheduler or client.scheduler.address}"
    elif scheduler == "local":
        runner = f"on a local Dask cluster of {n_workers} worker processes"
    else:
        runner = "in this process" if n_workers == 1 else f"in {n_workers} worker processes"
    created = _make_folder(plan.folder)
    book = _Book(plan.folder, plan.manifest)
    try:
        with _folder_lock(plan.folder):
            _remove_temporaries(plan.folder)
            book.write()
            try:
                with contextlib.ExitStack() as stack:  # closes the results, then a cluster
                    if scheduler is not None and plan.jobs:
                        n = n_workers if scheduler == "local" else workers
                        client = stack.enter_context(dask_client(scheduler, n))
                    if client is not None:
                        results = _dask_results(client, plan.jobs, report)
                    else:
                        results = _pool_results(plan, n_workers, report)
                    stack.enter_context(contextlib.closing(results))
                    jobs = {job.file: job for job in plan.jobs}
                    for record in results:
                        _check_written(plan.folder, record, jobs[record.file])
                        book.add(record)
                        report(0, 1)
            finally:  # every task has ended (or runs on elsewhere, cancelled)
                book.write(final=True)
                _remove_temporaries(plan.folder)
            _remove_stray_shards(plan.folder, book.manifest)
    except BaseException:
        if not book.manifest.shards:  # nothing recorded: leave nothing
            _remove_unrecorded(plan.folder, created)
        raise
    manifest = book.manifest
    return DatasetReport(
        manifest.n_images, manifest.shard_count, sum(job.count for job in plan.jobs),
        len(plan.jobs), sum(r.size_bytes for r in manifest.shards),
        (plan.folder / MANIFEST_NAME).stat().st_size, sum(r.n_dims for r in manifest.shards),
        time.perf_counter() - started, runner,
    )  # fmt: skip


def _serialised(progress: Progress) -> Callable[[int, int], None]:
    """``progress`` behind a lock (Dask's progress events arrive on another thread)."""
    lock = threading.Lock()

    def report(images: int, shards: int) -> None:
        if progress is not None and (images or shards):
            with lock:
                progress(images, shards)

    return report


def _make_folder(folder: Path) -> bool:
    """Create the dataset folder; True if this call created it."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
        return False
    return True


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock (``flock``) on the folder while a run writes it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{folder}: another bbcodec run is writing this dataset; wait for it to end"
            ) from None
        except OSError as exc:  # a file system without locks (some network ones): go on
            if exc.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)


def _remove_temporaries(folder: Path) -> None:
    """Remove the ``.part`` files of tasks (or manifest writes) that died."""
    for entry in os.listdir(folder):
        if _TEMPORARY.match(entry):
            (folder / entry).unlink(missing_ok=True)


def _remove_unrecorded(folder: Path, created: bool) -> None:
    """After a run that recorded no shard: remove its manifest and any shard file (none is
    recorded, so none would be kept), and the folder if the run made it."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if entry == MANIFEST_NAME or _SHARD_FILE.match(entry) or _TEMPORARY.match(entry):
                (folder / entry).unlink(missing_ok=True)
        if created:
            folder.rmdir()


def _remove_stray_shards(folder: Path, manifest: Manifest) -> None:
    """Once every shard is recorded: remove shard files the manifest does not list (of
    an older plan with more shards, or written by a task after its run was stopped)."""
    if manifest.complete:
        listed = {record.file for record in manifest.shards}
        for entry in os.listdir(folder):
            if _SHARD_FILE.match(entry) and entry not in listed:
                (folder / entry).unlink(missing_ok=True)


def _check_written(folder: Path, record: ShardRecord, job: ShardJob) -> None:
    """The client's check of a task's result: the planned shard, and on the storage the
    client sees, a file of the size and sha256 the task reported."""
    if not record.matches(job) or not _file_matches(folder / record.file, record):
        raise ContainerError(
            f"{folder / record.file}: the file differs from what its task reported (size "
            f"{record.size_bytes:,} bytes, sha256 {record.sha256[:16]}…); do the workers "
            "write to the same storage as this machine reads?"
        )


class _Book:
    """The manifest of a running plan: records added as shards complete, written
    atomically at most every `MANIFEST_INTERVAL_SECONDS` (always when ``final``)."""

    def __init__(self, folder: Path, manifest: Manifest):
        self.folder = folder
        self.manifest = manifest
        self._written = -float("inf")

    def add(self, record: ShardRecord) -> None:
        shards = sorted((*self.manifest.shards, record), key=lambda r: r.first)
        self.manifest = dataclasses.replace(self.manifest, shards=tuple(shards))
        self.write()

    def write(self, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._written >= MANIFEST_INTERVAL_SECONDS:
            with _atomic_write(self.folder / MANIFEST_NAME) as f:
                f.write(self.manifest.to_json().encode())
            self._written = now


def _shard_in_pool(codec, job: ShardJob, progress) -> ShardRecord:
    """`code_shard` as a `bbcodec.codec.code_chunks` job (the pool's codec is not used:
    the task loads its model itself, exactly as on a cluster)."""
    return code_shard(job, progress)


def _pool_results(plan: DatasetPlan, workers: int, report) -> Iterator[ShardRecord]:
    """The plan's shards coded in this process or a pool of worker processes, in order."""
    from bbcodec.codec import CodingSettings, code_chunks
    from bbcodec.zoo import load_model

    if not plan.jobs:
        return
    settings = CodingSettings(**plan.manifest.settings)
    model = load_model(plan.jobs[0].model)  # each pool worker holds it; tasks load their own
    tasks = ((job,) for job in plan.jobs)
    results = code_chunks(model, settings, workers, _shard_in_pool, tasks, lambda n: report(n, 0))
    with contextlib.closing(results):
        yield from results


def _shard_on_worker(job: ShardJob, topic: str) -> ShardRecord:
    """`code_shard` as a Dask task: each finished batch is reported as a worker event
    ``(shard index, images done by this attempt)`` on ``topic``."""
    from distributed import get_worker

    worker, done = get_worker(), 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        worker.log_event(topic, (job.index, done))

    return code_shard(job, progress)


def _dask_results(client, jobs: tuple[ShardJob, ...], report) -> Iterator[ShardRecord]:
    """The shards as Dask futures, yielded as they complete. Stopping early (an error, the
    caller closing the iterator) cancels the rest."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed

    if not jobs:
        return
    token = secrets.token_hex(4)
    topic = f"bbcodec-progress-{token}"
    counted: dict[int, int] = {}  # images counted per shard: a retry restarts from 0
    lock = threading.Lock()

    def count(index: int, images: int) -> None:
        with lock:
            more = images - counted.get(index, 0)
            if more > 0:
                counted[index] = images
                report(more, 0)

    def on_event(event) -> None:
        _, (index, images) = event
        count(index, images)

    client.subscribe_topic(topic, on_event)
    futures = client.map(
        _shard_on_worker, jobs, topic=topic, pure=False,
        key=[f"bbcodec-shard-{job.index:06d}-{token}" for job in jobs],
    )  # fmt: skip
    by_key = {future.key: job for future, job in zip(futures, jobs, strict=True)}
    try:
        for future in as_completed(futures, loop=client.loop):
            job = by_key[future.key]
            try:
                record = future.result()
            except KilledWorker:
                raise ChildProcessError(
                    f"{job.file} (images {job.first}–{job.first + job.count - 1}): its task "
                    "killed the worker that ran it, again on each retry (out of memory?); "
                    "the shards done are recorded: run the same command to resume"
                ) from None
            except CancelledError:
                raise ConnectionError(
                    f"{job.file}: its task was cancelled (lost the Dask scheduler "
                    f"{client.scheduler.address}?); the shards done are recorded: run the "
                    "same command to resume"
                ) from None
            count(job.index, job.count)
            yield record
    finally:
        with contextlib.suppress(OSError, TimeoutError, CancelledError):  # scheduler gone
            client.cancel(futures)
            client.unsubscribe_topic(topic)


def check_scheduler(scheduler: str | None, workers: int | None) -> None:
    """Refuse a worker count for a running scheduler (its workers are its own)."""
    if scheduler not in (None, "local") and workers is not None:
        raise UsageError(
            f"--workers starts a local cluster's workers; the scheduler {scheduler} has its own"
        )


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int | None = None) -> Iterator[Any]:
    """A `distributed.Client` for ``run_dataset(..., client=)``.

    Args:
        scheduler: ``"local"``: a ``LocalCluster`` of ``workers`` worker processes with
            one thread each, closed on exit; else the address of a running scheduler
            (``tcp://HOST:PORT``), given up on after Dask's connect timeout
            (``distributed.comm.timeouts.connect``; the environment variable
            ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s`` sets it).
        workers: the local cluster's workers (``None``: Dask's choice); not with an address.

    Raises:
        UsageError: ``workers`` with an address, or no scheduler (or no worker) answering.
    """
    import logging
    from multiprocessing import resource_tracker

    import dask
    from distributed import Client, LocalCluster

    check_scheduler(scheduler, workers)
    local = scheduler == "local"
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    with contextlib.ExitStack() as stack:
        logs = logging.getLogger("distributed")  # the run reports its errors in one line
        stack.callback(logs.setLevel, logs.level)
        logs.setLevel(logging.CRITICAL)
        if local:
            # The cluster's event loop thread starts with SIGINT blocked, and so does every
            # worker process it spawns: Ctrl-C reaches this process alone (not a traceback
            # from each worker), which then closes the cluster. A Ctrl-C meanwhile is
            # raised once the cluster can be closed. (Starting multiprocessing's resource
            # tracker unblocks SIGINT in the thread that starts it: that is done first.)
            resource_tracker.ensure_running()
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then gives
                # back every freed block over 64 KiB, and the codec's large temporaries
                # make it 2.5 times slower (40 CIFAR-10 images: 12.9 s against 5.1 s).
                trim = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
                stack.enter_context(dask.config.set({trim: None}))
                cluster = stack.enter_context(
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                 dashboard_address=None, silence_logs=logging.ERROR)
                )  # fmt: skip
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            yield stack.enter_context(Client(cluster, set_as_default=False))
            return
        try:
            client = stack.enter_context(Client(scheduler, set_as_default=False))
        except (OSError, TimeoutError) as exc:
            raise UsageError(
                f"no Dask scheduler answered at {scheduler} within {timeout} ({exc}); start "
                f"one (`dask scheduler`, then `dask worker {scheduler}` on each machine) or "
                "use --scheduler local"
            ) from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise UsageError(
                f"the Dask scheduler at {scheduler} has no workers (waited {timeout}); start "
                f"some with `dask worker {scheduler}`"
            ) from None
        yield client


# ----- reading a dataset -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    """A verified dataset folder, ready to decode (`read_dataset`).

    Attributes:
        folder: the folder.
        manifest: its manifest (complete).
        model: what decoding loads: a registered name or an absolute weights path.
        model_obj: the loaded model (checked against the manifest's fingerprint).
        shapes: every image's shape, in order, from the shards' headers.
    """

    folder: Path
    manifest: Manifest
    model: str
    model_obj: Any
    shapes: tuple[tuple[int, ...], ...]


def read_dataset(
    folder: str | os.PathLike, model: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DatasetFiles:  # fmt: skip
    """Read and verify a dataset folder before anything is decoded: the manifest, that it
    is complete, every shard's size and sha256 against it, every shard's header (model,
    weights, image count, sizes against ``max_pixels``), and the weights.

    Args:
        folder: the dataset folder.
        model: the weights to decode with (``None``: the registered model the manifest
            names; required for a dataset of custom weights).
        max_pixels: the largest image a shard may claim (``None``: no limit).

    Raises:
        DataError: no manifest, a malformed or incomplete one. ContainerError: a shard
        that is missing or does not match the manifest. DecodeError: no weights given for
        custom weights, or other weights than the dataset's. SizeLimitError: a shard that
        claims an image over ``max_pixels``.
    """
    from bbcodec.api import weights_fingerprint
    from bbcodec.codec import CodingSettings
    from bbcodec.container import WEIGHTS_DIGEST_BYTES, ContainerReader
    from bbcodec.zoo import list_models, load_model

    folder = Path(folder).resolve()
    if not (folder / MANIFEST_NAME).is_file():
        raise DataError(f"{folder}: no {MANIFEST_NAME}; not a dataset folder made by "
                        "`bbcodec compress` in dataset mode")  # fmt: skip
    manifest = _read_manifest(folder)
    if not manifest.complete:
        raise DataError(
            f"{folder}: the dataset is not complete ({len(manifest.shards)} of "
            f"{manifest.shard_count} shards); run the compress command again to finish it"
        )
    try:
        settings = CodingSettings(**manifest.settings)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{folder / MANIFEST_NAME}: bad coding settings ({exc})") from None
    if settings.device != "cpu":
        raise DataError(f"{folder / MANIFEST_NAME}: coded on {settings.device}, not the CPU")
    registered = {info.name for info in list_models()}
    if model is None:
        if manifest.model_id not in registered:
            what = "custom weights" if manifest.model_id == "custom" else (
                f"model {manifest.model_id!r}, which is not registered")  # fmt: skip
            raise DecodeError(f"the dataset was made with {what}: pass them with --model PATH")
        model = manifest.model_id
    elif model not in registered:
        model = str(Path(model).resolve())  # the workers load it by path
    model_obj = load_model(model)
    if weights_fingerprint(model_obj).hex() != manifest.weights_sha256:
        raise DecodeError(
            f"{folder}: made with other weights than {model} (sha256 "
            f"{manifest.weights_sha256[:16]}… in the manifest); decode it with those"
        )
    digest = bytes.fromhex(manifest.weights_sha256)[:WEIGHTS_DIGEST_BYTES]
    shapes = []
    for record in manifest.shards:
        path = folder / record.file
        if not _file_matches(path, record):
            raise ContainerError(
                f"{path}: missing, or its size or sha256 differs from the manifest's "
                "(damaged or replaced); nothing was decoded"
            )
        with open(path, "rb") as f:
            header = ContainerReader(f, max_pixels).header
        if (header.model_id, header.weights_digest, header.image_count) != (
            manifest.model_id, digest, record.count,
        ):  # fmt: skip
            raise ContainerError(f"{path}: its header does not match the manifest")
        shapes += header.shapes
    return DatasetFiles(folder, manifest, model, model_obj, tuple(shapes))


def _decode_shard(codec, path: str, model: str, max_pixels: int | None, progress) -> list:
    """One shard's images, verified (`bbcodec.api.decompress_from`), as a list of
    (n, H, W[, 3]) uint8 arrays: a `bbcodec.codec.code_chunks` job whose pool codec is
    not used (the shard's own settings decode it)."""
    from bbcodec.api import decompress_from

    with open(path, "rb") as f:
        return list(decompress_from(f, model, progress, workers=1, max_pixels=max_pixels))


def decode_dataset(
    dataset: DatasetFiles, workers: int = 1, progress: Callable[[int], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Iterator:  # fmt: skip
    """The images of a verified dataset, shard by shard in order, as (n, H, W[, 3]) uint8
    arrays; the shards are decoded in ``workers`` processes side by side (1: in this one).
    Close the iterator if you may stop early (that stops the workers)."""
    from bbcodec.codec import CodingSettings, code_chunks

    settings = CodingSettings(**dataset.manifest.settings)
    tasks = ((str(dataset.folder / r.file), dataset.model, max_pixels)
             for r in dataset.manifest.shards)  # fmt: skip
    n_workers = max(1, min(workers, dataset.manifest.shard_count))
    results = code_chunks(dataset.model_obj, settings, n_workers, _decode_shard, tasks, progress)
    with contextlib.closing(results):
        for arrays in results:
            yield from arrays
