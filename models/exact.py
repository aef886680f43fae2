"""The integer twin of a trained model: what the portable coding path computes with.

`IntegerModel` wraps a float `LatentVariableModel` and exposes the same coding interface
(``posterior``, ``prior_step``, ``pixel_stepper``, ``to_features``, ``decoder``) computed
with the fixed-point arithmetic of `bbcodec.coding.fixed_point`: every weight becomes an
integer (`ExactAffine`, an exact function of the float32 weights, so every machine derives
the same integers), every activation an integer, every nonlinearity a decimal-built table.
Its outputs are therefore the same, bit for bit, on any CPU, kernel, thread count or
device.

Outputs: Gaussians as exact float64 values (means in steps of 2**-12, standard deviations
in steps of 2**-24); pixel-head parameters as activation integers (float64), in the head
layout of `bbcodec.models.heads`, with the same constraints (`clamp_head`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bbcodec.coding import fixed_point as fp
from bbcodec.models import encoders, priors
from bbcodec.models.heads import MIN_LOG_SCALE
from bbcodec.models.pixelcnn import PixelStepper
from bbcodec.models.vae import Gaussian

DTYPE = torch.float64


@dataclass(frozen=True)
class ExactAffine:
    """A linear map or convolution on activation integers: ``x ⊛ W + b`` divided by
    ``2**shift`` and rounded half up (the half is folded into the bias).

    Attributes:
        weight: float64 integers, |w| < 2**WEIGHT_BITS: the float weights × 2**shift, in the
            float layer's shape ((out, in), (out, in, kh, kw) or, transposed, (in, out, ...)).
        bias: float64 integers (out,) in units of 2**-(FRAC_BITS + shift): the float bias,
            plus the rounding half ``2**(shift − 1)``.
        shift: log2 of the weights' scale (≥ 1).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    shift: int

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None, out_dim: int = 0, device="cpu"):
        """Quantise a float layer's (masked) weights and bias — an exact function of their
        float32 values.

        Args:
            out_dim: the weight's output axis (1 for transposed convolutions).
        Raises:
            ValueError: weights too large, or a worst-case sum that could reach 2**53.
        """
        w = weight.detach().to("cpu", DTYPE)
        largest = float(w.abs().max())
        exponent = math.frexp(largest)[1] if largest > 0 else 0  # largest < 2**exponent
        shift = fp.WEIGHT_BITS - 1 - exponent
        if shift < 1:
            raise ValueError(f"weights up to {largest:g} are too large for exact arithmetic")
        w_int = torch.round(w * 2.0**shift)
        out = w_int.shape[out_dim]
        b_int = torch.zeros(out, dtype=DTYPE)
        if bias is not None:
            b_int = torch.round(bias.detach().to("cpu", DTYPE) * 2.0 ** (shift + fp.FRAC_BITS))
        b_int += 2.0 ** (shift - 1)
        rows = w_int.abs().transpose(0, out_dim).reshape(out, -1).sum(1)
        worst = int(rows.max()) * fp.ACTIVATION_BOUND + int(b_int.abs().max())
        if worst >= fp.EXACT_LIMIT:
            raise ValueError(
                f"a layer of fan-in {w_int.numel() // out} could exceed 2**53 in exact arithmetic"
            )
        return cls(w_int.to(device), b_int.to(device), shift)

    @classmethod
    def of_layer(cls, layer, device="cpu", mask: torch.Tensor | None = None, out_dim: int = 0):
        weight = layer.weight if mask is None else layer.weight * mask
        return cls.of(weight, layer.bias, out_dim, device)

    def linear(self, x_fixed: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """(..., in) → (..., out), torch or numpy (the same integers)."""
        if isinstance(x_fixed, np.ndarray):
            weight, bias = self.numpy_weights
            return fp.floor_shift(x_fixed @ weight.T + bias, self.shift)
        return fp.floor_shift(F.linear(x_fixed, self.weight, self.bias), self.shift)

    @functools.cached_property
    def numpy_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The weight and bias as numpy arrays (for small layers, where numpy's per-call
        cost is a fraction of torch's)."""
        return self.weight.cpu().numpy(), self.bias.cpu().numpy()

    def conv1d(self, x_fixed: torch.Tensor, padding: int = 0) -> torch.Tensor:
        """(N, in, L) → (N, out, L')."""
        return fp.floor_shift(
            F.conv1d(x_fixed, self.weight, self.bias, padding=padding), self.shift
        )

    def conv2d(self, x_fixed: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
        """(N, in, H, W) → (N, out, H', W')."""
        acc = F.conv2d(x_fixed, self.weight, self.bias, stride=stride, padding=padding)
        return fp.floor_shift(acc, self.shift)

    def conv_transpose2d(self, x_fixed: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        """(N, in, H, W) → (N, out, H', W')."""
        acc = F.conv_transpose2d(x_fixed, self.weight, self.bias, stride=stride, padding=padding)
        return fp.floor_shift(acc, self.shift)


def pixels_fixed(kind: str, x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W[, 3]) → network input (N, C_in, H, W) as activation integers:
    exactly the float input (±1 for binary, ``(2v − 255)/255`` else) rounded to 2**-12."""
    if kind == "binary":
        fixed = (x.to(DTYPE) * 2 - 1) * fp.ONE
    else:
        table = torch.as_tensor(fp.PIXEL_FIXED, device=x.device)
        fixed = table[x.long()]
    return fixed.permute(0, 3, 1, 2) if kind == "rgb" else fixed.unsqueeze(1)


def _gaussian(out_fixed, min_log_std: float, max_log_std: float) -> Gaussian:
    """Head outputs (..., 2D) activation integers, torch or numpy → exact Gaussian."""
    half = out_fixed.shape[-1] // 2
    mean, log_std = out_fixed[..., :half], out_fixed[..., half:]
    std = fp.std_from_log(log_std, int(min_log_std), int(max_log_std))
    return Gaussian(fp.from_fixed(mean), std)


# ----- encoders, features, priors ---------------------------------------------------------


class _Sequence:
    """The linear layers of a float ``nn.Sequential`` of Linear and ELU, as `ExactAffine`
    layers with an ELU between them."""

    def __init__(self, sequential: torch.nn.Sequential, device):
        linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
        self.layers = [ExactAffine.of_layer(layer, device) for layer in linears]

    def linear(self, h: torch.Tensor) -> torch.Tensor:
        for n, layer in enumerate(self.layers):
            h = layer.linear(h)
            if n < len(self.layers) - 1:
                h = fp.elu(h)
        return h


class IntegerConvEncoder:
    """`bbcodec.models.encoders.ConvEncoder` in exact arithmetic."""

    def __init__(self, encoder: encoders.ConvEncoder, device):
        convs = [m for m in encoder.convs if isinstance(m, torch.nn.Conv2d)]
        self.convs = [(ExactAffine.of_layer(c, device), c.stride[0], c.padding[0]) for c in convs]
        self.fc = _Sequence(encoder.fc, device)

    def __call__(self, x_fixed: torch.Tensor) -> Gaussian:
        h = x_fixed
        for conv, stride, padding in self.convs:
            h = fp.elu(conv.conv2d(h, stride, padding))
        out = self.fc.linear(h.flatten(1))
        return _gaussian(out, encoders.MIN_LOG_STD, encoders.MAX_LOG_STD)


class IntegerAntiCausalEncoder:
    """`bbcodec.models.encoders.AntiCausalEncoder` in exact arithmetic."""

    def __init__(self, encoder: encoders.AntiCausalEncoder, device):
        self.encoder = encoder
        self.convs = [
            (ExactAffine.of_layer(c.conv, device), c.kernel_h, c.kernel_w) for c in encoder.convs
        ]
        self.fc = _Sequence(encoder.fc, device)

    def __call__(self, x_fixed: torch.Tensor) -> Gaussian:
        e = self.encoder
        h = x_fixed.flip(2)
        for conv, kernel_h, kernel_w in self.convs:
            h = fp.elu(conv.conv2d(F.pad(h, (kernel_w // 2, kernel_w // 2, kernel_h - 1, 0))))
        height = x_fixed.shape[2]
        rows = torch.tensor([height - 1 - t * e.band for t in range(e.n_steps)])
        per_step = h[:, :, rows].permute(0, 2, 1, 3).flatten(2)
        mean, std = _gaussian(self.fc.linear(per_step), encoders.MIN_LOG_STD, encoders.MAX_LOG_STD)
        return Gaussian(mean.flatten(1), std.flatten(1))


class IntegerMadePrior:
    """`bbcodec.models.priors.MadePrior` in exact arithmetic, on numpy arrays (a decoder
    steps it once per latent dimension on a few rows, where torch's per-call cost would
    dominate); ``step`` runs the full pass on the prefix (later entries zeroed) and reads
    column i, as the float prior does."""

    def __init__(self, prior: priors.MadePrior, device):
        self.hidden = [
            ExactAffine.of_layer(layer, device, layer.mask) for layer in prior.hidden_layers
        ]
        self.out = ExactAffine.of_layer(prior.out, device, prior.out.mask)

    def conditionals(self, z_fixed: np.ndarray) -> Gaussian:
        """p(z_i | z_<i) for every i, (N, D) each: column i the same numbers as ``step(z, i)``
        (a masked weight is an exact 0, so entries ≥ i add exact zeros to column i)."""
        h = z_fixed
        for layer in self.hidden:
            h = fp.elu(layer.linear(h))
        return _gaussian(
            self.out.linear(h), priors.MadePrior.MIN_LOG_STD, priors.MadePrior.MAX_LOG_STD
        )

    def step(self, z_prefix_fixed: np.ndarray, i: int) -> Gaussian:
        h = z_prefix_fixed.copy()
        h[:, i:] = 0.0
        mean, std = self.conditionals(h)
        return Gaussian(mean[:, i], std[:, i])


class IntegerLatentToFeatures:
    """`bbcodec.models.encoders.LatentToFeatures` in exact arithmetic: z (N, D) exact
    values → features (N, H, W, C) activation integers."""

    def __init__(self, net: encoders.LatentToFeatures, device):
        self.net = net
        self.fc = ExactAffine.of_layer(net.fc, device)
        ups = [m for m in net.up if not isinstance(m, torch.nn.ELU)]
        self.up = [
            (
                ExactAffine.of_layer(
                    m, device, out_dim=int(isinstance(m, torch.nn.ConvTranspose2d))
                ),
                m,
            )
            for m in ups
        ]
        self.project = None if net.project is None else ExactAffine.of_layer(net.project, device)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = self.fc.linear(to_fixed(z)).view(-1, n.channels, n.h4, n.w4)
        for layer, module in self.up:
            h = fp.elu(h)
            if isinstance(module, torch.nn.ConvTranspose2d):
                h = layer.conv_transpose2d(h, module.stride[0], module.padding[0])
            else:
                h = layer.conv2d(h, module.stride[0], module.padding[0])
        if self.project is not None:
            h = self.project.conv2d(fp.elu(h))
        return h.permute(0, 2, 3, 1).contiguous()


def to_fixed(values: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Values that are multiples of 2**-FRAC_BITS (latent grid points with a step of at
    least that) → activation integers, torch or numpy as given. Raises ValueError for any
    other value."""
    as_float64 = values.astype(np.float64) if isinstance(values, np.ndarray) else values.to(DTYPE)
    fixed = as_float64 * fp.ONE
    if not bool((fixed == fixed.round()).all()):
        raise ValueError(f"latent values must be multiples of 2**-{fp.FRAC_BITS}")
    return fixed.clip(-fp.ACTIVATION_BOUND, fp.ACTIVATION_BOUND)


# ----- the pixel decoder ------------------------------------------------------------------


class IntegerCausalConv:
    """`bbcodec.models.pixelcnn.CausalConv` read at given positions (its step form)."""

    def __init__(self, conv, device):
        self.rows_above, self.half_width = conv.rows_above, conv.half_width
        rows, cols = torch.nonzero(conv.mask, as_tuple=True)
        self.d_rows = (rows - conv.rows_above).to(device)
        self.d_cols = (cols - conv.half_width).to(device)
        self.affine = ExactAffine.of(conv.tap_weight(), conv.bias, device=device)

    def at(self, canvas, pad: tuple[int, int], rows, cols) -> torch.Tensor:
        """As `CausalConv.at`: (B · n, C_out) activation integers, position-minor."""
        top, side = pad
        patch = canvas[
            :, :, (top + rows)[:, None] + self.d_rows, (side + cols)[:, None] + self.d_cols
        ]
        return self.affine.linear(patch.transpose(1, 2).flatten(2).flatten(0, 1))


class IntegerRowContext:
    """`bbcodec.models.pixelcnn.RowContext`'s recurrence and outputs, exact."""

    def __init__(self, row, device):
        self.hidden = row.hidden
        self.embed = ExactAffine.of_layer(row.embed, device)
        self.update = ExactAffine.of_layer(row.update, device)
        self.out = ExactAffine.of_layer(row.out, device)
        self.left = IntegerCausalConv(row.left, device)

    def next_state(self, h: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """h (B, hidden, W), row (B, C_in, W) activation integers → the next state."""
        embedded = self.embed.conv1d(row, padding=1)
        pooled = fp.mean_last(h + embedded).expand_as(h)
        gate, cand = self.update.conv1d(torch.cat([h, embedded, pooled], 1), padding=1).chunk(2, 1)
        gate = fp.sigmoid(gate)
        return fp.rescale(gate * h + (fp.ONE - gate) * fp.tanh(cand), fp.FRAC_BITS)


class IntegerPixelDecoder:
    """`bbcodec.models.pixelcnn.PixelDecoder`'s step path in exact arithmetic."""

    def __init__(self, decoder, device):
        self.kind, self.image_hw, self.n_mixtures = (
            decoder.kind,
            decoder.image_hw,
            decoder.n_mixtures,
        )
        self.local = IntegerCausalConv(decoder.local, device)
        self.row = None if decoder.row is None else IntegerRowContext(decoder.row, device)
        self.blocks = [
            (ExactAffine.of_layer(b.inner, device), ExactAffine.of_layer(b.outer, device))
            for b in decoder.blocks
        ]
        self.head = ExactAffine.of_layer(decoder.head, device)
        self.receptive_field = decoder.receptive_field

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """(n, C) hidden activations → (n, P) constrained head parameters (integers)."""
        for inner, outer in self.blocks:
            a, b = inner.linear(fp.elu(hidden)).chunk(2, -1)
            hidden = (hidden + outer.linear(fp.mul(fp.tanh(a), fp.sigmoid(b)))).clamp_(
                -fp.ACTIVATION_BOUND, fp.ACTIVATION_BOUND
            )
        return clamp_head(self.kind, self.head.linear(fp.elu(hidden)), self.n_mixtures)

    def stepper(self, features_fixed: torch.Tensor) -> IntegerPixelStepper:
        return IntegerPixelStepper(self, features_fixed)


def clamp_head(kind: str, params_fixed: torch.Tensor, n_mixtures: int) -> torch.Tensor:
    """`bbcodec.models.heads.clamp_params` on activation integers: the log-scale floor,
    tanh (a table) on the RGB coefficients."""
    if kind == "binary":
        return params_fixed
    k = n_mixtures
    floor = MIN_LOG_SCALE * fp.ONE
    if kind == "grey":
        logits, means, log_scales = params_fixed.split(k, dim=-1)
        return torch.cat([logits, means, log_scales.clamp(min=floor)], dim=-1)
    logits, means, log_scales, coeffs = params_fixed.split([k, 3 * k, 3 * k, 3 * k], dim=-1)
    return torch.cat([logits, means, log_scales.clamp(min=floor), fp.tanh(coeffs)], -1)


class IntegerPixelStepper(PixelStepper):
    """`bbcodec.models.pixelcnn.PixelStepper` in exact arithmetic: the same steps, canvas
    and row state as activation integers (float64), parameters as activation integers.
    ``features`` may be float32: activation integers (|a| ≤ 2**23) are exact in it."""

    canvas_dtype = DTYPE

    def _prepare(self) -> None:
        pass  # the taps' integer weights are the decoder's (`IntegerCausalConv`)

    def _local_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.decoder.local.at(self.canvas, self.pad, rows, cols)

    def _left_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.decoder.row.left.at(self.canvas, self.pad, rows, cols)

    def _row_out(self) -> torch.Tensor:
        return self.decoder.row.out.linear(self.row_state.transpose(1, 2))

    def _finish(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder.finish(hidden)

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels_fixed(self.decoder.kind, pixels)

    @torch.no_grad()
    def raster_rows(self) -> Iterator[torch.Tensor]:
        """A row-context decoder's parameters of every pixel, one image row at a time,
        (B, W, P) each, for an encoder whose canvas holds the whole images (`write_all`):
        the integers ``params(t)`` gives pixel by pixel (exact arithmetic does not depend
        on how many positions a pass takes), at the cost of one pass per row."""
        height, width = self.image_hw
        batch = self.canvas.shape[0]
        cols = torch.arange(width)
        for i in range(height):
            rows = torch.full((width,), i)
            self._enter_row(i)
            features = self.features[:, i].flatten(0, 1).to(self.canvas.dtype)
            hidden = self._local_at(rows, cols) + features + self.row_above.flatten(0, 1)
            yield self._finish(hidden + self._left_at(rows, cols)).view(batch, width, -1)


# ----- the model ----------------------------------------------------------------------------


def _as_torch(g: Gaussian) -> Gaussian:
    """A numpy Gaussian as CPU tensors (no copy)."""
    return Gaussian(torch.from_numpy(g.mean), torch.from_numpy(g.std))


class IntegerModel:
    """The integer twin of a `LatentVariableModel`, with its coding interface.

    Args:
        model: the float model (its weights are read once, here).
        device: where the twin computes (results are the same on every device).
    """

    def __init__(self, model, device="cpu"):
        self.config = c = model.config
        self.device = device
        if c.encoder == "conv":
            self.encoder = IntegerConvEncoder(model.encoder, device)
        else:
            self.encoder = IntegerAntiCausalEncoder(model.encoder, device)
        self.prior = IntegerMadePrior(model.coding_prior, "cpu")  # numpy: see the class
        self.features = IntegerLatentToFeatures(model.to_features, device)
        self.decoder = IntegerPixelDecoder(model.decoder, device)

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> Gaussian:
        """q(z|x) for uint8 images x (N, H, W[, 3]): exact float64 (N, D) each."""
        return self.encoder(pixels_fixed(self.config.kind, x.to(self.device)))

    @torch.no_grad()
    def prior_step(self, z_prefix: torch.Tensor, i: int) -> Gaussian:
        """p(z_i | z_<i) for (N, D) latent values on the grid (entries ≥ i ignored)."""
        return _as_torch(self.prior.step(to_fixed(z_prefix.cpu().numpy()), i))

    @torch.no_grad()
    def prior_conditionals(self, z: torch.Tensor) -> Gaussian:
        """p(z_i | z_<i) for every i of (N, D) latent values on the grid, in one pass:
        the same numbers as ``prior_step`` dimension by dimension (an encoder's shortcut)."""
        return _as_torch(self.prior.conditionals(to_fixed(z.cpu().numpy())))

    @torch.no_grad()
    def to_features(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(z.to(self.device))

    def pixel_stepper(self, z: torch.Tensor) -> IntegerPixelStepper:
        return self.decoder.stepper(self.to_features(z))
