"""Images of any size: one image, one pixel wavefront, one latent per model-sized tile.

A model trained on tiles of ``(th, tw)`` pixels (say CIFAR-10's 32×32) codes a photo of
any ``(H, W)`` as follows.

- **Pixels** are one image: a local decoder's causal neighbourhood crosses tile borders,
  so the photo has no seams in the pixel context, and only the photo's own pixels are
  coded (nothing is padded). They go in *wavefront* order: pixel (i, j) is coded at step
  ``j + skew·i`` with ``skew = half_width + 1``, so every pixel's neighbourhood (rows
  above up to ``half_width`` columns to the right, and the pixel to its left) is coded at
  earlier steps. All pixels of a step are coded side by side: a 768×512 photo takes
  2,812 steps, not 393,216.
- **Latents**: tile ``(a, b)`` covers rows ``a·th ..`` and columns ``b·tw ..`` (tiles at
  the right and bottom edges may be smaller). Its latent z̄_T conditions the pixels of
  that tile only (the model's feature map of z̄_T, cropped); its posterior sees the
  tile's pixels, padded to ``(th, tw)`` by repeating the edge for the encoder network.
- **Bits back per tile**, interleaved with the pixel steps. Decoder, for each step t:
  pop z̄_T with P(z̄) for the tiles whose first pixel is at step t; pop step t's pixels
  with P(x | z̄, earlier pixels); push z̄_T with Q(z̄_T | x_T) for the tiles whose last
  pixel is at step t (← bits-back step), then scramble the head (`Message.mix_head`).
  The encoder runs exactly that backwards (t from last to first, each pop a push and
  each push a pop), so every posterior pop is paid for by the pixels pushed before it —
  except the first: on an empty stack (``initial_bits="direct"``) the encoder's first
  group of tiles (the bottom right) is coded directly, its latents chosen by the encoder
  (`ModelAdapter.direct_walk`) and pushed as step numbers at their first step, and so are
  the next groups while the stack cannot pay for their pop.
- **Or no latents coded** (``tile_latents="prior-mean"``, `TILE_LATENTS`): every tile's
  latent is the prior's conditional mean, dimension by dimension, on the grid
  (`ModelAdapter.prior_mean_symbols`), which both sides compute, and only the
  pixels are coded, with P(x | z̄*). A photo model whose decoder has learnt to ignore its
  latent (posterior collapse) codes at −log P(x | z̄*) instead of the −ELBO, which adds
  the KL of every tile, and decodes without the latents' sequential prior steps and the
  posterior networks. `bbcodec.zoo.ModelInfo.tile_latents` records a model's choice,
  measured (`benchmarks/tile_latents.py`).

Determinism: every tile's feature map is computed alone (batch of one), priors and
posteriors are computed for the same groups of tiles on both sides, and a pixel step
reads the canvas only at the positions it may see (`PixelStepper`), so both sides hand
constriction the same floats. On the exact path the encoder computes the pixels of all
the steps between two of its latent pops in one pass (`params_in_passes`): the same
integers as the decoder's step-by-step ones.

Memory: a tile's feature map is written when its latent is known and handed back to the
system once its last pixel is coded (`TiledImage._release`), so only the tiles the
wavefront crosses hold features (a few per tile row), not the whole image; the pixel
canvas (the image in the model's input numbers) remains per pixel. A photo is cut into
bands, each coded as a `TiledImage` of its own (`bbcodec.plan.image_bands`), so a coder
holds one band's canvas.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch

from bbcodec.codec.adapter import ModelAdapter, Positions, StepPushes, params_in_passes
from bbcodec.codec.batched import MAX_DIRECT, Coded
from bbcodec.coding import Message, MessageUnderflowError
from bbcodec.errors import DecodeError, ImageKindError
from bbcodec.models.tiles import padded_tiles, tile_boxes
from bbcodec.plan import TILE_LATENTS


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Wavefront steps of one ``(height, width)`` image and the steps its tiles span.

    Attributes:
        height, width: image size in pixels.
        tile_h, tile_w: model tile size.
        skew: wavefront skew (pixel (i, j) is coded at step ``j + skew·i``).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    skew: int

    @property
    def n_steps(self) -> int:
        return self.width + self.skew * (self.height - 1)

    def positions(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of step t's pixels, each (n,) int64, rows ascending."""
        first_row = max(0, -(-(t - self.width + 1) // self.skew))
        rows = torch.arange(first_row, min(self.height - 1, t // self.skew) + 1)
        return rows, t - self.skew * rows

    def tiles_by_step(self) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """({step: tiles whose first pixel is coded then}, {step: tiles whose last is})."""
        starts, ends = defaultdict(list), defaultdict(list)
        boxes = tile_boxes(self.height, self.width, self.tile_h, self.tile_w)
        for index, (r0, r1, c0, c1) in enumerate(boxes):
            starts[c0 + self.skew * r0].append(index)
            ends[c1 - 1 + self.skew * (r1 - 1)].append(index)
        return dict(starts), dict(ends)


class TiledImage:
    """Codes one image of any size with a local-decoder model (see the module docstring).

    Args:
        adapter: the model's `ModelAdapter`; its decoder must have a local receptive field.
        shape: ``(H, W)`` or ``(H, W, 3)`` of the image.
        tile_latents: one of `TILE_LATENTS`.
    """

    def __init__(
        self, adapter: ModelAdapter, shape: tuple[int, ...], tile_latents: str = "bits-back"
    ):
        decoder = adapter.model.decoder
        if decoder.row is not None:
            raise ImageKindError(
                "a full-causal-past decoder (row context) codes only its own image size; "
                "images of other sizes need a model with a local decoder (a VLAE without "
                "row context)"
            )
        if tuple(shape[2:]) != tuple(adapter.image_shape[2:]):
            raise ImageKindError(f"image of shape {shape} for a {adapter.kind} model")
        if tile_latents not in TILE_LATENTS:
            raise ValueError(f"tile_latents must be one of {TILE_LATENTS}, got {tile_latents!r}")
        self.adapter = adapter
        self.shape = tuple(shape)
        self.bits_back = tile_latents == "bits-back"
        self._mean_features: torch.Tensor | None = None  # (1, th, tw, C) of z̄*, when needed
        tile_h, tile_w = adapter.image_shape[:2]
        self.plan = TilePlan(shape[0], shape[1], tile_h, tile_w, decoder.local.half_width + 1)
        self.tiles = tile_boxes(shape[0], shape[1], tile_h, tile_w)
        self.starts, self.ends = self.plan.tiles_by_step()
        self._pages: mmap.mmap | None = None
        self._frontier: dict[int, int] = {}  # tile row's first row → bytes released (`_release`)
        self.stepper = adapter.model.decoder.stepper(self._zero_features(adapter, shape))
        self.latents = np.zeros((len(self.tiles), adapter.latent_dim), dtype=np.int32)
        self.offsets = np.zeros((len(self.tiles), adapter.latent_dim), dtype=np.int32)

    def _zero_features(self, adapter: ModelAdapter, shape: tuple[int, ...]) -> torch.Tensor:
        """The (1, H, W, C) float32 feature map, zero, allocated lazily on the CPU.

        It is the largest per-pixel state of a tiled image (4·C bytes a pixel, 384 for
        vlae-cifar10), and a tile's region is written only when the tile's latent is known.
        An anonymous memory map is zero pages that take no memory until written, in 4 KiB
        pages (no transparent huge pages: a 2 MiB page would make one written tile row
        resident across the whole width), so a decoder holds only the tiles reached so far:
        a short stream whose header claims a large image runs out of bits (a typed error)
        having touched a few tiles, not the whole map. `torch.zeros` would write it all.
        Each row is padded to whole pages (``W`` rounded up to ``pad`` columns), so the
        pages of a row's coded part can be handed back (`_release`).
        """
        channels = adapter.model.config.channels
        dims = (1, shape[0], shape[1], channels)
        if torch.device(adapter.device).type != "cpu":
            return torch.zeros(dims, device=adapter.device)
        pad = mmap.PAGESIZE // math.gcd(mmap.PAGESIZE, 4 * channels)
        padded = (1, shape[0], -(-shape[1] // pad) * pad, channels)
        self._pages = pages = mmap.mmap(-1, 4 * math.prod(padded), flags=mmap.MAP_PRIVATE)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            pages.madvise(mmap.MADV_NOHUGEPAGE)
        features = np.frombuffer(pages, dtype=np.float32).reshape(padded)
        return torch.from_numpy(features)[:, :, : shape[1]]

    def _release(self, tiles: list[int], backwards: bool) -> None:
        """Hand back the feature pages of tiles whose pixels are all coded: no step reads
        a tile's features outside its own pixels.

        The tiles of one tile row finish in column order — left to right when decoding,
        right to left when encoding (``backwards``) — so each tile row's rows are done up
        to a frontier, and the pages wholly on the done side of it go back (a page that
        straddles the frontier waits for the next tile).
        """
        pages = self._pages
        if pages is None or not tiles or not hasattr(mmap, "MADV_DONTNEED"):
            return
        _, row_stride, column_stride, _ = (4 * s for s in self.stepper.features.stride())
        page = mmap.PAGESIZE
        for index in tiles:
            r0, r1, c0, c1 = self.tiles[index]
            if backwards:  # done: [c0, W); released so far: [previous, W)
                done = -(-c0 * column_stride // page) * page
                previous = self._frontier.get(r0, row_stride)
                start, stop, self._frontier[r0] = done, previous, min(done, previous)
            else:  # done: [0, c1); released so far: [0, previous)
                done = c1 * column_stride // page * page
                previous = self._frontier.get(r0, 0)
                start, stop, self._frontier[r0] = previous, done, max(done, previous)
            if stop > start:
                for row in range(r0, r1):  # a row starts on a page (padded, above)
                    pages.madvise(mmap.MADV_DONTNEED, row * row_stride + start, stop - start)

    # ----- pieces shared by both directions --------------------------------------------
    def _tile_pixels(self, image: np.ndarray, tiles: list[int]) -> np.ndarray:
        tile_h, tile_w = self.adapter.image_shape[:2]
        return padded_tiles(image, [self.tiles[i] for i in tiles], tile_h, tile_w)

    @torch.no_grad()
    def _set_latents(self, tiles: list[int], symbols: np.ndarray) -> None:
        """Store the tiles' latent symbols (k, D) and write their feature maps, one at a time."""
        a = self.adapter
        values = torch.from_numpy(a.grid.to_values(symbols).astype(np.float32)).to(a.device)
        for row, index in enumerate(tiles):
            self.latents[index] = symbols[row]
            r0, r1, c0, c1 = self.tiles[index]
            tile_features = a.model.to_features(values[row : row + 1])
            self.stepper.features[:, r0:r1, c0:c1] = tile_features[:, : r1 - r0, : c1 - c0]

    @torch.no_grad()
    def _set_prior_mean(self, tiles: list[int]) -> None:
        """Write the feature map of the prior's mean latent z̄* (``tile_latents=
        "prior-mean"``) into ``tiles``; it is computed once, as a decoded latent's would be."""
        a = self.adapter
        if self._mean_features is None:
            symbols = a.prior_mean_symbols()
            values = torch.from_numpy(a.grid.to_values(symbols).astype(np.float32)).to(a.device)
            self._mean_features = a.model.to_features(values)
        for index in tiles:
            r0, r1, c0, c1 = self.tiles[index]
            self.stepper.features[:, r0:r1, c0:c1] = self._mean_features[:, : r1 - r0, : c1 - c0]

    def _pixel_codec(self, rows: torch.Tensor, cols: torch.Tensor):
        return self.adapter.pixel_codec(self.stepper.params_at(rows, cols)[0])

    def _encoder_steps(self) -> Iterator[tuple[Positions, torch.Tensor | None]]:
        """Each step's positions and (1, n, P) pixel parameters (None if n is 0), last step
        first, each computed when asked for: on the exact path in passes of many steps
        that end where the encoder pops latents (`params_in_passes`); on the float path a
        step at a time, as the decoder computes them."""
        steps = reversed(range(self.plan.n_steps))
        positions = self.plan.positions
        if self.adapter.exact:
            return params_in_passes(self.stepper, steps, positions, breaks=self.ends)
        return (
            (where, self.stepper.params_at(*where) if len(where[0]) else None)
            for where in map(positions, steps)
        )

    # ----- the two directions -----------------------------------------------------------
    def direct_tiles(self, n_direct: int) -> set[int]:
        """The tiles of the first ``n_direct`` groups the encoder reaches (ends, last first)."""
        return {i for t in sorted(self.ends, reverse=True)[:n_direct] for i in self.ends[t]}

    def _push_latents(self, message: Message, tiles: list[int], direct: set[int]) -> None:
        """Push the latents of ``tiles`` (they start at this step): bits-back ones with the
        prior, then direct ones as their step numbers."""
        a = self.adapter
        bits_back = [i for i in tiles if i not in direct]
        if bits_back:
            a.prior(len(bits_back)).push(message, self.latents[bits_back])
        chosen = [i for i in tiles if i in direct]
        if chosen:
            a.direct_offsets(len(chosen)).push(message, self.offsets[chosen])

    def _pop_latents(self, message: Message, tiles: list[int], direct: set[int]) -> None:
        """The mirror of `_push_latents`: set the latents of ``tiles``."""
        a = self.adapter
        chosen = [i for i in tiles if i in direct]
        if chosen:
            offsets = a.direct_offsets(len(chosen)).pop(message)
            for row, index in enumerate(chosen):
                self._set_latents([index], a.direct_walk(offsets=offsets[row : row + 1])[1])
        bits_back = [i for i in tiles if i not in direct]
        if bits_back:
            self._set_latents(bits_back, a.prior(len(bits_back)).pop(message))

    def _choose_direct(self, image: np.ndarray, tiles: list[int]) -> None:
        """Pick the latents of directly coded ``tiles`` (`ModelAdapter.direct_walk`)."""
        a = self.adapter
        means = a.posterior(self._tile_pixels(image, tiles)).means.reshape(len(tiles), -1)
        for row, index in enumerate(tiles):
            offsets, symbols = a.direct_walk(toward=means[row : row + 1])
            self.offsets[index] = offsets[0]
            self._set_latents([index], symbols)

    def push(self, message: Message, image: np.ndarray, min_direct: int | None) -> int:
        """Encode ``image`` onto ``message``; returns the number of tile groups coded
        directly (see `bbcodec.codec.batched.BatchedLayout.push` for ``min_direct``).

        Without bits back (``tile_latents="prior-mean"``) no latent is coded: nothing is
        popped, and no tile group is coded directly (returns 0).

        Raises:
            MessageUnderflowError: the stack cannot pay for a posterior pop of a group that
                may not be coded directly; the message is then unusable.
        """
        a = self.adapter
        self._frontier.clear()  # an encoder that restarts writes every tile again
        self.stepper.write_all(torch.from_numpy(np.array(image)[None]).to(a.device))
        pixel_steps = self._encoder_steps()
        pushes = StepPushes(a, message)
        direct: set[int] = set()
        n_direct = group = 0
        for t in reversed(range(self.plan.n_steps)):
            ending = self.ends.get(t)
            if ending and not self.bits_back:
                self._set_prior_mean(ending)
            elif ending:
                chosen = min_direct is not None and group < min_direct
                if not chosen:
                    message.mix_head()
                    try:
                        latents = a.posterior(self._tile_pixels(image, ending)).pop(message)
                        self._set_latents(ending, latents)
                    except MessageUnderflowError:
                        message.mix_head()  # leave the message as it was
                        if min_direct is None or group != n_direct or group >= MAX_DIRECT:
                            raise
                        chosen = True
                if chosen:
                    self._choose_direct(image, ending)
                    direct.update(ending)
                    n_direct += 1
                group += 1
            (rows, cols), params = next(pixel_steps)
            if params is not None:  # a step is empty only in images narrower than the skew
                pushes.add(params[0], image[rows.numpy(), cols.numpy()])
            starting = self.starts.get(t)
            if starting or t - 1 in self.ends or t == 0:  # latents next, or the end
                pushes.flush()
            if starting and self.bits_back:
                self._push_latents(message, starting, direct)
            if starting:
                self._release(starting, backwards=True)  # these tiles are done
        return n_direct

    def pop(self, message: Message, n_direct: int) -> np.ndarray:
        """Decode the image from ``message`` (restoring the bits the encoder popped), the
        first ``n_direct`` tile groups of the encoder having been coded directly (without
        bits back, ``n_direct`` is unused)."""
        a = self.adapter
        direct = self.direct_tiles(n_direct) if self.bits_back else set()
        bits_back_ends = [t for t in self.ends if not direct.issuperset(self.ends[t])]
        last_bits_back = max(bits_back_ends, default=-1) if self.bits_back else -1
        image = np.zeros(self.shape, dtype=np.uint8)
        message.underflow_guard = last_bits_back >= 0
        for t in range(self.plan.n_steps):
            starting = self.starts.get(t)
            if starting and not self.bits_back:
                self._set_prior_mean(starting)
            elif starting:
                self._pop_latents(message, starting, direct)
            rows, cols = self.plan.positions(t)
            if len(rows):
                pixels = self._pixel_codec(rows, cols).pop(message).astype(np.uint8)
                image[rows.numpy(), cols.numpy()] = pixels
                self.stepper.write_at(rows, cols, torch.from_numpy(pixels)[None].to(a.device))
            ending = self.ends.get(t)
            if ending:
                self._release(ending, backwards=False)
            if ending and self.bits_back and not direct.issuperset(ending):
                a.posterior(self._tile_pixels(image, ending)).push(message, self.latents[ending])
                message.mix_head()
                if t == last_bits_back:  # the rest was pushed before the encoder's first pop
                    message.underflow_guard = False
        return image


class TiledLayout:
    """A chunk of one image of another shape than the model's, coded as a `TiledImage`.

    Args:
        adapter: the model's `ModelAdapter`.
        shape: ``(H, W)`` or ``(H, W, 3)`` of the image.
        tile_latents: one of `TILE_LATENTS`.
    """

    codes_batches = False

    def __init__(
        self, adapter: ModelAdapter, shape: tuple[int, ...], tile_latents: str = "bits-back"
    ):
        self.tiled = TiledImage(adapter, shape, tile_latents)

    def direct_limit(self, n_images: int) -> int:
        """The most tile groups the image may code directly: 1 without bits back, whose
        chunk trailer is then empty (no group is coded directly)."""
        if not self.tiled.bits_back:
            return 1
        return min(len(self.tiled.ends), MAX_DIRECT)

    def push(
        self, message: Message, images: np.ndarray, meter, report: Callable[[int], None],
        min_direct: int | None,
    ) -> Coded:  # fmt: skip
        """Encode the (1, H, W[, 3]) image (see `TiledImage.push`)."""
        meter.first, meter.batch = 0, 1
        n_direct = self.tiled.push(message, images[0], min_direct)
        report(1)
        return Coded(n_direct, (1,), (message.num_bits(),))

    def pop(
        self, message: Message, coded: Coded, out: np.ndarray, report: Callable[[int], None]
    ) -> None:
        """Decode the image into ``out`` (1, H, W[, 3])."""
        if len(out) != 1 or coded.batches != (1,):
            shape = self.tiled.shape
            raise DecodeError(f"a chunk of {len(out)} images of shape {shape}: expected 1")
        out[0] = self.tiled.pop(message, coded.n_direct)
        report(1)
