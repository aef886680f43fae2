"""VLAE and δ-VAE: one latent-variable model class, one typed interface for the codec.

    x ──► encoder ──► q(z|x) = N(μ, σ²) ──z──► LatentToFeatures ──► PixelDecoder ──► p(x|z)
                                              prior p(z): MADE (VLAE) | AR(1) → aux MADE (δ-VAE)

- **VLAE** (Chen et al. 2017, "Variational Lossy Autoencoder"): conv encoder, MADE
  autoregressive-flow prior, PixelCNN decoder with a small local receptive field.
- **δ-VAE** (Razavi et al. 2019, "Preventing Posterior Collapse with δ-VAEs"): anti-causal
  encoder over a sequence of latent bands, AR(1) prior with committed rate δ, a PixelCNN
  decoder with the full causal past, and an auxiliary MADE prior fitted to the aggregate
  posterior after training (`fit_aux_prior`), used for coding and for the reported −ELBO.

The family fixes the prior; the encoder and the decoder's full causal past are each
family's default and may be swapped (`ModelConfig.encoder`, `ModelConfig.row_context`): a
δ-VAE with a conv encoder or a local decoder, a VLAE whose decoder sees the full causal past.

The interface the codec uses (all float32 torch tensors; z is (N, D) in latent units):

- ``posterior(x) -> Gaussian``              q(z|x), (N, D) each;
- ``prior_conditionals(z) -> Gaussian``     p(z_i | z_<i) for all i; ``prior_step(z, i)`` one i;
- ``likelihood_params(x, z) -> (N,H,W,P)``  all pixels at once (training, ELBO);
- ``pixel_stepper(z) -> PixelStepper``      one pixel at a time — what both coding sides use
  (see `bbcodec.models.pixelcnn` for the determinism decision).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

import torch
from torch import nn

from bbcodec.models import heads
from bbcodec.models.encoders import AntiCausalEncoder, ConvEncoder, LatentToFeatures
from bbcodec.models.pixelcnn import IN_CHANNELS, PixelDecoder, pixels_to_input
from bbcodec.models.priors import AR1Prior, MadePrior, gaussian_log_prob


class Gaussian(NamedTuple):
    """Diagonal Gaussian parameters, each (N, D) (or (N,) for one step)."""

    mean: torch.Tensor
    std: torch.Tensor


class ElboTerms(NamedTuple):
    """Per-image ELBO terms in nats, each (N,). ``neg_elbo_nats = recon_nats + kl_nats``."""

    recon_nats: torch.Tensor  # −E_q log p(x|z) (distortion)
    kl_nats: torch.Tensor  # KL(q(z|x) ‖ p(z)) (rate), exact or one-sample estimate
    kl_dims_nats: torch.Tensor  # (N, D) per-dimension KL terms (for free bits, active units)

    @property
    def neg_elbo_nats(self) -> torch.Tensor:
        return self.recon_nats + self.kl_nats


#: q(z|x) networks a `ModelConfig` may name.
ENCODERS = ("conv", "anti-causal")


def family_defaults(family: str) -> dict[str, object]:
    """The ``row_context`` and ``encoder`` a family has unless its config says otherwise:
    the δ-VAE's decoder sees the full causal past and its encoder is anti-causal (Razavi et
    al. 2019); the VLAE's decoder is local and its encoder convolutional (Chen et al. 2017)."""
    delta = family == "delta-vae"
    return {"row_context": delta, "encoder": "anti-causal" if delta else "conv"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored beside its weights.

    Attributes:
        family: ``vlae`` or ``delta-vae``.
        kind: pixel kind, ``binary``, ``grey`` or ``rgb``.
        image_hw: (H, W).
        latent_dim: D for the VLAE (ignored by the δ-VAE: D = n_steps · step_dim).
        n_steps, step_dim: the δ-VAE's latent sequence (bands of the image × dims per band).
        delta_nats: the δ-VAE's committed rate δ, total over the latent, in nats.
        channels: width of the pixel network and the feature map.
        feature_channels: width of the VLAE's encoder and z → features network (0: the
            same as ``channels``); narrower makes training cheaper.
        kernel_size: local receptive field of the decoder (odd k; k×k causal neighbourhood).
        n_blocks: gated 1×1 blocks in the pixel network.
        n_mixtures: logistic mixture components for 8-bit pixels.
        made_hidden: width of the MADE prior's hidden layers.
        row_context: whether the decoder also sees the full causal past (every pixel above
            or to the left), not only its k×k neighbourhood. None (the default) means the
            family's own choice (`family_defaults`: True for the δ-VAE, False for the VLAE)
            and is resolved when the config is made, so the attribute is always a bool.
        encoder: q(z|x)'s network, ``conv`` (`ConvEncoder`) or ``anti-causal``
            (`AntiCausalEncoder`, δ-VAE only: it reads the latent sequence of bands). None
            (the default) means the family's own, resolved like ``row_context``.

    `to_json` leaves out ``row_context`` and ``encoder`` when they are the family's own, so a
    config from before these fields existed writes the same JSON (and gives the same weights
    fingerprint) as it always did.
    """

    family: str
    kind: str
    image_hw: tuple[int, int]
    latent_dim: int = 32
    n_steps: int = 7
    step_dim: int = 8
    delta_nats: float = 8.0
    channels: int = 64
    feature_channels: int = 0
    kernel_size: int = 7
    n_blocks: int = 4
    n_mixtures: int = 5
    made_hidden: int = 256
    row_context: bool | None = None
    encoder: str | None = None

    def __post_init__(self):
        if self.family not in ("vlae", "delta-vae"):
            raise ValueError(f"unknown model family {self.family!r} (vlae or delta-vae)")
        for name, default in family_defaults(self.family).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r} ({' or '.join(ENCODERS)})")
        if self.encoder == "anti-causal" and self.family != "delta-vae":
            raise ValueError(
                "the anti-causal encoder reads a δ-VAE's latent sequence of bands; "
                "a VLAE has one latent vector: use the conv encoder"
            )
        if self.kind not in IN_CHANNELS:
            raise ValueError(f"unknown pixel kind {self.kind!r} (binary, grey or rgb)")
        object.__setattr__(self, "image_hw", tuple(self.image_hw))
        if len(self.image_hw) != 2 or any(side < 4 or side % 4 for side in self.image_hw):
            raise ValueError(
                f"image sides must be multiples of 4 (two 2x down/upsamplings), got {self.image_hw}"
            )

    @property
    def total_latent_dim(self) -> int:
        return self.latent_dim if self.family == "vlae" else self.n_steps * self.step_dim

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One image's array shape: (H, W), or (H, W, 3) for RGB."""
        return self.image_hw + ((3,) if self.kind == "rgb" else ())

    @property
    def dims_per_image(self) -> int:
        return math.prod(self.image_shape)

    def to_json(self) -> str:
        """The fields as sorted JSON, ``row_context`` and ``encoder`` only where they are
        not the family's own (see the class docstring)."""
        fields = dataclasses.asdict(self)
        for name, default in family_defaults(self.family).items():
            if fields[name] == default:
                del fields[name]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))


