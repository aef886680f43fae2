"""Start a larger model from a trained smaller one, computing the same function.

Training on two CPU cores is the bottleneck, so a model that turns out too small is grown
instead of retrained: a larger local receptive field (``kernel_size``) and more gated
blocks (``n_blocks``), everything else equal. The grown model starts where the small one
stopped — its ELBO is the same to float rounding — and training makes use of the new room:

- the decoder's masked convolutions get the old k×k taps in the middle of the new ones
  (rows aligned at the current row, columns centred), zeros on the new taps;
- each new gated block starts as the identity (its output projection is zero; its input
  projection keeps the random initialisation, so gradients reach it at once).

An RGB model may also start a grey one (`grey_from_rgb`, before growing): a grey image is
fed to it as R = G = B, so the input convolutions' weights are summed over the three
colour channels, and the grey head is the red channel's mixture (its weights, means and
scales; red is the channel whose mean does not depend on another channel's value). It
does not compute the same function — it predicts red from a grey past — but it starts a
grey photo model far closer to photos than random weights do.
"""

from __future__ import annotations

import dataclasses

import torch

from bbcodec.errors import UsageError
from bbcodec.models.vae import LatentVariableModel, ModelConfig

#: Config fields a model may grow in; every other field must be equal.
GROWABLE = ("kernel_size", "n_blocks")


def check_growable(a: ModelConfig, b: ModelConfig) -> None:
    """Raise `UsageError` unless config ``b`` is ``a`` with a larger kernel and/or more blocks."""
    same_otherwise = dataclasses.replace(a, **{name: getattr(b, name) for name in GROWABLE})
    if same_otherwise != b:
        differ = [
            f.name
            for f in dataclasses.fields(a)
            if f.name not in GROWABLE and getattr(a, f.name) != getattr(b, f.name)
        ]
        raise UsageError(
            f"cannot grow into this model: it differs in {', '.join(differ)} "
            f"(only {' and '.join(GROWABLE)} may change)"
        )
    if b.kernel_size < a.kernel_size or b.n_blocks < a.n_blocks:
        raise UsageError(
            f"cannot shrink: kernel {a.kernel_size} → {b.kernel_size}, "
            f"blocks {a.n_blocks} → {b.n_blocks}"
        )


@torch.no_grad()
def grow_into(small: LatentVariableModel, large: LatentVariableModel) -> None:
    """Overwrite ``large``'s weights so that it computes what ``small`` computes.

    Args:
        small: the trained model.
        large: a freshly initialised model of a grown config (see `check_growable`).
    """
    check_growable(small.config, large.config)
    old = small.state_dict()
    for name, param in large.state_dict().items():
        if name in old and old[name].shape == param.shape:
            param.copy_(old[name])
        elif name.endswith("weight") and name in old and param.dim() == 4:
            _embed_taps(param, old[name])
        elif name.startswith("decoder.blocks.") and name not in old:
            if ".outer." in name:
                param.zero_()  # a new block adds nothing until it has learned something
        else:
            raise ValueError(f"cannot grow parameter {name}: {tuple(param.shape)}")


def _embed_taps(new: torch.Tensor, old: torch.Tensor) -> None:
    """Causal conv weights (out, in, rows, cols): old taps in the bottom rows, centred."""
    if new.shape[:2] != old.shape[:2]:
        raise ValueError(f"cannot grow convolution {tuple(old.shape)} → {tuple(new.shape)}")
    rows, cols = old.shape[2:]
    side = (new.shape[3] - cols) // 2
    new.zero_()
    new[:, :, new.shape[2] - rows :, side : side + cols] = old


#: Parameters that read the pixels: their input-channel axis (1) is summed for grey.
_PIXEL_INPUTS = ("decoder.local.weight", "encoder.convs.0.weight")


@torch.no_grad()
def grey_from_rgb(rgb: LatentVariableModel) -> LatentVariableModel:
    """A grey model of ``rgb``'s config (``kind="grey"``) started from its weights (see the
    module docstring).

    Raises:
        UsageError: ``rgb`` is not an RGB model with a local decoder.
    """
    c = rgb.config
    if c.kind != "rgb" or c.row_context:
        raise UsageError("only an RGB model with a local decoder can start a grey model")
    grey = LatentVariableModel(dataclasses.replace(c, kind="grey"))
    k = c.n_mixtures
    # The RGB head's rows: k logits, then means, log-scales and coefficients, each 3·k
    # rows channel by channel (bbcodec.models.heads); the grey head's: logits, means, scales.
    red = torch.cat([torch.arange(k), k + torch.arange(k), 4 * k + torch.arange(k)])
    old = rgb.state_dict()
    for name, param in grey.state_dict().items():
        if name in _PIXEL_INPUTS:
            param.copy_(old[name].sum(dim=1, keepdim=True))
        elif name.startswith("decoder.head."):
            param.copy_(old[name][red])
        else:
            param.copy_(old[name])
    return grey


def starting_model(init_from: LatentVariableModel, config: ModelConfig) -> LatentVariableModel:
    """``init_from`` made ready for `grow_into` a model of ``config``: as it is, or its grey
    start (`grey_from_rgb`) when ``config`` is grey and it is RGB; `check_growable` then
    says whether it fits."""
    if init_from.config.kind == "rgb" and config.kind == "grey":
        init_from = grey_from_rgb(init_from)
    check_growable(init_from.config, config)
    return init_from
