"""Photos cut into bands (``band_rows``): each band its own chunk, coded as an image of its
own, so workers code one photo side by side and a coder holds one band.

- a photo of several bands (the last one shorter) round-trips exactly, in a file that
  records the band height and holds one chunk record per band, each decodable alone;
- the bytes do not depend on the number of workers;
- a band is coded exactly as that band alone; a photo no taller than a band, or
  ``band_rows=0``, gives today's one-chunk file;
- a band height that is not a multiple of the tile is one clear error; the container
  refuses band records out of place;
- the decoder builds a coder of one band's size at a time, and a coder hands a tile's
  features back once its pixels are coded, without changing a bit.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from tiny import random_images, random_model, tiny_config

import bbcodec
from bbcodec import zoo
from bbcodec.api import compress_to, decompress_from
from bbcodec.codec import CodingSettings, ImageCodec, tiled
from bbcodec.container import Chunk, ContainerWriter, Header, dumps, loads, pixels_digest
from bbcodec.errors import ContainerError, DecodeError, UsageError
from bbcodec.plan import PHOTO_PIXEL_BINS, band_height, image_bands, plan_coding

CONFIG = tiny_config("vlae", "rgb")  # 8 × 8 tiles
#: 37 rows in bands of 16: 16, 16 and 5 rows.
PHOTO_HW = (37, 21)
BANDS = [(0, 16), (16, 32), (32, 37)]


@pytest.fixture(autouse=True)
def _light(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "zoo"))


@pytest.fixture(scope="module")
def model():
    return random_model(CONFIG)


@pytest.fixture(scope="module")
def photo():
    return np.random.default_rng(3).integers(0, 256, (*PHOTO_HW, 3), np.uint8)


def _settings(band_rows):
    return CodingSettings(band_rows=band_rows, torch_threads=1)


def test_a_photo_of_several_bands_round_trips_exactly(model, photo):
    out, done = io.BytesIO(), []
    report = compress_to(out, photo, model, _settings(16), done.append)
    data = out.getvalue()
    header, chunks = loads(data)
    assert header.settings["band_rows"] == 16 and header.bands(0) == BANDS  # last one shorter
    assert [(c.first, c.count, c.band) for c in chunks] == [(0, 1, 0), (0, 1, 1), (0, 1, 2)]
    assert sum(done) == 1 and report.n_images == 1  # one image, done with its last band
    assert len(report.chunks) == 3 and report.chunk_images == (1, 1, 1)
    (image_bits,) = report.image_information_bits  # the bands' bits, summed
    assert image_bits == pytest.approx(sum(c.information_bits for c in report.chunks))
    decoded: list[int] = []
    parts = list(decompress_from(io.BytesIO(data), model, decoded.append))
    assert len(parts) == 1 and sum(decoded) == 1  # the bands stacked back into one image
    np.testing.assert_array_equal(parts[0], photo[None])
    assert CodingSettings.from_header(header).band_rows == 16  # read back


def test_each_band_is_the_band_coded_alone_and_decodes_alone(model, photo):
    header, chunks = loads(bbcodec.compress(photo, model, _settings(16)))
    codec = ImageCodec(model, CodingSettings(pixel_bins=PHOTO_PIXEL_BINS))  # a photo's
    for chunk, (r0, r1) in zip(chunks, BANDS, strict=True):
        band = photo[None, r0:r1]
        alone, _ = codec.encode_chunk(band)
        np.testing.assert_array_equal(chunk.words, alone.words)
        assert chunk.pixels_digest == pixels_digest(band, len(chunk.pixels_digest))
        assert header.band_shape(0, chunk.band) == band.shape[1:]
        np.testing.assert_array_equal(codec.decode_chunk(chunk, shape=band.shape[1:]), band)


def test_one_band_is_todays_file(model, photo):
    """``band_rows=0``, or a photo no taller than a band: one chunk, no ``band_rows`` key."""
    whole = bbcodec.compress(photo, model, _settings(0))
    header, chunks = loads(whole)
    assert "band_rows" not in header.settings and len(chunks) == 1 and chunks[0].band == 0
    assert bbcodec.compress(photo, model, _settings(40)) == whole  # 40 ≥ 37 rows
    assert bbcodec.compress(photo, model, _settings(None)) == whole  # default: 256 rows
    assert CodingSettings.from_header(header).band_rows == 0
    assert CodingSettings.from_header(header).pixel_bins == PHOTO_PIXEL_BINS
    codec = ImageCodec(model, CodingSettings(pixel_bins=PHOTO_PIXEL_BINS))
    assert chunks[0] == codec.encode_chunk(photo[None])[0]


def test_a_file_of_images_and_photos_mixed(model, photo):
    """Images of the model's size in batches, a photo in bands, a short photo whole."""
    images = list(random_images(CONFIG, 3)) + [photo, photo[:10]]
    data = bbcodec.compress(images, model, _settings(16))
    _, chunks = loads(data)
    assert [(c.first, c.count, c.band) for c in chunks] == [
        (0, 3, 0), (3, 1, 0), (3, 1, 1), (3, 1, 2), (4, 1, 0),
    ]  # fmt: skip
    decoded = bbcodec.decompress(data, model)
    assert len(decoded) == 5
    for got, want in zip(decoded, images, strict=True):
        np.testing.assert_array_equal(got, want)


