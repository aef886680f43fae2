"""Hostile and careless input to `bbcodec compress` / `decompress` / `bench`, through
`main(argv)` (and a subprocess where a signal or Pillow's warnings are the point), on tiny
random models and small files made in tmp_path: every case is one stderr line, an exit
code, and nothing left on disk (no output, no hidden ``.part`` file)."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import listing as _listing
from cli_runs import npy as _npy
from cli_runs import run
from PIL import Image, PngImagePlugin

from bbcodec import api, zoo
from bbcodec.cli import codec_commands
from bbcodec.cli.main import main
from bbcodec.codec import ImageCodec
from bbcodec.container import ContainerReader, ContainerWriter
from bbcodec.models.data import load_images
from bbcodec.models.vae import LatentVariableModel, ModelConfig
from bbcodec.models.weights import save_weights

SMALL = {"channels": 8, "n_blocks": 1, "made_hidden": 16, "kernel_size": 3}
BINARY = ModelConfig("vlae", "binary", (8, 8), latent_dim=4, **SMALL)


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))  # never touch the real zoo
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def model() -> tuple[str, str]:
    """``--model PATH`` of a tiny random binary model (outside the work folder)."""
    path = Path.cwd().parent / "binary.safetensors"
    save_weights(LatentVariableModel(BINARY), path)
    return ("--model", str(path))


def _bits(n: int, shape=(8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (n, *shape), dtype=np.uint8)


def _one_error_line(err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bbcodec: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _fails_cleanly(capsys, argv, *fragments: str, code: int = 1) -> str:
    """Runs ``argv``: exit ``code``, one stderr line holding ``fragments``, the work folder
    exactly as it was."""
    before = _listing()
    status, _, err = run(capsys, *argv)
    assert status == code, err
    line = _one_error_line(err, *fragments)
    assert _listing() == before
    return line


def _no_part_files() -> None:
    assert not [p for p in _listing() if p.endswith(".part") or ".part" in p], _listing()


def _compress(capsys, *argv: str) -> str:
    code, out, err = run(capsys, "compress", "-q", *argv)
    assert code == 0, err
    return out


def _decompress(capsys, *argv: str) -> str:
    code, out, err = run(capsys, "decompress", "-q", *argv)
    assert code == 0, err
    return out


# ----- 1. every output reads the file to its end ------------------------------------------


@pytest.mark.parametrize("output", ["y.png", "y.npy", "ydir"])
def test_every_output_checks_the_end_of_the_file(capsys, model, output):
    """Trailing junk, a file concatenated twice and a missing end record are errors for a
    one-PNG output too (it used to stop after the first chunk and say "verified")."""
    _compress(capsys, _npy("one.npy", _bits(1)), "-o", "one.bbc", *model)
    data = Path("one.bbc").read_bytes()
    Path("junk.bbc").write_bytes(data + b"junk")
    Path("twice.bbc").write_bytes(data + data)
    Path("cut.bbc").write_bytes(data[:-1])
    cases = {"junk.bbc": "trailing bytes", "twice.bbc": "trailing bytes",
             "cut.bbc": "truncated"}  # fmt: skip
    for name, why in cases.items():
        _fails_cleanly(capsys, ["decompress", "-q", name, "-o", output, *model], name, why)
    out = _decompress(capsys, "one.bbc", "-o", output, *model)
    assert "every chunk verified" in out


def test_png_output_of_a_many_image_file_is_refused(capsys, model):
    _compress(capsys, _npy("three.npy", _bits(3)), "-o", "three.bbc", *model)
    line = _fails_cleanly(capsys, ["decompress", "three.bbc", "-o", "multi.png", *model])
    assert line == (
        "bbcodec: error: the file holds 3 images; -o NAME.png takes a one-image file: give "
        "a folder or a .npy"
    )
    assert not Path("multi.png").exists()


# ----- 3. a full disk while writing a .npy ------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC after the first ``room`` bytes."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_full_disk_while_writing_npy(capsys, model, monkeypatch):
    """The .npy is written sequentially (no memory map, which dies by SIGBUS on a full
    disk): ENOSPC is the one-line error and the temporary file is gone."""
    _compress(capsys, _npy("x.npy", _bits(12)), "-o", "x.bbc", *model, "--chunk-images", "4")

    def no_memmap(*args, **kwargs):
        raise AssertionError("the .npy must not be written through a memory map")

    monkeypatch.setattr(np.lib.format, "open_memmap", no_memmap)

    def full_disk(*args, **kwargs):
        return _FullDisk(open(*args, **kwargs), 200)

    with monkeypatch.context() as full:
        full.setattr(codec_commands, "open", full_disk, raising=False)
        _fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.npy", *model], "y.npy",
                       "no space left", "nothing was written")  # fmt: skip
    _decompress(capsys, "x.bbc", "-o", "y.npy", *model)
    assert np.array_equal(np.load("y.npy"), _bits(12))


# ----- 4. two runs writing the same output ------------------------------------------------


def _theirs(path: str, folder: bool = False, content: bool = True) -> None:
    """What another run wrote meanwhile at ``path``."""
    if folder:
        Path(path).mkdir()
        if content:
            Path(path, "000000.png").write_bytes(b"theirs")
    else:
        Path(path).write_bytes(b"theirs")


def test_compress_does_not_replace_an_output_that_appeared_meanwhile(capsys, model, monkeypatch):
    _npy("x.npy", _bits(4))
    compress_to = api.compress_to

    def racing(*args, **kwargs):
        _theirs("x.bbc")  # the other run published first
        return compress_to(*args, **kwargs)

    monkeypatch.setattr(api, "compress_to", racing)
    code, _, err = run(capsys, "compress", "-q", "x.npy", "-o", "x.bbc", *model)
    assert code == 1
    _one_error_line(err, "x.bbc", "exists", "--force")
    assert Path("x.bbc").read_bytes() == b"theirs"
    _no_part_files()
    # without hard links (some file systems): the same, by a checked rename
    Path("x.bbc").unlink()

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    code, _, err = run(capsys, "compress", "-q", "x.npy", "-o", "x.bbc", *model)
    assert code == 1 and "exists" in err and Path("x.bbc").read_bytes() == b"theirs"
    _no_part_files()
    # --force replaces it, as asked
    Path("x.bbc").unlink()
    _compress(capsys, "x.npy", "-o", "x.bbc", *model, "--force")
    assert Path("x.bbc").read_bytes()[:4] != b"thei"
    # and with nothing in the way, no links is no problem
    monkeypatch.setattr(api, "compress_to", compress_to)
    _compress(capsys, "x.npy", "-o", "y.bbc", *model)
    _decompress(capsys, "y.bbc", "-o", "y.npy", *model)
    assert np.array_equal(np.load("y.npy"), _bits(4))
    _no_part_files()


@pytest.mark.parametrize(
    ("output", "folder", "content"),
    [("y.png", False, True), ("y.npy", False, True), ("ydir", True, True),
     ("ydir", True, False), ("ydir", False, True)],
    ids=["png", "npy", "folder", "empty-folder", "file-for-folder"],
)  # fmt: skip
def test_decompress_does_not_replace_an_output_that_appeared_meanwhile(
    capsys, model, monkeypatch, output, folder, content
):
    _compress(capsys, _npy("x.npy", _bits(1)), "-o", "x.bbc", *model)
    decompress_from = api.decompress_from

    def racing(*args, **kwargs):
        _theirs(output, folder, content)
        return decompress_from(*args, **kwargs)

    monkeypatch.setattr(api, "decompress_from", racing)
    code, _, err = run(capsys, "decompress", "-q", "x.bbc", "-o", output, *model)
    assert code == 1
    _one_error_line(err, output, "exists")
    if folder:
        assert [p.name for p in Path(output).iterdir()] == (["000000.png"] if content else [])
    else:
        assert Path(output).read_bytes() == b"theirs"
    _no_part_files()


# ----- 5. SIGTERM -------------------------------------------------------------------------


def test_sigterm_leaves_nothing(model):
    """SIGTERM (a service stopping, a job killed) cleans up as Ctrl-C does: exit 143, one
    line, no output and no temporary file."""
    _npy("x.npy", _bits(1000))
    argv = [sys.executable, "-m", "bbcodec.cli.main", "compress", "-q", "x.npy", "-o", "x.bbc",
            *model, "--max-batch", "1", "--workers", "1", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".part") for p in Path.cwd().iterdir()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err
    assert _one_error_line(err) == "bbcodec: error: terminated"
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["x.npy"]


@pytest.mark.parametrize("after_s", [0.3, 2.5])
def test_ctrl_c_at_the_terminal_while_workers_start_leaves_nothing(model, after_s):
    """A terminal's Ctrl-C reaches the whole process group: the command, the workers'
    server (importing torch at 0.3 s) and the workers. One line, exit 130, no traceback from
    any of them, no output, and soon no process of the group left."""
    _npy("x.npy", _bits(4000))
    argv = [sys.executable, "-m", "bbcodec.cli.main", "compress", "-q", "x.npy", "-o", "x.bbc",
            *model, "--max-batch", "1", "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        time.sleep(after_s)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while _group_alive(process.pid):
            assert time.monotonic() < deadline, "a process of the group outlived the command"
            time.sleep(0.1)
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
    assert process.returncode == 130, err
    assert _one_error_line(err) == "bbcodec: error: interrupted"
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["x.npy"]


def test_ctrl_c_while_the_commands_are_imported_is_one_line():
    """Importing `bbcodec.cli.main` (what ``python -m`` and the installed command run first)
    loads neither numpy nor torch, and a Ctrl-C while `main` builds the parser (importing the
    command modules) ends the command with one line and 130, not a traceback."""
    script = """if True:
        import os, signal, sys
        import bbcodec.cli.main as cli
        heavy = sorted({"numpy", "torch", "constriction"} & set(sys.modules))
        assert not heavy, heavy
        build_parser = cli.build_parser
        def interrupted_build():
            os.kill(os.getpid(), signal.SIGINT)
            return build_parser()
        cli.build_parser = interrupted_build
        sys.exit(cli.main(["models"]))
    """
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert _one_error_line(result.stderr) == "bbcodec: error: interrupted"
    assert result.stdout == ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_signal_turned_into_another_error_still_ends_as_the_signal(capsys, model, monkeypatch):
    """Native code (safetensors' loader, say) may catch the `Terminated` a SIGTERM raised
    and raise an error of its own: the command still ends as terminated, cleaned up."""
    _npy("x.npy", _bits(4))

    def garbled(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        except BaseException as exc:
            raise ValueError("could not determine the shape of object type") from exc

    monkeypatch.setattr(ImageCodec, "encode_chunk", garbled)  # while the output is open
    code, _, err = run(capsys, "compress", "x.npy", "-o", "x.bbc", *model)
    assert code == 143
    assert _one_error_line(err) == "bbcodec: error: terminated"
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["x.npy"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


# ----- 6. out of memory -------------------------------------------------------------------


def test_out_of_memory_is_one_line(capsys, model, monkeypatch):
    _npy("x.npy", _bits(4))

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB for an array with shape (10, 8, 8)")

    with monkeypatch.context() as patch:
        patch.setattr(codec_commands, "_load_inputs", too_big)
        _fails_cleanly(capsys, ["compress", "x.npy", "-o", "x.bbc", *model],
                       "out of memory (Unable to allocate 8.00 GiB")  # fmt: skip

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ImageCodec, "encode_chunk", no_memory)  # while the output is open
    line = _fails_cleanly(capsys, ["compress", "x.npy", "-o", "x.bbc", *model])
    assert line == "bbcodec: error: out of memory (MemoryError)"


def test_other_runtime_errors_keep_their_traceback(model, monkeypatch):
    _npy("x.npy", _bits(4))

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(codec_commands, "_load_inputs", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["compress", "x.npy", "-o", "x.bbc", *model])


# ----- 7. images that claim huge sizes ----------------------------------------------------


def _bomb(name: str, side: int = 10000) -> str:
    """A 1-bit PNG of side × side zeros: 100 M pixels claimed, a few KB on disk."""
    Image.new("1", (side, side)).save(name)
    return name


BOMB = """
import sys
from bbcodec.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_png_claiming_a_huge_size_is_refused_without_a_raw_warning(capsys, model, recwarn):
    _bomb("big.png")
    assert Path("big.png").stat().st_size < 100_000
    fragments = ("big.png", "10000×10000", "100,000,000 pixels", "--max-pixels")
    # in a process of its own, so that a warning Pillow printed (a RuntimeWarning, shown
    # under Python's default filters) would show on stderr
    argv = ["compress", "-q", "big.png", "-o", "x.bbc", *model]
    result = subprocess.run([sys.executable, "-c", BOMB, *argv],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower()
    _one_error_line(result.stderr, *fragments)
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["big.png"]
    # bench reads its --data the same way
    _fails_cleanly(capsys, ["bench", "-q", *model, "--data", "big.png"], *fragments)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_sets_the_limit(capsys, model, monkeypatch, recwarn):
    photo = _bits(1, (13, 30))[0]
    Image.fromarray(photo.astype(bool)).save("photo.png")
    _fails_cleanly(capsys, ["compress", "photo.png", "-o", "x.bbc", *model, "--max-pixels",
                            "389"], "photo.png", "390 pixels", "--max-pixels")  # fmt: skip
    # under --max-pixels, Pillow's own guard is not in the way (nor printed)
    with monkeypatch.context() as pillow:
        pillow.setattr(Image, "MAX_IMAGE_PIXELS", 100)
        _compress(capsys, "photo.png", "-o", "x.bbc", *model, "--max-pixels", "390")
        assert Image.MAX_IMAGE_PIXELS == 100  # restored
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    # a .bbc file that claims more is refused before decoding
    _fails_cleanly(capsys, ["decompress", "x.bbc", "-o", "y.png", *model, "--max-pixels",
                            "389"], "x.bbc", "30×13", "390 pixels", "--max-pixels")  # fmt: skip
    _decompress(capsys, "x.bbc", "-o", "y.png", *model)
    np.testing.assert_array_equal(load_images("y.png")[0], photo)


def _npz_claiming(name: str, shape: tuple[int, ...]) -> str:
    """A one-array .npz whose .npy header claims ``shape`` and holds no data."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(name, "w") as zf:
        zf.writestr("images.npy", header.getvalue())
    return name


def test_npy_and_npz_inputs_are_held_to_max_pixels(capsys, model):
    """A one-array .npz (read by the CLI itself) and a .npy are checked from their headers."""
    np.savez("one.npz", images=_bits(3))
    _npy("one.npy", _bits(3))
    for name in ("one.npz", "one.npy"):
        _fails_cleanly(capsys, ["compress", name, "-o", "x.bbc", *model, "--max-pixels", "63"],
                       name, "8×8", "64 pixels", "--max-pixels")  # fmt: skip
    np.savez("many.npz", images=_bits(100))  # 6,400 pixels: over 64 × 64 read at once
    _fails_cleanly(capsys, ["compress", "many.npz", "-o", "x.bbc", *model, "--max-pixels", "64"],
                   "many.npz", "6,400 pixels", "--max-pixels")  # fmt: skip
    _npz_claiming("big.npz", (1, 100_000, 100_000))  # claims 10 GB, holds nothing
    _npz_claiming("short.npz", (2, 8, 8))
    for name in ("big.npz", "short.npz"):
        _fails_cleanly(capsys, ["compress", name, "-o", "x.bbc", *model], name)


def test_max_pixels_is_an_option_of_compress_decompress_and_bench(capsys):
    for command in ("compress", "decompress", "bench"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "--max-pixels N" in out and "claim huge sizes" in " ".join(out.split())
    code, _, err = run(capsys, "compress", "x.npy", "-o", "x.bbc", "--max-pixels", "0")
    assert code == 2 and "positive integer" in err


# ----- 8. PNG metadata is not stored: say so ----------------------------------------------


def test_png_metadata_that_is_dropped_is_noted(capsys, model):
    images = _bits(5)
    Path("in").mkdir()
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "me")
    gamma = PngImagePlugin.PngInfo()
    gamma.add(b"gAMA", (45455).to_bytes(4, "big"))
    extras = [{"icc_profile": b"not really a profile"}, {"pnginfo": text}, {"pnginfo": gamma},
              {"dpi": (300, 300)}, {}]  # fmt: skip
    for i, (image, extra) in enumerate(zip(images, extras, strict=True)):
        Image.fromarray(image.astype(bool)).save(f"in/{i}.png", **extra)
    with Image.open("in/0.png") as png:
        assert "icc_profile" in png.info
    out = _compress(capsys, "in", "-o", "x.bbc", *model)
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    note = ("note: 3 PNG files carried metadata (gamma, ICC profile, text) that is not "
            "stored; the pixels are coded exactly")  # fmt: skip
    assert notes == [note]
    # the pixels are all there; the decompressed PNGs carry nothing to note
    _decompress(capsys, "x.bbc", "-o", "out", *model)
    assert np.array_equal(load_images("out"), images)
    out = _compress(capsys, "out", "in/3.png", "-o", "y.bbc", *model)
    assert "note:" not in out


def test_png_facts_read_no_pixels(tmp_path):
    """The metadata scan reads chunk headers only: a PNG whose pixel data is garbage still
    gives its size and metadata (the image reader reports the garbage)."""
    from bbcodec.cli.args import png_facts

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "words")
    Image.new("L", (7, 5)).save(tmp_path / "a.png", pnginfo=info)
    data = bytearray((tmp_path / "a.png").read_bytes())
    at = data.index(b"IDAT") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "b.png").write_bytes(bytes(data))
    for name in ("a.png", "b.png"):
        facts = png_facts(tmp_path / name)
        assert (facts.width, facts.height, facts.metadata) == (7, 5, frozenset({"text"}))
    (tmp_path / "c.png").write_bytes(b"not a png")
    assert png_facts(tmp_path / "c.png") is None
    assert png_facts(tmp_path / "missing.png") is None


# ----- a file names a registered model, never a path ---------------------------------------


@pytest.mark.parametrize("model_id", ["/etc/passwd", "../binary.safetensors"])
def test_a_model_id_from_the_file_is_never_opened_as_a_path(capsys, model, model_id):
    _compress(capsys, _npy("x.npy", _bits(2)), "-o", "x.bbc", *model)
    with open("x.bbc", "rb") as f:
        reader = ContainerReader(f)
        chunks = list(reader)
    header = dataclasses.replace(reader.header, model_id=model_id)
    with open("crafted.bbc", "wb") as f:
        writer = ContainerWriter(f)
        writer.write_header(header)
        for chunk in chunks:
            writer.write_chunk(chunk)
        writer.finalize()
    _fails_cleanly(
        capsys, ["decompress", "-q", "crafted.bbc", "-o", "out"], "not a registered model"
    )