class LatentVariableModel(nn.Module):
    """A VLAE or δ-VAE built from a `ModelConfig`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        in_ch = IN_CHANNELS[c.kind]
        d = c.total_latent_dim
        feature_channels = c.feature_channels or c.channels
        if c.encoder == "conv":
            self.encoder = ConvEncoder(in_ch, c.image_hw, d, feature_channels)
        else:
            self.encoder = AntiCausalEncoder(in_ch, c.image_hw, c.n_steps, c.step_dim)
        if c.family == "vlae":
            self.prior = MadePrior(d, c.made_hidden)
            self.aux_prior = None
        else:
            self.prior = AR1Prior(c.n_steps, c.step_dim, c.delta_nats)
            self.aux_prior = MadePrior(d, c.made_hidden)
        self.to_features = LatentToFeatures(d, c.image_hw, feature_channels, c.channels)
        self.decoder = PixelDecoder(
            c.kind, c.image_hw, c.channels, c.kernel_size, c.n_blocks, c.n_mixtures,
            row_context=bool(c.row_context),
        )  # fmt: skip

    # ----- the coding interface -------------------------------------------------------
    @property
    def coding_prior(self) -> nn.Module:
        """The prior the codec uses: the auxiliary prior for the δ-VAE, else the prior."""
        return self.aux_prior if self.aux_prior is not None else self.prior

    def posterior(self, x: torch.Tensor) -> Gaussian:
        """q(z|x) for uint8 images x (N, H, W[, 3])."""
        return Gaussian(*self.encoder(pixels_to_input(self.config.kind, x)))

    def prior_conditionals(self, z: torch.Tensor) -> Gaussian:
        return Gaussian(*self.coding_prior.conditionals(z))

    def prior_step(self, z_prefix: torch.Tensor, i: int) -> Gaussian:
        return Gaussian(*self.coding_prior.step(z_prefix, i))

    def likelihood_params(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(x, self.to_features(z))

    def pixel_stepper(self, z: torch.Tensor):
        return self.decoder.stepper(self.to_features(z))

    # ----- objectives -----------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, prior: str = "coding") -> ElboTerms:
        """One-sample ELBO terms for uint8 images x of the model's size, or of a × b tiles.

        An image of (a·th, b·tw) pixels, for the model's (th, tw), is modelled as the tiled
        codec codes a photo (`bbcodec.models.tiles`): one latent per tile, whose feature map
        conditions that tile's pixels, and the pixel network over the whole image, so a
        tile's pixels see their neighbours across its borders. The KL terms are then summed
        over an image's tiles (``kl_dims_nats`` (N, D)).

        Args:
            prior: ``coding`` (the prior the codec uses) or ``train`` (the δ-VAE's AR(1)
                prior, whose KL is exact and ≥ δ).
        """
        n, height, width = x.shape[:3]
        tile_h, tile_w = self.config.image_hw
        if height % tile_h or width % tile_w:
            raise ValueError(
                f"images of {height}x{width} are not whole {tile_h}x{tile_w} tiles of this model"
            )
        rows, cols = height // tile_h, width // tile_w
        tiles = _split_tiles(x, rows, cols)
        q = self.posterior(tiles)
        z = q.mean + q.std * torch.randn_like(q.std)
        features = _join_tiles(self.to_features(z), rows, cols)
        recon = -heads.log_prob(
            self.config.kind, x, self.decoder(x, features), self.config.n_mixtures
        )
        p = self.prior if prior == "train" else self.coding_prior
        if isinstance(p, AR1Prior):
            kl_dims = p.kl_dims_nats(q.mean, q.std)
        else:
            kl_dims = gaussian_log_prob(z, q.mean, q.std) - p.log_prob_dims(z)
        kl_dims = kl_dims.reshape(n, rows * cols, -1).sum(1)
        return ElboTerms(recon, kl_dims.sum(1), kl_dims)

    def loss(
        self,
        x: torch.Tensor,
        objective: str = "elbo",
        beta: float = 1.0,
        free_bits_nats: float = 0.0,
    ) -> tuple[torch.Tensor, ElboTerms]:
        """Training loss per dimension (nats/dim) and the ELBO terms.

        Args:
            objective: ``elbo``; ``beta`` (recon + β·KL); ``free-bits`` (each latent
                dimension's batch-mean KL clamped below at ``free_bits_nats``).
            x: uint8 images of the model's size or of whole tiles (`elbo_terms`); the loss
                is per dimension of x.
        """
        terms = self.elbo_terms(x, prior="train")
        if objective == "elbo":
            per_image = terms.neg_elbo_nats
        elif objective == "beta":
            per_image = terms.recon_nats + beta * terms.kl_nats
        elif objective == "free-bits":
            kl = terms.kl_dims_nats.mean(0).clamp(min=free_bits_nats).sum()
            per_image = terms.recon_nats + kl
        else:
            raise ValueError(f"unknown objective {objective!r} (elbo, beta or free-bits)")
        return per_image.mean() / x[0].numel(), terms


def tiles_of(x: torch.Tensor, tile_hw: tuple[int, int]) -> torch.Tensor:
    """Images (N, a·th, b·tw, ...) of whole (th, tw) tiles → their tiles (N·a·b, th, tw, ...)."""
    return _split_tiles(x, x.shape[1] // tile_hw[0], x.shape[2] // tile_hw[1])


def _split_tiles(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(N, rows·th, cols·tw, ...) → (N·rows·cols, th, tw, ...), tiles row-major per image."""
    n, height, width = x.shape[:3]
    rest = x.shape[3:]
    tiled = x.reshape(n, rows, height // rows, cols, width // cols, *rest).transpose(2, 3)
    return tiled.reshape(n * rows * cols, height // rows, width // cols, *rest)


def _join_tiles(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`_split_tiles` undone: (N·rows·cols, th, tw, C) → (N, rows·th, cols·tw, C)."""
    n_tiles, tile_h, tile_w = tiles.shape[:3]
    rest = tiles.shape[3:]
    grid = tiles.reshape(n_tiles // (rows * cols), rows, cols, tile_h, tile_w, *rest)
    return grid.transpose(2, 3).reshape(-1, rows * tile_h, cols * tile_w, *rest)


def nats_to_bpd(nats: float, dims: int) -> float:
    """Nats per image → bits per dimension."""
    return nats / (dims * math.log(2))
