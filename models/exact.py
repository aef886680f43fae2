"""The integer twin of a trained model: what the portable coding path computes with.

`IntegerModel` wraps a float `LatentVariableModel` and exposes the same coding interface
(``posterior``, ``prior_step``, ``pixel_stepper``, ``to_features``, ``decoder``) computed
with the fixed-point arithmetic of `bbcodec.coding.fixed_point`: every weight becomes an
integer (`ExactAffine`, an exact function of the float32 weights, so every machine derives
the same integers), every activation an integer, every nonlinearity a decimal-built table.
Its outputs are therefore the same, bit for bit, on any CPU, kernel, thread count or
device.

Where it computes: the encoders and the feature network in torch, on the twin's device;
the prior and the pixel decoder's steps, which a decoder runs many times on a few rows,
on the CPU in numpy (the pixel steps' matrix products in torch, on the same memory), where
a call costs a fraction of torch's. Exact arithmetic gives the same integers either way.

Outputs: Gaussians as exact float64 values (means in steps of 2**-12, standard deviations
in steps of 2**-24); pixel-head parameters as activation integers (float64, on the CPU),
in the head layout of `bbcodec.models.heads`, with the same constraints (`_head_bounds`).
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
        if isinstance(x_fixed, np.ndarray):  # a torch product on the numpy memory (numpy's
            # BLAS threads are nobody's setting; they made a small product ~10x slower)
            weight, bias = self.cpu_weights
            acc = F.linear(torch.from_numpy(x_fixed), weight, bias).numpy()
            return fp.floor_shift(acc, self.shift)
        return fp.floor_shift(F.linear(x_fixed, self.weight, self.bias), self.shift)

    @functools.cached_property
    def cpu_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias on the CPU (for numpy inputs)."""
        return self.weight.cpu(), self.bias.cpu()

    @functools.cached_property
    def numpy_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The weight and bias as numpy arrays."""
        return tuple(tensor.numpy() for tensor in self.cpu_weights)

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


class IntegerPriorSteps:
    """`IntegerMadePrior.step` for i = 0, 1, … in turn, as a decoder pops a latent: the
    same numbers, at a fraction of the cost. The first layer's sums are carried from one
    call to the next, adding only the columns not yet added (integer products and sums
    below 2**53: exact in any order, so the same as the full product on the prefix with
    later entries zeroed), and the output layer computes only the two rows of dimension i
    (its mean and log-std)."""

    def __init__(self, prior: IntegerMadePrior):
        self.prior = prior
        first = prior.hidden[0]
        weight, bias = first.numpy_weights
        self._first_weight = np.ascontiguousarray(weight.T)  # (D, hidden)
        self._first_bias, self._first_shift = bias, first.shift
        weight, bias = prior.out.cpu_weights
        half = weight.shape[0] // 2
        pairs = torch.stack([torch.arange(half), torch.arange(half) + half], 1)  # (D, 2)
        self._out_weights, self._out_biases = weight[pairs], bias[pairs]  # (D, 2, hidden), (D, 2)
        self._sums: np.ndarray | None = None  # (B, hidden): bias + the added columns
        self._added = 0  # columns of the prefix in ``_sums``

    def step(self, z_prefix: np.ndarray, i: int) -> Gaussian:
        """p(z_i | z_<i) for (B, ≥ i) latent values on the grid (entries ≥ i ignored):
        exact float64 (B,) each, as `IntegerModel.prior_step`. A call for an earlier
        dimension than the last one's successor, or another batch size, starts again."""
        batch = z_prefix.shape[0]
        if self._sums is None or i < self._added or self._sums.shape[0] != batch:
            self._sums, self._added = np.tile(self._first_bias, (batch, 1)), 0
        for column in range(self._added, i):  # one column a call, as a decoder steps
            self._sums += to_fixed(z_prefix[:, column, None]) * self._first_weight[column]
        self._added = i
        h = fp.elu(fp.floor_shift(self._sums, self._first_shift))
        for layer in self.prior.hidden[1:]:
            h = fp.elu(layer.linear(h))
        sums = F.linear(torch.from_numpy(h), self._out_weights[i], self._out_biases[i])
        mean_log_std = fp.floor_shift(sums.numpy(), self.prior.out.shift)  # (B, 2)
        mean, std = _gaussian(
            mean_log_std, priors.MadePrior.MIN_LOG_STD, priors.MadePrior.MAX_LOG_STD
        )
        return Gaussian(mean[:, 0], std[:, 0])


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
#
# A decoder runs the pixel network once per wavefront step, on a few dozen positions, so
# the step path runs on the CPU in numpy (whose calls cost a fraction of torch's; the
# matrix products are torch's, on the same memory) on position-major (N, C) arrays of
# N = B · n positions (image-major; the products' faster layout for a few dozen rows), in
# the fewest operations that give the integers of `ExactAffine.linear` and `fp` exactly:
#
# - a layer multiplies by its weights × 2**-shift and adds its bias × 2**-shift
#   (`_StepLayer`): scaling by a power of two is exact, so every product and partial sum
#   is the integer one × 2**-shift, and the floor of the result is `floor_shift`'s;
# - tables are read from their start (`fp.Table.from_low`) with ``np.take(mode="clip")``,
#   which clamps the index. A layer output that only indexes a table has the table's start
#   subtracted in its bias; it needs no ±ACTIVATION_BOUND clamp (the table's is within it)
#   and no floor (truncation differs from it only below 0, where the clamp gives entry 0);
# - hidden activations are held from the elu table's start (h − L) and index it as they are;
# - a ±ACTIVATION_BOUND clamp that the bounds of its inputs make a no-op is left out.


