"""The one place where a torch model meets the coding layer.

`ModelAdapter` turns a `LatentVariableModel` (``bbcodec.models.vae``) into the three codecs
bits-back coding needs, for a batch of B images of shape (H, W) or (H, W, 3):

- ``posterior(images)`` — Q(z̄|x) on the latent grid, one quantised Gaussian per latent;
- ``prior(B)``          — P(z̄), autoregressive over the D latent dimensions;
- ``likelihood(z̄)``     — P(x|z̄), autoregressive over the H·W pixels in raster order;
- ``direct_walk`` and ``direct_offsets(B)`` — a latent coded without bits back (a chunk's
  first image): chosen by the encoder near the posterior mean, in steps of the prior's
  conditional standard deviation, and coded as those step numbers.

Latent symbols are (B, D) int32 grid indices; images are (B, H, W[, 3]) uint8.

Determinism (`docs/design.md`, *Determinism*): with ``exact=True`` (the default) every
number handed to constriction comes from the model's integer twin
(`bbcodec.models.exact.IntegerModel`) and exact tables (`ExactGaussian`, the mixtures'
exact arithmetic), the same on every machine and device and however many steps one pass
computes — so the encoder, which knows every symbol, computes the prior's conditionals in
one pass and the pixels' parameters many steps per pass (`params_in_passes`), while the
decoder steps. With ``exact=False`` (files of format 2) the float model and
constriction's Gaussian: both sides then run the model's *step* functions — the encoder
on the true prefix (`all_params_by_steps`), the decoder on the prefix it has decoded —
with the same batch shape, so the floats are the same by construction on one machine.
Grid values are k·Δ with Δ a power of two, so they convert to float32 exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bbcodec.coding import (
    AutoRegressive,
    Bernoulli,
    Codec,
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    ExactGaussian,
    GaussianParams,
    LatentGrid,
    LogisticMixtureParams,
    LogisticMixtureRGBParams,
    Message,
    QuantizedGaussian,
    WindowedQuantizedGaussian,
    all_params_by_steps,
    coder_float64,
    concat_params,
)
from bbcodec.coding import fixed_point as fp


@dataclass(frozen=True, eq=False)
class Relayout:
    """A codec seen through a change of array layout (e.g. (B, D) ↔ (D, B))."""

    inner: Codec
    to_inner: Callable[[np.ndarray], np.ndarray]
    from_inner: Callable[[np.ndarray], np.ndarray]

    def push(self, message: Message, symbols: np.ndarray) -> None:
        self.inner.push(message, self.to_inner(np.asarray(symbols)))

    def pop(self, message: Message) -> np.ndarray:
        return self.from_inner(self.inner.pop(message))


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return coder_float64(t.detach().cpu().numpy())


#: A directly coded latent lies within this many steps of its prior mean, each dimension.
DIRECT_OFFSET_LIMIT = 8


class ModelAdapter:
    """Codecs for one model, one latent grid and one device.

    Args:
        model: a `LatentVariableModel` in eval mode.
        grid: the latent grid (Δ a power of two).
        device: torch device the model runs on.
        window_stds: the posterior's window in standard deviations (``None``: the grid).
        direct_stds: the step of a directly coded latent, in prior standard deviations.
        exact: code with the model's integer twin and exact tables (portable files).
        pixel_bins: 8-bit pixels' first-stage bins (1: one 256-way table; 16: a bin of
            16 values, then the value in it; exact only).
    """

    def __init__(
        self, model, grid: LatentGrid, device: str = "cpu", window_stds: float | None = None,
        direct_stds: float = 3.0, exact: bool = True, pixel_bins: int = 1,
    ):  # fmt: skip
        from bbcodec.models.exact import IntegerModel

        model = model.to(device).eval()
        self.model = IntegerModel(model, device) if exact else model
        self.exact = exact
        self.pixel_bins = pixel_bins
        self.grid = grid
        self.window_stds = window_stds
        self.direct_stds = direct_stds
        self.device = device
        config = model.config
        self.kind = config.kind
        self.latent_dim = config.total_latent_dim
        self.image_shape = config.image_shape
        self.n_mixtures = config.n_mixtures

    # ----- latents --------------------------------------------------------------------
    @torch.no_grad()
    def posterior(self, images: np.ndarray) -> QuantizedGaussian:
        """Q(z̄|x) for (B, H, W[, 3]) uint8 images; codes (B, D) grid symbols."""
        q = self.model.posterior(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
        mean, std = _to_numpy(q.mean), _to_numpy(q.std)
        if self.exact:
            return ExactGaussian(mean, std, self.grid, windowed=True)
        if self.window_stds is None:
            return QuantizedGaussian(mean, std, self.grid)
        return WindowedQuantizedGaussian(mean, std, self.grid, self.window_stds)

    def prior(self, batch: int) -> Relayout:
        """P(z̄) for a batch; codes (B, D) grid symbols, dimension by dimension."""

        if self.exact:  # numpy, carried from one dimension to the next: the same numbers
            steps = self.model.prior_steps()

            def step_params(prefix: np.ndarray, i: int) -> GaussianParams:
                g = steps.step(self.grid.to_values(prefix.T), i)
                return GaussianParams(g.mean, g.std)

        else:

            @torch.no_grad()
            def step_params(prefix: np.ndarray, i: int) -> GaussianParams:
                z = np.zeros((batch, self.latent_dim), dtype=np.float32)
                z[:, :i] = self.grid.to_values(prefix.T)
                g = self.model.prior_step(torch.from_numpy(z).to(self.device), i)
                return GaussianParams(_to_numpy(g.mean), _to_numpy(g.std))

        @torch.no_grad()
        def all_params(symbols: np.ndarray) -> GaussianParams:  # (D, B): one exact pass
            z = torch.from_numpy(self.grid.to_values(symbols.T).astype(np.float32))
            g = self.model.prior_conditionals(z.to(self.device))
            return GaussianParams(_to_numpy(g.mean.T).ravel(), _to_numpy(g.std.T).ravel())

        codec = AutoRegressive(
            lambda p: self._gaussian(p.means, p.stds, self.grid, group_size=batch),
            all_params if self.exact else all_params_by_steps(step_params),
            step_params, self.latent_dim, (batch,),
        )  # fmt: skip
        return Relayout(codec, lambda s: s.T, lambda s: np.ascontiguousarray(s.T))

    def direct_offsets(self, batch: int) -> QuantizedGaussian:
        """The code of (B, D) direct-latent step numbers k in ±`DIRECT_OFFSET_LIMIT`: k has
        the mass of [(k − ½)·s, (k + ½)·s] under N(0, 1), s = ``direct_stds``."""
        shape = (batch, self.latent_dim)
        steps = LatentGrid(self.direct_stds, DIRECT_OFFSET_LIMIT)
        # One group per image: a chunk's direct images may be pushed together, popped apart.
        return self._gaussian(np.zeros(shape), np.ones(shape), steps, group_size=self.latent_dim)

    def _gaussian(self, means: np.ndarray, stds: np.ndarray, grid: LatentGrid, group_size=None):
        """The quantised Gaussian of a prior: exact tables (coded in groups of
        ``group_size`` symbols, `ExactGaussian`), or constriction's."""
        if self.exact:
            return ExactGaussian(means, stds, grid, group_size=group_size)
        return QuantizedGaussian(means, stds, grid)

    @torch.no_grad()
    def direct_walk(
        self, *, toward: np.ndarray | None = None, offsets: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One directly coded latent, dimension by dimension along the prior.

        Dimension i is the prior's conditional mean μ_i plus k_i·s·σ_i (σ_i its std,
        s = ``direct_stds``), rounded onto the grid; the grid value is what later
        dimensions are conditioned on. The encoder passes ``toward`` (the posterior mean,
        (1, D) latent units) and gets the k nearest it; the decoder passes the ``offsets``
        k (1, D) it popped. Both sides run the prior's step function on a batch of one,
        as the prior codec does, so they compute the same grid symbols.

        Returns:
            (offsets k, grid symbols), each (1, D) int32.
        """
        known = offsets if offsets is not None else toward
        if known is None or known.shape != (1, self.latent_dim):
            raise ValueError(f"direct_walk needs one latent of {self.latent_dim} dimensions")
        z = np.zeros((1, self.latent_dim), dtype=np.float32)
        steps = np.zeros((1, self.latent_dim), dtype=np.int32)
        symbols = np.zeros((1, self.latent_dim), dtype=np.int32)
        for i in range(self.latent_dim):
            g = self.model.prior_step(torch.from_numpy(z).to(self.device), i)
            mean, std = _to_numpy(g.mean), _to_numpy(g.std) * self.direct_stds
            if offsets is None:
                k = np.rint((toward[:, i] - mean) / std)
                steps[:, i] = np.clip(k, -DIRECT_OFFSET_LIMIT, DIRECT_OFFSET_LIMIT)
            else:
                steps[:, i] = offsets[:, i]
            value = np.rint((mean + steps[:, i] * std) / self.grid.step)
            symbols[:, i] = np.clip(value, -self.grid.n_half, self.grid.n_half)
            z[:, i] = self.grid.to_values(symbols[:, i])
        return steps, symbols

    def prior_mean_symbols(self) -> np.ndarray:
        """The prior's mean walk z̄*: each dimension the prior's conditional mean given the
        ones before, rounded onto the grid (`direct_walk` with zero offsets); the latent of
        every tile without bits back (``tile_latents="prior-mean"``). (1, D) int32 symbols."""
        return self.direct_walk(offsets=np.zeros((1, self.latent_dim), dtype=np.int32))[1]

    # ----- pixels ---------------------------------------------------------------------
    def _pixel_leaf(self, params: Any, groups: int | Sequence[int]) -> Codec:
        if self.kind == "binary":
            return Bernoulli(params)
        how = {"group_size": groups, "exact": self.exact, "pixel_bins": self.pixel_bins}
        if self.kind == "grey":
            return DiscretizedLogisticMixture(*params, **how)
        return DiscretizedLogisticMixtureRGB(*params, **how)

    def _pixel_params(self, raw: torch.Tensor) -> Any:
        """(B, P) head parameters → the leaf's parameter container (float64; activation
        integers of the integer twin when exact)."""
        p = _to_numpy(raw)
        k = self.n_mixtures
        if self.kind == "binary" and self.exact:
            return fp.from_fixed(fp.fine_sigmoid_table()(p[:, 0]), fp.FINE_BITS)
        if self.kind == "binary":
            return 1.0 / (1.0 + np.exp(-p[:, 0]))
        if self.kind == "grey":
            return LogisticMixtureParams(p[:, :k], p[:, k : 2 * k], p[:, 2 * k :])
        b = p.shape[0]
        means, log_scales, coeffs = (
            p[:, s : s + 3 * k].reshape(b, 3, k) for s in (k, 4 * k, 7 * k)
        )
        return LogisticMixtureRGBParams(p[:, :k], means, log_scales, coeffs)

    def pixel_codec(self, raw: torch.Tensor, steps: Sequence[int] | None = None) -> Codec:
        """The codec of n pixels coded side by side, from their (n, P) head parameters:
        symbols (n,), or (n, 3) for RGB (R of all n, then G, then B). ``steps``: the rows
        of each of several consecutive steps (summing to n), coded one step after the
        other as the steps' own codecs code them (`StepPushes`)."""
        groups = raw.shape[0] if steps is None else steps
        return self._pixel_leaf(self._pixel_params(raw), groups)

    def likelihood(self, latents: np.ndarray) -> Relayout | Wavefront:
        """P(x|z̄) for (B, D) grid symbols; codes (B, H, W[, 3]) uint8 images pixel by
        pixel: in raster order, or, on the exact path with a local decoder, a wavefront
        (`Wavefront`) that takes the pixels of a step side by side."""
        batch = latents.shape[0]
        z = torch.from_numpy(self.grid.to_values(latents).astype(np.float32)).to(self.device)
        if self.exact and self.model.decoder.row is None:
            return Wavefront(self, z)
        state: dict[str, Any] = {}

        @torch.no_grad()
        def step_params(prefix: np.ndarray, t: int) -> Any:
            if t == 0:  # every push or pop starts a fresh canvas
                state["stepper"] = self.model.pixel_stepper(z)
            else:
                last = torch.from_numpy(prefix[t - 1].astype(np.uint8)).to(self.device)
                state["stepper"].write(t - 1, last)
            return self._pixel_params(state["stepper"].params(t))

        height, width = self.image_shape[:2]
        step_shape = (batch,) + self.image_shape[2:]

        def to_steps(images: np.ndarray) -> np.ndarray:  # (B, H, W[, 3]) → (H·W, B[, 3])
            flat = images.reshape(batch, height * width, *self.image_shape[2:])
            return np.ascontiguousarray(np.swapaxes(flat, 0, 1))

        def from_steps(steps: np.ndarray) -> np.ndarray:
            images = np.swapaxes(steps, 0, 1).reshape(batch, *self.image_shape)
            return np.ascontiguousarray(images, dtype=np.uint8)

        @torch.no_grad()
        def all_params(steps: np.ndarray) -> Any:  # exact: a pass per image row
            stepper = self.model.pixel_stepper(z)
            stepper.write_all(torch.from_numpy(from_steps(steps)).to(self.device))
            rows = stepper.raster_rows()  # (B, W, P) each → step-major (W · B, P)
            return concat_params(
                [self._pixel_params(p.transpose(0, 1).flatten(0, 1)) for p in rows]
            )

        codec = AutoRegressive(
            lambda p: self._pixel_leaf(p, batch),
            all_params if self.exact else all_params_by_steps(step_params),
            step_params, height * width, step_shape,
        )  # fmt: skip
        return Relayout(codec, to_steps, from_steps)


