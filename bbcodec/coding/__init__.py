"""Entropy-coding layer: an ANS message and push/pop codecs (numpy and constriction only).

Modules, one job each:

* :mod:`~bbcodec.coding.message` — :class:`Message`, the ANS stack, seeded explicitly;
* :mod:`~bbcodec.coding.handover` — the one float64 conversion for constriction;
* :mod:`~bbcodec.coding.quantization` — constriction's fixed-point probabilities;
* :mod:`~bbcodec.coding.leaves` — Bernoulli, categorical, uniform, quantised Gaussian;
* :mod:`~bbcodec.coding.fixed_point` — integer-exact arithmetic and decimal-built tables;
* :mod:`~bbcodec.coding.exact_gaussian` — Gaussian latents from tables every machine builds alike;
* :mod:`~bbcodec.coding.logistic` — discretised logistic mixtures (grey and RGB; float or
  exact arithmetic, :mod:`~bbcodec.coding.exact_logistic`);
* :mod:`~bbcodec.coding.combinators` — serial, autoregressive, bits-back;
* :mod:`~bbcodec.coding.rate` — information content and rate reports;
* :mod:`~bbcodec.coding.testing` — ``check_codec``, the exact round trip for codec tests.
"""

from bbcodec.coding.combinators import (
    AutoRegressive,
    BitsBack,
    Serial,
    all_params_by_steps,
    concat_params,
)
from bbcodec.coding.exact_gaussian import ExactGaussian
from bbcodec.coding.handover import coder_float64
from bbcodec.coding.leaves import (
    Bernoulli,
    Categorical,
    GaussianParams,
    LatentGrid,
    QuantizedGaussian,
    Uniform,
    WindowedQuantizedGaussian,
)
from bbcodec.coding.logistic import (
    DiscretizedLogisticMixture,
    DiscretizedLogisticMixtureRGB,
    LogisticMixtureParams,
    LogisticMixtureRGBParams,
    logistic_mixture_table,
)
from bbcodec.coding.message import (
    SEED_GENERATOR,
    Message,
    MessageError,
    MessageSeedMismatchError,
    MessageUnderflowError,
    Seed,
)
from bbcodec.coding.protocols import Codec, LeafCodec
from bbcodec.coding.rate import BitsPerDim, InformationMeter, RateReport, information_bits

__all__ = [
    "SEED_GENERATOR",
    "AutoRegressive",
    "Bernoulli",
    "BitsBack",
    "BitsPerDim",
    "Categorical",
    "Codec",
    "DiscretizedLogisticMixture",
    "DiscretizedLogisticMixtureRGB",
    "ExactGaussian",
    "GaussianParams",
    "InformationMeter",
    "LatentGrid",
    "LeafCodec",
    "LogisticMixtureParams",
    "LogisticMixtureRGBParams",
    "Message",
    "MessageError",
    "MessageSeedMismatchError",
    "MessageUnderflowError",
    "QuantizedGaussian",
    "RateReport",
    "Seed",
    "Serial",
    "Uniform",
    "WindowedQuantizedGaussian",
    "all_params_by_steps",
    "coder_float64",
    "concat_params",
    "information_bits",
    "logistic_mixture_table",
]