#: Most positions a pixel step computes at once: an encoder's pass of thousands runs in
#: pieces of this many, whose (·, C) arrays stay in the CPU's caches.
STEP_COLUMNS = 512


class _StepLayer:
    """An `ExactAffine` as the pixel steps apply it: ``x @ weight + bias`` for position-major
    inputs x (N, in), with ``weight`` = Wᵀ · 2**-shift (in, out) and ``bias`` =
    (b − offset · 2**shift) · 2**-shift (out,), float64 tensors. Every product and partial
    sum is an integer below 2**53 times 2**-shift, exact in float64 in any order: the
    result is exactly ``(W x + b) / 2**shift − offset``, and its floor
    `ExactAffine.linear`'s before the clamp.

    Args:
        affine: the layer.
        input_bound: the largest |input| (activation integers).
        offset: integers subtracted from the outputs, (out,) or one for all.
    Raises:
        ValueError: a worst-case sum that could reach 2**53.
    """

    def __init__(
        self,
        affine: ExactAffine,
        input_bound: float = fp.ACTIVATION_BOUND,
        offset: float | np.ndarray = 0.0,
    ):
        weight, bias = affine.numpy_weights
        bias = bias - np.asarray(offset, dtype=np.float64) * 2.0**affine.shift
        worst = float((np.abs(weight).sum(1) * input_bound + np.abs(bias)).max())
        if worst >= fp.EXACT_LIMIT:
            raise ValueError("a pixel step's layer could exceed 2**53 in exact arithmetic")
        scale = 2.0**-affine.shift
        self.weight = torch.from_numpy(np.ascontiguousarray(weight.T) * scale)
        self.bias = torch.from_numpy(bias * scale)
        #: Whether ``floor(x @ weight + bias)`` can leave ±ACTIVATION_BOUND (else
        #: `__call__` leaves the clamp out).
        self.clamps = worst * scale > fp.ACTIVATION_BOUND

    def sums(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, in) → (N, out): ``(W x + b) / 2**shift − offset``, exact (into ``out``,
        C-contiguous, if given). A torch product on the numpy arrays' memory: it runs
        with the coder's torch threads (numpy's BLAS threads are nobody's setting)."""
        if out is None:
            out = np.empty((x.shape[0], self.weight.shape[1]))
        torch.addmm(self.bias, torch.from_numpy(x), self.weight, out=torch.from_numpy(out))
        return out

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, in) → (N, out) activation integers: `ExactAffine.linear` (no offset)."""
        y = self.sums(x, out)
        np.floor(y, out=y)
        if self.clamps:
            fp.clamp(y, -fp.ACTIVATION_BOUND, fp.ACTIVATION_BOUND, out=y)
        return y


class IntegerCausalConv:
    """`bbcodec.models.pixelcnn.CausalConv` read at given positions (its step form)."""

    def __init__(self, conv):
        self.rows_above, self.half_width = conv.rows_above, conv.half_width
        self.d_rows, self.d_cols = (t.numpy() for t in conv.taps())
        affine = ExactAffine.of(conv.tap_weight(), conv.bias)
        self.layer = _StepLayer(affine, input_bound=fp.ONE)  # pixels are within ±1

    def at(self, canvas: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """As `CausalConv.at`, position-major: (N, C_out) activation integers.

        Args:
            canvas: the stepper's (B, C_in, H', W') canvas (C-contiguous).
            positions: (N,) int64, each position's flat index in ``canvas``, channel 0.
        """
        _, channels, height, width = canvas.shape
        plane = np.arange(channels)[:, None] * (height * width)
        taps = (plane + self.d_rows * width + self.d_cols).ravel()  # tap_weight's order
        x = canvas.reshape(-1).take(positions[:, None] + taps, mode="clip")
        return self.layer(x)


class IntegerRowContext:
    """`bbcodec.models.pixelcnn.RowContext`'s recurrence (torch, once per row) and outputs,
    exact, on the CPU."""

    def __init__(self, row):
        self.hidden = row.hidden
        self.embed = ExactAffine.of_layer(row.embed)
        self.update = ExactAffine.of_layer(row.update)
        self.out = ExactAffine.of_layer(row.out)
        self.left = IntegerCausalConv(row.left)

    def next_state(self, h: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """h (B, hidden, W), row (B, C_in, W) activation integers → the next state."""
        embedded = self.embed.conv1d(row, padding=1)
        pooled = fp.mean_last(h + embedded).expand_as(h)
        gate, cand = self.update.conv1d(torch.cat([h, embedded, pooled], 1), padding=1).chunk(2, 1)
        gate = fp.sigmoid(gate)
        return fp.rescale(gate * h + (fp.ONE - gate) * fp.tanh(cand), fp.FRAC_BITS)

    def above(self, h: torch.Tensor) -> np.ndarray:
        """The state h (B, hidden, W) read out: (B, W, C) activation integers."""
        return self.out.linear(h.numpy().transpose(0, 2, 1))


class IntegerPixelDecoder:
    """`bbcodec.models.pixelcnn.PixelDecoder`'s step path in exact arithmetic, numpy on the
    CPU (see above). Its hidden activations are held from the elu table's start: h − L,
    L = ``elu_low`` (the table's first point)."""

    def __init__(self, decoder):
        self.kind, self.image_hw, self.n_mixtures = (
            decoder.kind,
            decoder.image_hw,
            decoder.n_mixtures,
        )
        self.receptive_field = decoder.receptive_field
        self.local = IntegerCausalConv(decoder.local)
        self.row = None if decoder.row is None else IntegerRowContext(decoder.row)
        elu, tanh, sigmoid = fp.elu_negative_table(), fp.tanh_table(), fp.sigmoid_table()
        if max(np.abs(tanh.values).max(), np.abs(sigmoid.values).max()) > fp.ONE:
            raise ValueError("a gate's table leaves ±1")  # the outer layers' input bound
        self.elu_low = elu.low
        self._elu_values = elu.from_low() + elu.low  # e^x − 1 + L at x = L + index
        self._tanh_values = tanh.from_low()
        self._sigmoid_values = sigmoid.from_low() * 2.0**-fp.FRAC_BITS  # tanh · this: `fp.mul`
        channels = decoder.head.in_features
        gate_starts = np.repeat([tanh.low, sigmoid.low], channels)  # the inner layer's a, b
        self.blocks = [
            (
                _StepLayer(ExactAffine.of_layer(b.inner), offset=gate_starts),
                _StepLayer(ExactAffine.of_layer(b.outer), input_bound=fp.ONE),  # tanh · σ
            )
            for b in decoder.blocks
        ]
        self.head_low, self.head_high, self.coeffs = _head_bounds(self.kind, self.n_mixtures, tanh)
        self.param_channels = decoder.head.out_features
        head_starts = np.zeros(self.param_channels)
        if self.coeffs is not None:
            head_starts[self.coeffs] = tanh.low
        self.head = _StepLayer(ExactAffine.of_layer(decoder.head), offset=head_starts)

    def finish(self, hidden: np.ndarray) -> np.ndarray:
        """(N, C) hidden activations (from the elu table's start; overwritten) → (N, P)
        constrained head parameters, activation integers."""
        n, c = hidden.shape
        elu, gated, sigma, scratch = (np.empty((n, c)) for _ in range(4))
        sums, index = np.empty((n, 2 * c)), np.empty((n, 2 * c), dtype=np.int64)
        bound = fp.ACTIVATION_BOUND
        for inner, outer in self.blocks:
            self._elu(hidden, elu, index[:, :c], scratch)
            inner.sums(elu, sums)  # a, b from their tables' starts
            np.copyto(index, sums, casting="unsafe")
            self._tanh_values.take(index[:, :c], mode="clip", out=gated)
            self._sigmoid_values.take(index[:, c:], mode="clip", out=sigma)
            gated *= sigma  # tanh(a) · σ(b), rounded half up: within ±1
            gated += 0.5
            np.floor(gated, out=gated)
            hidden += outer(gated, scratch)
            fp.clamp(hidden, -bound - self.elu_low, bound - self.elu_low, out=hidden)
        self._elu(hidden, elu, index[:, :c], scratch)
        head = self.head.sums(elu)
        np.floor(head, out=head)
        fp.clamp(head, self.head_low, self.head_high, out=head)
        if self.coeffs is not None:  # tanh, from the table's start
            coeffs = head[:, self.coeffs].astype(np.int64)
            head[:, self.coeffs] = self._tanh_values.take(coeffs, mode="clip")
        return head

    def _elu(
        self, hidden: np.ndarray, out: np.ndarray, index: np.ndarray, scratch: np.ndarray
    ) -> None:
        """`fp.elu` of (N, C) hidden activations held from the table's start, into ``out``:
        ``max(h, 0) + (e^x − 1 at x = clamp(h, L, 0))``; index, scratch: (N, C) work space."""
        np.copyto(index, hidden, casting="unsafe")
        self._elu_values.take(index, mode="clip", out=out)
        out += np.maximum(hidden, -self.elu_low, out=scratch)

    def stepper(self, features_fixed: torch.Tensor) -> IntegerPixelStepper:
        return IntegerPixelStepper(self, features_fixed)


def _head_bounds(
    kind: str, n_mixtures: int, tanh: fp.Table
) -> tuple[np.ndarray, np.ndarray, slice | None]:
    """`bbcodec.models.heads.clamp_params` on activation integers as a clamp of each head
    output (its lows and highs, (P,) each): ±ACTIVATION_BOUND, the log-scale floor, and
    for the RGB coefficients (rows ``coeffs``, or None) their tanh table's index range
    (the head subtracts the table's start from them; the caller reads the table)."""
    k = n_mixtures
    parts = {"binary": [1], "grey": [k, k, k], "rgb": [k, 3 * k, 3 * k, 3 * k]}[kind]
    low = np.full(sum(parts), -float(fp.ACTIVATION_BOUND))
    high = np.full(sum(parts), float(fp.ACTIVATION_BOUND))
    coeffs = None
    if kind != "binary":
        low[sum(parts[:2]) : sum(parts[:3])] = MIN_LOG_SCALE * fp.ONE
    if kind == "rgb":
        coeffs = slice(sum(parts[:3]), sum(parts))
        low[coeffs], high[coeffs] = 0.0, tanh.high - tanh.low
    return low, high, coeffs


class IntegerPixelStepper(PixelStepper):
    """`bbcodec.models.pixelcnn.PixelStepper` in exact arithmetic: the same steps, with the
    canvas and row state as activation integers (float64) on the CPU and the step path in
    numpy (`IntegerPixelDecoder`); parameters are activation integers, CPU tensors.
    ``features`` may be float32 (activation integers, |a| ≤ 2**23, are exact in it) and on
    any device (a step reads its positions' features from it)."""

    canvas_dtype = DTYPE
    canvas_device = "cpu"

    def _prepare(self) -> None:
        self._canvas = self.canvas.numpy()  # the same memory

    def _local_params(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self._params_at(rows.cpu().numpy(), cols.cpu().numpy())

    def params(self, t: int) -> torch.Tensor:
        i, j = divmod(t, self.image_hw[1])
        if self.decoder.row is not None and j == 0:
            self._enter_row(i)
        return self._params_at(np.array([i]), np.array([j]))[:, 0]

    def raster_rows(self) -> Iterator[torch.Tensor]:
        """A row-context decoder's parameters of every pixel, one image row at a time,
        (B, W, P) each, for an encoder whose canvas holds the whole images (`write_all`):
        the integers ``params(t)`` gives pixel by pixel (exact arithmetic does not depend
        on how many positions a pass takes), at the cost of one pass per row."""
        height, width = self.image_hw
        cols = np.arange(width)
        for i in range(height):
            self._enter_row(i)
            yield self._params_at(np.full(width, i), cols)

    def _row_out(self) -> np.ndarray:
        return self.decoder.row.above(self.row_state)  # (B, W, C)

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels_fixed(self.decoder.kind, pixels.cpu())  # for the CPU canvas

    def write_at(self, rows: torch.Tensor, cols: torch.Tensor, pixels: torch.Tensor) -> None:
        """As `PixelStepper.write_at` (the same canvas values, `pixels_fixed`'s), in numpy
        on the canvas's memory: a decoder writes a step's few dozen pixels at a time."""
        top, side = self.pad
        as_image = self._input(pixels.unsqueeze(2)).numpy()  # (B, C_in, n, 1)
        self._canvas[:, :, top + rows.numpy(), side + cols.numpy()] = as_image[..., 0]

    def _params_at(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """(B, n, P) parameters at n positions (int64 (n,) each); with a row context, on
        the row entered last (`_enter_row`)."""
        dec = self.decoder
        batch, channels, height, width = self._canvas.shape
        top, side = self.pad
        image = np.arange(batch)[:, None] * (channels * height * width)
        positions = (image + (top + rows) * width + side + cols).ravel()
        # The terms added to the local convolution, from the elu table's start.
        terms = np.subtract(self._features_at(rows, cols), dec.elu_low, dtype=np.float64)
        if dec.row is not None:
            terms += self.row_above[:, cols].reshape(len(terms), -1)
        params = np.empty((positions.size, dec.param_channels))
        for start in range(0, positions.size, STEP_COLUMNS):
            part = slice(start, start + STEP_COLUMNS)
            hidden = dec.local.at(self._canvas, positions[part])
            hidden += terms[part]
            if dec.row is not None:
                hidden += dec.row.left.at(self._canvas, positions[part])
            params[part] = dec.finish(hidden)
        return torch.from_numpy(params.reshape(batch, len(rows), -1))

    def _features_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(B · n, C) the features at n positions, on the CPU (float32 or float64, as the
        features are)."""
        features = self.features
        if features.device.type == "cpu":
            at = features.numpy()[:, rows, cols]
        else:
            at = features[:, torch.from_numpy(rows), torch.from_numpy(cols)].cpu().numpy()
        return at.reshape(-1, at.shape[-1])


# ----- the model ----------------------------------------------------------------------------


def _as_torch(g: Gaussian) -> Gaussian:
    """A numpy Gaussian as CPU tensors (no copy)."""
    return Gaussian(torch.from_numpy(g.mean), torch.from_numpy(g.std))


class IntegerModel:
    """The integer twin of a `LatentVariableModel`, with its coding interface.

    Args:
        model: the float model (its weights are read once, here).
        device: where the encoders and the feature network compute (the prior and the
            pixel steps run on the CPU); results are the same on every device.
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
        self.decoder = IntegerPixelDecoder(model.decoder)  # numpy on the CPU: see the class

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> Gaussian:
        """q(z|x) for uint8 images x (N, H, W[, 3]): exact float64 (N, D) each."""
        return self.encoder(pixels_fixed(self.config.kind, x.to(self.device)))

    @torch.no_grad()
    def prior_step(self, z_prefix: torch.Tensor, i: int) -> Gaussian:
        """p(z_i | z_<i) for (N, D) latent values on the grid (entries ≥ i ignored)."""
        return _as_torch(self.prior.step(to_fixed(z_prefix.cpu().numpy()), i))

    def prior_steps(self) -> IntegerPriorSteps:
        """A decoder's prior: ``prior_step``'s numbers for i = 0, 1, … in turn, on numpy
        arrays (`IntegerPriorSteps`)."""
        return IntegerPriorSteps(self.prior)

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
