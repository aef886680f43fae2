"""Named model configurations and their training recipes (what ``bbcodec train --preset``
uses), and the overrides of them a user may give.

An override sets one of the preset's `KNOBS`, a `ModelConfig` or `Recipe` field, spelt on
the command line as the field's name with dashes (``--kernel-size 5``, ``--no-row-context``;
`flags`). `with_overrides` is the one place they are applied and checked; what it decides:

- a knob the preset's family does not use is refused: ``--latent-dim`` on a δ-VAE (whose
  latent is ``--n-steps`` × ``--step-dim``); ``--n-steps``, ``--step-dim``, ``--delta-nats``
  and ``--aux-prior-steps`` on a VLAE;
- ``--row-context`` is allowed for both families: a VLAE's decoder then sees the full causal
  past (the VLAE paper's receptive-field question), and such a model codes images of its own
  size only (the tiled codec needs a local decoder); ``--no-row-context`` gives a δ-VAE a
  local decoder;
- ``--encoder conv`` is allowed for both families, ``anti-causal`` for the δ-VAE only (it
  reads the latent sequence of bands; `ModelConfig`);
- β and τ go with their objective, and each of those objectives needs its value (`Recipe`);
- a config no model can be built from (an even kernel, bands that do not divide the height,
  a δ float32 cannot hold) is refused with the model's own reason.

Every refusal is one `UsageError` line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from bbcodec.errors import UsageError
from bbcodec.models.vae import LatentVariableModel, ModelConfig

#: Training objectives (`bbcodec.models.vae.LatentVariableModel.loss`).
OBJECTIVES = ("elbo", "beta", "free-bits")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training settings. ``aux_prior_steps`` > 0 fits the δ-VAE's auxiliary prior afterwards.

    ``beta`` (the KL's weight) is used by objective ``beta`` only and ``free_bits_nats`` (τ,
    the KL per latent dimension below which it is not penalised) by ``free-bits`` only: a
    recipe that sets either without its objective, or names the objective without its value
    (β = 1 and τ = 0 are the ELBO), is a `ValueError`.

    ``crop_tiles`` > 0 makes a photo model: it trains on random crops of ``crop_tiles`` ×
    ``crop_tiles`` model tiles from a folder of photos (`bbcodec.models.photos`), each crop
    modelled tiled, as the codec codes a photo; the validation split is the folder's
    held-out photos (``valid_split`` is not used).
    """

    batch_size: int = 64
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-4  # cosine decay over the time/epoch budget
    objective: str = "elbo"
    beta: float = 1.0
    free_bits_nats: float = 0.0
    aux_prior_steps: int = 0
    valid_split: str = "test"
    crop_tiles: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r} ({', '.join(OBJECTIVES)})")
        if self.beta != 1.0 and self.objective != "beta":
            raise ValueError(f"β = {self.beta} is for objective beta, not {self.objective}")
        if self.free_bits_nats and self.objective != "free-bits":
            raise ValueError(
                f"free bits τ = {self.free_bits_nats} is for objective free-bits, "
                f"not {self.objective}"
            )
        if self.objective == "beta" and self.beta == 1.0:
            raise ValueError("objective beta needs a β other than 1 (β = 1 is the ELBO)")
        if self.objective == "free-bits" and not self.free_bits_nats > 0:
            raise ValueError("objective free-bits needs free bits τ > 0 (τ = 0 is the ELBO)")
        if self.final_learning_rate > self.learning_rate:
            raise ValueError(
                f"the final learning rate {self.final_learning_rate} is above the first, "
                f"{self.learning_rate}"
            )


PRESETS: dict[str, tuple[ModelConfig, Recipe]] = {
    "vlae-bmnist": (
        ModelConfig("vlae", "binary", (28, 28), latent_dim=32, channels=64, kernel_size=7, n_blocks=4),
        Recipe(valid_split="valid"),
    ),
    "delta-vae-bmnist": (
        ModelConfig(
            "delta-vae", "binary", (28, 28), n_steps=7, step_dim=8, delta_nats=10.0,
            channels=64, kernel_size=7, n_blocks=4,
        ),
        Recipe(valid_split="valid", aux_prior_steps=3000),
    ),
    "vlae-mnist": (
        ModelConfig("vlae", "grey", (28, 28), latent_dim=32, channels=64, kernel_size=7, n_blocks=4, n_mixtures=5),
        Recipe(),
    ),
    "vlae-cifar10": (
        ModelConfig(
            "vlae", "rgb", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=7, n_blocks=4, n_mixtures=5,
        ),
        Recipe(learning_rate=2e-3),
    ),
    # vlae-cifar10 grown (bbcodec train --init-from): 9×9 neighbourhood, 6 blocks.
    "vlae-cifar10-k9": (
        ModelConfig(
            "vlae", "rgb", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=9, n_blocks=6, n_mixtures=5,
        ),
        Recipe(learning_rate=1e-3),
    ),
    "delta-vae-cifar10": (
        ModelConfig(
            "delta-vae", "rgb", (32, 32), n_steps=8, step_dim=16, delta_nats=20.0,
            channels=96, feature_channels=32, kernel_size=7, n_blocks=4, n_mixtures=10,
        ),
        Recipe(learning_rate=2e-3, aux_prior_steps=3000),
    ),
    # Photo models: trained on 64×64 crops (2×2 tiles of 32×32) of ../shared/data/photos,
    # both started from vlae-cifar10 (bbcodec train --init-from vlae-cifar10; the grey one
    # from its grey start, bbcodec.models.grow.grey_from_rgb).
    "vlae-photo": (
        ModelConfig(
            "vlae", "rgb", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=9, n_blocks=4, n_mixtures=5,
        ),
        Recipe(batch_size=16, learning_rate=1e-4, final_learning_rate=1e-5, crop_tiles=2),
    ),
    "vlae-photo-grey": (
        ModelConfig(
            "vlae", "grey", (32, 32), latent_dim=64, channels=96, feature_channels=32,
            kernel_size=9, n_blocks=4, n_mixtures=5,
        ),
        Recipe(batch_size=16, learning_rate=2e-4, final_learning_rate=2e-5, crop_tiles=2),
    ),
}  # fmt: skip


