"""PixelCNN decoder p(x | z) with a one-pixel step path for coding.

    x (N,H,W[,3]) ──► masked conv (k×k, type A) ─────────┐
                  └─► [row context: gated recurrence over ├─► + ──► gated 1×1 blocks ──► head
                       all rows above + causal conv over  │                            (N,H,W,P)
                       the whole current row to the left] │
    z ──► conditioning network (model's own) ─────────────┘ features (N,H,W,C)

The **receptive field** is a hyperparameter: ``kernel_size`` k gives the local causal
neighbourhood (k//2 rows above, k//2 columns either side, k//2 pixels to the left) — the
VLAE's "lossy" decoder (Chen et al. 2017). ``row_context=True`` adds the full causal past
(every pixel above or to the left), the strong decoder of the δ-VAE (Razavi et al. 2019).
RGB pixels are predicted as a whole (PixelCNN++'s linear R→G→B dependence lives in the head).

Determinism decision (`docs/design.md`, *Determinism*): the codec computes every pixel's
coding distribution through the **step path on both sides** (`PixelStepper`): the encoder
runs the same per-pixel computation, with the same batch shape and the same canvas
contents, as the decoder, so the parameters handed to the entropy coder are bit-identical
by construction. The all-at-once path (`PixelDecoder.forward`, convolutions over the whole
image) is used for training and for the ELBO; it equals the step path to float rounding
(tested), not bit for bit. A step costs a few small matrix products on a (B, ·) batch —
never a full-image pass. The integer twin's stepper (`bbcodec.models.exact`; numpy on the
CPU, whatever the device) gives the same integers however many positions a call takes, so
there the encoder takes many steps per call (``params_at`` on many positions,
``raster_rows``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bbcodec.models.heads import clamp_params, param_channels

IN_CHANNELS = {"binary": 1, "grey": 1, "rgb": 3}


def pixels_to_input(kind: str, x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N,H,W) or (N,H,W,3) → network input (N, C_in, H, W) in [-1, 1]."""
    if kind == "binary":
        return (x.float() * 2.0 - 1.0).unsqueeze(1)
    xf = x.float() / 127.5 - 1.0
    return xf.permute(0, 3, 1, 2) if kind == "rgb" else xf.unsqueeze(1)


class CausalConv(nn.Module):
    """A type-A masked convolution: output (i, j) sees rows i−r..i−1 (columns j−c..j+c)
    and row i columns j−c..j−1 — never pixel (i, j) itself or anything after it.

    Args:
        in_ch, out_ch: channels.
        rows_above: r, rows of the past above the current one.
        half_width: c, columns to either side (and pixels to the left on the current row).
    """

    def __init__(self, in_ch: int, out_ch: int, rows_above: int, half_width: int):
        super().__init__()
        self.rows_above, self.half_width = rows_above, half_width
        kh, kw = rows_above + 1, 2 * half_width + 1
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kh, kw) / (in_ch * kh * kw) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        mask = torch.ones(kh, kw)
        mask[rows_above, half_width:] = 0.0  # current pixel and everything right of it
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, C_out, H, W)."""
        r, c = self.rows_above, self.half_width
        padded = F.pad(x, (c, c, r, 0))
        return F.conv2d(padded, self.masked_weight(), self.bias)

    def taps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets (Δrow, Δcol) of the unmasked positions, each (m,), Δrow ∈ [−r, 0]."""
        rows, cols = torch.nonzero(self.mask, as_tuple=True)
        return rows - self.rows_above, cols - self.half_width

    def tap_weight(self) -> torch.Tensor:
        """(C_out, C_in · m) weights of the unmasked positions, in `taps` order."""
        rows, cols = torch.nonzero(self.mask, as_tuple=True)
        return self.weight[:, :, rows, cols].flatten(1)

    def at(
        self,
        canvas: torch.Tensor,
        pad: tuple[int, int],
        rows: torch.Tensor,
        cols: torch.Tensor,
        tap_weight: torch.Tensor,
    ) -> torch.Tensor:
        """Outputs at n positions, reading only their causal neighbourhoods.

        Args:
            canvas: (B, C_in, H + pad_top, W + 2·pad_side) with the image at
                ``[pad_top:, pad_side:-pad_side]`` and zeros elsewhere.
            pad: (pad_top, pad_side), each ≥ this layer's reach.
            rows, cols: (n,) int64 pixel positions in the image.
            tap_weight: ``tap_weight()``, computed once by the caller.
        Returns:
            (B · n, C_out), position-minor.
        """
        top, side = pad
        d_rows, d_cols = (t.to(canvas.device) for t in self.taps())
        patch = canvas[:, :, (top + rows)[:, None] + d_rows, (side + cols)[:, None] + d_cols]
        # (B, C_in, n, m) → (B · n, C_in · m), matching tap_weight's (C_in, m) order.
        return F.linear(patch.transpose(1, 2).flatten(2).flatten(0, 1), tap_weight, self.bias)