def test_two_workers_write_the_same_bytes_and_decode_the_same_photo(model, photo):
    """Two workers code the bands side by side (one pool start, a few seconds); the
    decoder stacks the bands the pool hands back in order."""
    photos = [photo, photo[::-1]]
    one = bbcodec.compress(photos, model, _settings(16), workers=1)
    decoded = []
    two = io.BytesIO()
    with_pool = compress_to(two, photos, model, _settings(16), workers=2)
    assert two.getvalue() == one and len(with_pool.chunks) == 6
    parts = list(decompress_from(io.BytesIO(one), model, decoded.append))
    np.testing.assert_array_equal(np.concatenate(parts), np.stack(photos))
    assert sum(decoded) == 2


def test_a_band_height_off_the_tile_grid_is_one_clear_error(model, photo):
    message = (
        r"^band_rows must be a multiple of the model's tile height 8 \(or 0: one band\), got 12$"
    )
    with pytest.raises(UsageError, match=message):
        bbcodec.compress(photo, model, _settings(12))
    with pytest.raises(UsageError, match="band_rows must be between 0 and 65536, got -8"):
        CodingSettings(band_rows=-8)
    assert band_height(None, 8) == 256 and band_height(None, 28) == 252
    assert band_height(None, 300) == 300  # at least one tile
    # A file whose band height is off the model's tile grid was not written by bbcodec.
    header, chunks = loads(bbcodec.compress(photo, model, _settings(16)))
    odd = Header(header.model_id, header.weights_digest, {"band_rows": 12}, header.shapes)
    with pytest.raises(DecodeError, match="invalid coding settings in file: band_rows must"):
        list(decompress_from(io.BytesIO(dumps(odd, _rebanded(chunks, photo, 12))), model))


def _rebanded(chunks, photo, band_rows):
    """Chunks with digests of the right sizes for ``band_rows`` (streams reused)."""
    bands = image_bands(photo.shape[0], band_rows)
    words = chunks[0].words
    return [
        Chunk(0, 1, words, pixels_digest(photo[None, r0:r1], 8 if (r1 - r0) > 800 else 4), band)
        for band, (r0, r1) in enumerate(bands)
    ]