def wavefront_positions(
    height: int, width: int, skew: int, t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the pixels of wavefront step t, each (n,) int64, rows ascending:
    pixel (i, j) is coded at step ``j + skew·i``; with ``skew`` = a local decoder's
    half-width + 1 every pixel's causal neighbourhood lies in earlier steps."""
    first_row = max(0, -(-(t - width + 1) // skew))
    rows = torch.arange(first_row, min(height - 1, t // skew) + 1)
    return rows, t - skew * rows


#: Most parameter rows (pixels × images) an exact encoder computes in one pass
#: (`params_in_passes`): about 15 MB per 128 activation channels of float64.
ENCODER_PASS_ROWS = 16384

Positions = tuple[torch.Tensor, torch.Tensor]


def params_in_passes(
    stepper, steps: Sequence[int], positions: Callable[[int], Positions],
    breaks: Container[int] = (),
) -> Iterator[tuple[Positions, torch.Tensor | None]]:  # fmt: skip
    """An encoder's pixel parameters of many wavefront steps, computed a pass of several
    steps at a time (exact arithmetic only: its integers do not depend on how many
    positions a pass takes, so they are what the decoder gets step by step).

    Args:
        stepper: a pixel stepper whose canvas holds the whole images (``write_all``).
        steps: the steps, in the order they are coded.
        positions: ``t → (rows, cols)`` of step t's pixels.
        breaks: steps that start a new pass: the caller sets latents there, after the
            earlier steps and before these.
    Yields:
        per step, in order: its positions and its (B, n, P) parameters (None if n is 0).
        A pass is computed when its first step is asked for, with at most
        `ENCODER_PASS_ROWS` rows unless one step has more.
    """
    batch = stepper.canvas.shape[0]
    steps = list(steps)
    start = 0
    while start < len(steps):
        block = [positions(steps[start])]
        rows_in_pass = batch * len(block[0][0])
        for t in steps[start + 1 :]:
            where = positions(t)
            if t in breaks or rows_in_pass + batch * len(where[0]) > ENCODER_PASS_ROWS:
                break
            block.append(where)
            rows_in_pass += batch * len(where[0])
        sizes = [len(rows) for rows, _ in block]
        params: Sequence[torch.Tensor | None] = [None] * len(block)
        if rows_in_pass:
            rows, cols = (torch.cat(parts) for parts in zip(*block))
            params = stepper.params_at(rows, cols).split(sizes, dim=1)
        for where, n, step_params in zip(block, sizes, params):
            yield where, step_params if n else None
        start += len(block)


class StepPushes:
    """An encoder's pixel steps, handed over last step first and pushed several at a time:
    one codec on the steps' concatenated parameters, step by step in the decoder's order
    (`ModelAdapter.pixel_codec` with ``steps``), writes what pushing each step's own codec
    writes, with one table computation and one coder call for many steps. Call ``flush``
    before anything else is pushed or popped (latents), and at the end.

    Args:
        adapter: the `ModelAdapter`.
        message: the message the steps go on.
    """

    def __init__(self, adapter: ModelAdapter, message: Message):
        self.adapter, self.message = adapter, message
        self._steps: list[tuple[torch.Tensor, np.ndarray]] = []
        self._rows = 0

    def add(self, params: torch.Tensor, pixels: np.ndarray) -> None:
        """One step, later than any not yet added: (n, P) parameters, (n[, 3]) values."""
        self._steps.append((params, pixels))
        self._rows += len(pixels)
        if self._rows >= ENCODER_PASS_ROWS:
            self.flush()

    def flush(self) -> None:
        """Push the steps added so far."""
        if not self._steps:
            return
        steps = self._steps[::-1]  # the decoder's order
        params = torch.cat([params for params, _ in steps])
        pixels = np.concatenate([pixels for _, pixels in steps])
        codec = self.adapter.pixel_codec(params, [len(step_pixels) for _, step_pixels in steps])
        codec.push(self.message, pixels)
        self._steps.clear()
        self._rows = 0


class Wavefront:
    """P(x|z̄) of B images, a local decoder's pixels in wavefront order (exact path).

    Step t codes the pixels (i, j) with ``j + skew·i = t`` of all B images side by side
    (position-major, image-minor: the layout the per-image rate split expects), so a
    28×28 image takes 136 steps instead of 784. The encoder writes the whole images
    first (a step reads the canvas only at its pixels' causal taps) and pushes steps last
    first; the decoder pops them in order, writing each step's pixels as it goes.

    Args:
        adapter: the `ModelAdapter` (exact, local decoder).
        z: (B, D) latent values.
    """

    def __init__(self, adapter: ModelAdapter, z: torch.Tensor):
        self.adapter, self.z = adapter, z
        self.height, self.width = adapter.image_shape[:2]
        self.skew = adapter.model.decoder.local.half_width + 1
        self.n_steps = self.width + self.skew * (self.height - 1)

    def _positions(self, t: int) -> Positions:
        return wavefront_positions(self.height, self.width, self.skew, t)

    @staticmethod
    def _position_major(params: torch.Tensor) -> torch.Tensor:
        """A step's (B, n, P) parameters → (n · B, P), position-major."""
        return params.transpose(0, 1).flatten(0, 1)

    def push(self, message: Message, images: np.ndarray) -> None:
        """Pushes (B, H, W[, 3]) uint8 images, last step first, their parameters computed
        a few steps at a time (`params_in_passes`) and pushed a few steps at a time
        (`StepPushes`)."""
        stepper = self.adapter.model.pixel_stepper(self.z)
        stepper.write_all(torch.from_numpy(np.ascontiguousarray(images)).to(self.adapter.device))
        steps = reversed(range(self.n_steps))
        pushes = StepPushes(self.adapter, message)
        for (rows, cols), params in params_in_passes(stepper, steps, self._positions):
            pixels = np.swapaxes(images[:, rows.numpy(), cols.numpy()], 0, 1)  # (n, B[, 3])
            pushes.add(self._position_major(params), pixels.reshape(-1, *pixels.shape[2:]))
        pushes.flush()

    def pop(self, message: Message) -> np.ndarray:
        """Pops (B, H, W[, 3]) uint8 images."""
        stepper = self.adapter.model.pixel_stepper(self.z)
        batch = self.z.shape[0]
        images = np.zeros((batch, *self.adapter.image_shape), dtype=np.uint8)
        for t in range(self.n_steps):
            rows, cols = self._positions(t)
            params = self._position_major(stepper.params_at(rows, cols))
            popped = self.adapter.pixel_codec(params).pop(message).astype(np.uint8)
            popped = popped.reshape(len(rows), batch, *images.shape[3:])
            pixels = np.ascontiguousarray(np.swapaxes(popped, 0, 1))  # (B, n[, 3])
            images[:, rows.numpy(), cols.numpy()] = pixels
            stepper.write_at(rows, cols, torch.from_numpy(pixels).to(self.adapter.device))
        return images