#: `ModelConfig` fields a user may override, then `Recipe` fields (`with_overrides`).
MODEL_KNOBS = (
    "latent_dim", "n_steps", "step_dim", "delta_nats", "kernel_size", "row_context", "encoder",
    "channels", "n_blocks",
)  # fmt: skip
RECIPE_KNOBS = (
    "objective", "beta", "free_bits_nats", "learning_rate", "final_learning_rate", "batch_size",
    "aux_prior_steps",
)  # fmt: skip
KNOBS = MODEL_KNOBS + RECIPE_KNOBS
#: The knobs each family does not use (refused by `with_overrides`).
UNUSED_KNOBS = {
    "vlae": ("n_steps", "step_dim", "delta_nats", "aux_prior_steps"),
    "delta-vae": ("latent_dim",),
}


def option(knob: str) -> str:
    """A knob's command-line option: ``kernel_size`` → ``--kernel-size``."""
    return "--" + knob.replace("_", "-")


def flags(values: Mapping[str, object]) -> str:
    """Knob values as command-line options, e.g. ``--objective beta --beta 2.0 --no-row-context``."""
    words = []
    for knob, value in values.items():
        if isinstance(value, bool):
            words.append(option(knob) if value else "--no-" + option(knob)[2:])
        else:
            words.append(f"{option(knob)} {value}")
    return " ".join(words)


def knob_values(config: ModelConfig, recipe: Recipe) -> dict[str, object]:
    """Every knob's value in ``config`` and ``recipe``, in `KNOBS` order."""
    return {knob: getattr(config if knob in MODEL_KNOBS else recipe, knob) for knob in KNOBS}


def changed_knobs(name: str, config: ModelConfig, recipe: Recipe) -> dict[str, object]:
    """The knobs whose values in ``config`` and ``recipe`` differ from preset ``name``'s:
    the overrides that made them, each once and only if it changed something."""
    preset = knob_values(*PRESETS[name])
    return {k: v for k, v in knob_values(config, recipe).items() if v != preset[k]}


def describe(name: str) -> str:
    """Preset ``name`` in three lines: its model, then the model and recipe knobs it sets
    (as `flags`: the defaults of the override options); β and τ only with their objective."""
    config, recipe = PRESETS[name]
    unused = set(UNUSED_KNOBS[config.family])
    unused |= {"beta"} if recipe.objective != "beta" else set()
    unused |= {"free_bits_nats"} if recipe.objective != "free-bits" else set()
    values = {k: v for k, v in knob_values(config, recipe).items() if k not in unused}
    model = {k: v for k, v in values.items() if k in MODEL_KNOBS}
    training = {k: v for k, v in values.items() if k in RECIPE_KNOBS}
    h, w = config.image_hw
    return (
        f"{name}: {config.family}, {config.kind} {h}x{w}\n    {flags(model)}\n    {flags(training)}"
    )


def with_overrides(
    name: str, overrides: Mapping[str, object] | None = None
) -> tuple[ModelConfig, Recipe]:
    """Preset ``name``'s model config and recipe with ``overrides`` (knob → value) applied.

    Raises:
        UsageError: one line for an unknown preset or knob, a knob the preset's family does
            not use, or a combination the config, recipe or model refuses (module docstring).
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    config, recipe = PRESETS[name]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(KNOBS))
    if unknown:
        raise UsageError(f"no such override {unknown[0]!r} (known: {', '.join(KNOBS)})")
    unused = [knob for knob in overrides if knob in UNUSED_KNOBS[config.family]]
    if unused:
        hint = " (its latent is --n-steps × --step-dim)" if "latent_dim" in unused else ""
        raise UsageError(
            f"{option(unused[0])} does not apply to preset {name}, a {config.family}{hint}"
        )
    model_part = {k: v for k, v in overrides.items() if k in MODEL_KNOBS}
    try:
        config = dataclasses.replace(config, **model_part)
        recipe = dataclasses.replace(
            recipe, **{k: v for k, v in overrides.items() if k in RECIPE_KNOBS}
        )
        if model_part:
            LatentVariableModel(config)  # the modules' own checks (kernel, bands, δ)
    except (ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise UsageError(f"preset {name} with {flags(overrides)}: {reason}") from None
    return config, recipe