def test_the_container_refuses_band_records_out_of_place():
    shapes = ((37, 21, 3),)
    header = Header("m", bytes(4), {"band_rows": 16}, shapes)
    photo = np.zeros((*PHOTO_HW, 3), np.uint8)
    words = np.ones(3, np.uint32)
    good = _rebanded([Chunk(0, 1, words, bytes(4))], photo, 16)
    assert loads(dumps(header, good)) == (header, good)
    with pytest.raises(ContainerError, match="expected band 1 of image 0"):
        dumps(header, [good[0], good[2]])
    with pytest.raises(ContainerError, match="cannot finalize"):
        dumps(header, good[:2])
    whole = Chunk(0, 1, words, pixels_digest(photo[None], 8))
    with pytest.raises(ContainerError, match="a pixel digest of 8 bytes"):
        dumps(header, [whole])  # the whole photo where its first band belongs
    with pytest.raises(ContainerError, match="a band is one image's"):
        Chunk(0, 2, words, bytes(4), band=1)
    for bad in (0, -16, 1.5, "16"):
        with pytest.raises(ContainerError, match="band_rows"):
            Header("m", bytes(4), {"band_rows": bad}, shapes)
    # Without the key the photo is one chunk: a second record is one too many.
    plain = Header("m", bytes(4), {}, shapes)
    writer = ContainerWriter(io.BytesIO())
    writer.write_header(plain)
    writer.write_chunk(good[0])
    with pytest.raises(ContainerError, match="does not continue at image 1 of 1"):
        writer.write_chunk(good[1])


def test_the_plan_codes_bands_side_by_side():
    plan = plan_coding([((37, 21, 3), 2)], (8, 8, 3), workers=8, band_rows=16)
    assert plan.band_rows == 16 and plan.workers == 6  # three bands per photo
    assert [(s.first, s.band, s.bands, s.rows, s.shape) for s in plan.spans[:3]] == [
        (0, 0, 3, (0, 16), (16, 21, 3)),
        (0, 1, 3, (16, 32), (16, 21, 3)),
        (0, 2, 3, (32, 37), (5, 21, 3)),
    ]
    assert plan_coding([((37, 21, 3), 1)], (8, 8, 3), workers=8, band_rows=0).workers == 1
    assert image_bands(256, 256) == [(0, 256)] and image_bands(257, 256) == [(0, 256), (256, 257)]


def test_the_default_cuts_a_photo_into_an_even_number_of_bands_of_about_256_rows():
    """Left to the plan, a photo's bands number an even count (two workers, or four, each
    code as many), as even as the tile grid allows: a 768-row portrait in two of 384."""
    expected = {200: [200], 512: [256, 256], 600: [320, 280], 768: [384, 384],
                1000: [256, 256, 256, 232], 1280: [320] * 4, 4000: [256] * 15 + [160]}  # fmt: skip
    for height, rows in expected.items():
        band_rows = band_height(None, 32, height)
        assert band_rows % 32 == 0
        assert [r1 - r0 for r0, r1 in image_bands(height, band_rows)] == rows, height
    portrait = plan_coding([((768, 512, 3), 1)], (32, 32, 3), workers=2)
    assert portrait.band_rows == 384 and [s.rows for s in portrait.spans] == [(0, 384), (384, 768)]
    landscape = plan_coding([((512, 768, 3), 1)], (32, 32, 3), workers=2)
    assert landscape.band_rows == 256 and len(landscape.spans) == 2
    # The tallest photo of a file decides; shorter ones are cut by the same height.
    mixed = plan_coding([((512, 768, 3), 1), ((768, 512, 3), 1)], (32, 32, 3), workers=2)
    assert mixed.band_rows == 384 and [s.bands for s in mixed.spans] == [2, 2, 2, 2]
    # Images of the model's shape are never cut.
    assert plan_coding([((32, 32, 3), 10)], (32, 32, 3), workers=1).band_rows == 256


def test_the_decoder_holds_one_band_at_a_time(model, photo, monkeypatch):
    """Every coder the decoder builds is of one band's size (its canvas and feature map),
    and it is dropped before the next band's is built."""
    data = bbcodec.compress(photo, model, _settings(16))
    built, alive = [], []
    real = tiled.TiledImage.__init__

    def spy(self, adapter, shape, *rest):
        alive[:] = [ref for ref in alive if ref() is not None]
        built.append((tuple(shape), len(alive)))
        real(self, adapter, shape, *rest)
        import weakref

        alive.append(weakref.ref(self))

    monkeypatch.setattr(tiled.TiledImage, "__init__", spy)
    np.testing.assert_array_equal(bbcodec.decompress(data, model)[0], photo)
    assert [shape for shape, _ in built] == [(16, 21, 3), (16, 21, 3), (5, 21, 3)]
    assert all(earlier == 0 for _, earlier in built)  # no other band's coder still alive