class RowContext(nn.Module):
    """Full causal past above the current row, and the whole current row to the left.

    A gated recurrence runs down the rows: h_0 = 0, h_{i+1} = g ⊙ h_i + (1 − g) ⊙ tanh(u),
    where (g, u) come from a width-3 convolution over [h_i, e_i = embed(row i), mean over
    the width of h_i + e_i] — the mean makes every column of every earlier row reachable,
    the row just above included (pooling h_i alone would leave row i's far columns out of
    h_{i+1}). A causal convolution over the current row reaches all pixels to the left.
    """

    def __init__(self, in_ch: int, hidden: int, out_ch: int, width: int):
        super().__init__()
        self.embed = nn.Conv1d(in_ch, hidden, 3, padding=1)
        self.update = nn.Conv1d(3 * hidden, 2 * hidden, 3, padding=1)
        self.out = nn.Linear(hidden, out_ch)
        self.left = CausalConv(in_ch, out_ch, rows_above=0, half_width=width - 1)
        self.hidden = hidden

    def next_state(self, h: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """h: (B, hidden, W) state for row i; row: (B, C_in, W) pixels of row i → state i+1."""
        embedded = self.embed(row)
        pooled = (h + embedded).mean(dim=2, keepdim=True).expand_as(h)
        gate, cand = self.update(torch.cat([h, embedded, pooled], 1)).chunk(2, 1)
        gate = torch.sigmoid(gate)
        return gate * h + (1.0 - gate) * torch.tanh(cand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, H, W, out_ch)."""
        n, _, height, width = x.shape
        h = x.new_zeros(n, self.hidden, width)
        states = [h]
        for i in range(height - 1):
            h = self.next_state(h, x[:, :, i])
            states.append(h)
        above = self.out(torch.stack(states, 2).permute(0, 2, 3, 1))
        return above + self.left(x).permute(0, 2, 3, 1)


class GatedBlock(nn.Module):
    """Residual gated 1×1 block on channels-last features: x + W·(tanh(a) ⊙ σ(b))."""

    def __init__(self, channels: int):
        super().__init__()
        self.inner = nn.Linear(channels, 2 * channels)
        self.outer = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Functional calls: this runs once per pixel per block when coding.
        a, b = F.linear(F.elu(x), self.inner.weight, self.inner.bias).chunk(2, -1)
        return x + F.linear(torch.tanh(a) * torch.sigmoid(b), self.outer.weight, self.outer.bias)


class PixelDecoder(nn.Module):
    """Autoregressive pixel model conditioned on a feature map of z.

    Args:
        kind: ``binary``, ``grey`` or ``rgb``.
        image_hw: (H, W).
        channels: width of the per-pixel network.
        kernel_size: k (odd) of the local causal neighbourhood.
        n_blocks: gated 1×1 blocks.
        n_mixtures: logistic mixture components (8-bit kinds).
        row_context: add the full causal past (δ-VAE decoder).
    """

    def __init__(
        self,
        kind: str,
        image_hw: tuple[int, int],
        channels: int = 64,
        kernel_size: int = 7,
        n_blocks: int = 4,
        n_mixtures: int = 5,
        row_context: bool = False,
    ):
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and ≥ 3, got {kernel_size}")
        self.kind, self.image_hw, self.n_mixtures = kind, tuple(image_hw), n_mixtures
        in_ch = IN_CHANNELS[kind]
        half = kernel_size // 2
        self.local = CausalConv(in_ch, channels, rows_above=half, half_width=half)
        self.row = RowContext(in_ch, channels // 2, channels, image_hw[1]) if row_context else None
        self.blocks = nn.ModuleList(GatedBlock(channels) for _ in range(n_blocks))
        self.head = nn.Linear(channels, param_channels(kind, n_mixtures))

    @property
    def receptive_field(self) -> str:
        """Human-readable receptive field."""
        if self.row is not None:
            return "full causal past"
        k = 2 * self.local.half_width + 1
        return f"local {k}x{k} causal ({self.local.rows_above} rows above)"

    def _finish(self, hidden: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden = block.forward(hidden)
        head = F.linear(F.elu(hidden), self.head.weight, self.head.bias)
        return clamp_params(self.kind, head, self.n_mixtures)

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """All pixels at once (training, ELBO).

        Args:
            x: (N, H, W[, 3]) uint8 images.
            features: (N, H, W, C) conditioning features from z.
        Returns:
            (N, H, W, P) constrained head parameters.
        """
        inp = pixels_to_input(self.kind, x)
        hidden = self.local(inp).permute(0, 2, 3, 1) + features
        if self.row is not None:
            hidden = hidden + self.row(inp)
        return self._finish(hidden)

    def stepper(self, features: torch.Tensor) -> PixelStepper:
        """A one-pixel-at-a-time evaluator for a batch with these features (N, H, W, C)."""
        return PixelStepper(self, features)


class PixelStepper:
    """Per-pixel conditionals for coding, on both the encoder's and the decoder's side.

    A step takes n positions whose causal neighbourhoods are already written:
    ``params_at(rows, cols)`` gives their parameters and ``write_at(rows, cols, pixels)``
    records their values. Raster order is ``params(t)`` / ``write(t, pixels)`` for
    t = i·W + j; a local decoder may also take many positions per step (a wavefront, see
    `bbcodec.codec.tiled`), the row context only raster steps. A step reads the canvas only
    at the unmasked taps of its positions, so what the canvas holds elsewhere does not
    matter (an encoder may write the whole image first) and both sides, making the same
    calls, get the same parameters bit for bit. Each step is a few (B · n, ·) matrix products.

    Args:
        decoder: the `PixelDecoder`.
        features: (B, H, W, C) conditioning features; a local decoder takes any H, W (the
            caller may fill ``features`` region by region before stepping there).
    """

    #: dtype and device of the canvas and row state (None: the features').
    canvas_dtype: torch.dtype | None = None
    canvas_device: str | None = None

    def __init__(self, decoder: PixelDecoder, features: torch.Tensor):
        self.decoder = decoder
        self.features = features
        batch, height, width = features.shape[:3]
        if decoder.row is not None and (height, width) != tuple(decoder.image_hw):
            raise ValueError(
                f"a full-causal-past decoder codes {decoder.image_hw} images, not {(height, width)}"
            )
        self.image_hw = (height, width)
        top = decoder.local.rows_above
        side = max(decoder.local.half_width, width - 1 if decoder.row is not None else 0)
        self.pad = (top, side)
        in_ch = IN_CHANNELS[decoder.kind]
        on = {
            "dtype": self.canvas_dtype or features.dtype,
            "device": self.canvas_device or features.device,
        }
        self.canvas = torch.zeros(batch, in_ch, height + top, width + 2 * side, **on)
        self.row_state = None
        self.row_above = None
        if decoder.row is not None:
            self.row_state = torch.zeros(batch, decoder.row.hidden, width, **on)
        self._prepare()

    # ----- the arithmetic: float here, exact in `bbcodec.models.exact.IntegerPixelStepper` --
    def _prepare(self) -> None:
        """Cache the unmasked taps' weights for the steps."""
        self.local_weight = self.decoder.local.tap_weight().detach()
        if self.decoder.row is not None:
            self.left_weight = self.decoder.row.left.tap_weight().detach()

    def _local_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.decoder.local.at(self.canvas, self.pad, rows, cols, self.local_weight)

    def _left_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.decoder.row.left.at(self.canvas, self.pad, rows, cols, self.left_weight)

    def _row_out(self) -> torch.Tensor:
        return self.decoder.row.out(self.row_state.transpose(1, 2))  # (B, W, C)

    def _finish(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder._finish(hidden)

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels_to_input(self.decoder.kind, pixels)

    # ----- the steps ---------------------------------------------------------------------
    @torch.no_grad()
    def params_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(B, n, P) constrained head parameters at n positions (local decoders only)."""
        if self.decoder.row is not None:
            raise ValueError("a full-causal-past decoder steps in raster order (params(t))")
        return self._local_params(rows, cols)

    def _local_params(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        batch = self.canvas.shape[0]
        features = self.features[:, rows, cols].flatten(0, 1).to(self.canvas.dtype)
        return self._finish(self._local_at(rows, cols) + features).view(batch, len(rows), -1)

    @torch.no_grad()
    def params(self, t: int) -> torch.Tensor:
        """(B, P) constrained head parameters of pixel t (raster order) for every image."""
        dec = self.decoder
        width = self.image_hw[1]
        i, j = divmod(t, width)
        at = torch.tensor([i]), torch.tensor([j])
        if dec.row is None:
            return self._local_params(*at)[:, 0]
        if j == 0:
            self._enter_row(i)
        hidden = self._local_at(*at) + self.features[:, i, j].to(self.canvas.dtype)
        return self._finish(hidden + self.row_above[:, j] + self._left_at(*at))

    def _enter_row(self, i: int) -> None:
        """Row context: advance the row state past row i − 1 (written) and read it out."""
        if i > 0:
            top, side = self.pad
            row = self.canvas[:, :, top + i - 1, side : side + self.image_hw[1]]
            self.row_state = self.decoder.row.next_state(self.row_state, row)
        self.row_above = self._row_out()

    def write_all(self, images: torch.Tensor) -> None:
        """Record whole images (B, H, W[, 3]) uint8 (an encoder, before its steps)."""
        height, width = self.image_hw
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        self.write_at(rows.flatten(), cols.flatten(), images.flatten(1, 2))

    def write_at(self, rows: torch.Tensor, cols: torch.Tensor, pixels: torch.Tensor) -> None:
        """Record the values at n positions: (B, n) uint8, or (B, n, 3) for RGB."""
        top, side = self.pad
        as_image = self._input(pixels.unsqueeze(2))  # (B, C_in, n, 1)
        self.canvas[:, :, top + rows, side + cols] = as_image[..., 0]

    def write(self, t: int, pixels: torch.Tensor) -> None:
        """Record pixel t's values (raster order): (B,) uint8, or (B, 3) for RGB."""
        i, j = divmod(t, self.image_hw[1])
        self.write_at(torch.tensor([i]), torch.tensor([j]), pixels.unsqueeze(1))