@pytest.mark.parametrize("channels", [8, 96])
def test_handing_back_finished_tiles_changes_no_bit(channels, monkeypatch):
    """Tiles' features go back to the system as the wavefront leaves them (`_release`):
    the same stream as a coder that keeps them all, and most pages are handed back."""
    config = dataclasses.replace(CONFIG, channels=channels)
    model = random_model(config)
    image = np.random.default_rng(1).integers(0, 256, (1, 21, 150, 3), np.uint8)
    codec = ImageCodec(model, CodingSettings())
    released = []
    real = tiled.TiledImage._release

    def counting(self, tiles, backwards):
        before = sum(self._frontier.values())
        real(self, tiles, backwards)
        released.append(abs(sum(self._frontier.values()) - before))

    monkeypatch.setattr(tiled.TiledImage, "_release", counting)
    chunk, _ = codec.encode_chunk(image)
    np.testing.assert_array_equal(codec.decode_chunk(chunk, shape=image.shape[1:]), image)
    assert sum(released) > 0
    monkeypatch.setattr(tiled.TiledImage, "_release", lambda self, tiles, backwards: None)
    kept, _ = codec.encode_chunk(image)
    assert kept == chunk


def test_the_cli_takes_band_rows(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from bbcodec.cli.main import main
    from bbcodec.models.weights import save_weights

    model = random_model(CONFIG)
    weights = tmp_path / "tiny.safetensors"
    save_weights(model, weights)
    photo = np.random.default_rng(0).integers(0, 256, (20, 9, 3), np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    monkeypatch.chdir(tmp_path)
    common = ["--model", str(weights), "-q"]
    common += ["--workers", "1"]  # three bands: the default would start a pool
    assert main(["compress", "p.png", "-o", "p.bbc", "--band-rows", "8", *common]) == 0
    header, chunks = loads((tmp_path / "p.bbc").read_bytes())
    assert header.settings["band_rows"] == 8 and len(chunks) == 3
    assert main(["decompress", "p.bbc", "-o", "q.png", *common]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "q.png")), photo)
    capsys.readouterr()
    assert main(["compress", "p.png", "-o", "r.bbc", "--band-rows", "12", *common]) != 0
    assert "multiple of the model's tile height 8" in capsys.readouterr().err


@pytest.mark.parametrize("band_rows", [1, 5, 16, 300])
def test_the_container_reads_back_what_it_wrote_in_bands(band_rows):
    """Images of many heights, a band height: one record per band, read back in order."""
    from bbcodec.container import pixel_digest_bytes
    from bbcodec.plan import chunk_spans

    rng = np.random.default_rng(band_rows)
    shapes = [(int(h), int(w), 3) for h, w in rng.integers(1, 40, (6, 2))] + [(8, 8, 3)] * 3
    images = [rng.integers(0, 256, s, np.uint8) for s in shapes]
    header = Header("m", bytes(4), {"band_rows": band_rows}, shapes)
    runs = [(s, 1) for s in shapes]
    chunks = []
    for span in chunk_spans(runs, (8, 8, 3), 4, band_rows):
        pixels = images[span.first][None] if span.rows is None else (
            images[span.first][None, slice(*span.rows)]
        )  # fmt: skip
        digest = pixels_digest(pixels, pixel_digest_bytes(pixels.size))
        words = rng.integers(1, 2**32, 3, dtype=np.uint32)
        chunks.append(Chunk(span.first, span.count, words, digest, span.band))
    assert len(chunks) == sum(len(image_bands(h, band_rows)) for h, _, _ in shapes)
    assert loads(dumps(header, chunks)) == (header, chunks)
    for chunk in chunks:
        assert header.band_shape(chunk.first, chunk.band)[0] <= band_rows
