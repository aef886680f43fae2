"""Codecs built from codecs: serial, autoregressive and bits-back.

Example (bits-back with a one-bit latent and an exact posterior):
    >>> from bbcodec.coding.leaves import Bernoulli, Categorical
    >>> from bbcodec.coding.message import Message, MessageUnderflowError
    >>> codec = BitsBack(
    ...     prior=Bernoulli(np.array([0.5])),
    ...     likelihood=lambda z: Categorical(np.where(z[:, None] == 1, [0.9, 0.1], [0.2, 0.8])),
    ...     posterior=lambda x: Bernoulli(np.where(x == 0, 9 / 11, 1 / 9)),
    ... )
    >>> message = Message.seeded(seed=0, n_words=4)
    >>> before = message.copy()
    >>> codec.push(message, np.array([1]))
    >>> codec.pop(message).tolist(), message == before
    ([1], True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from bbcodec.coding.message import Message, MessageUnderflowError
from bbcodec.coding.protocols import Codec

__all__ = ["AutoRegressive", "BitsBack", "Serial", "all_params_by_steps", "concat_params"]

Params = TypeVar("Params")


class Serial:
    """Codes a tuple of values with one codec each: pop order is the codecs' order.

    Example:
        >>> from bbcodec.coding.leaves import Uniform
        >>> from bbcodec.coding.message import Message, MessageUnderflowError
        >>> codec = Serial(Uniform(4, (2,)), Uniform(3, (1,)))
        >>> message = Message.seeded(seed=0, n_words=4)
        >>> codec.push(message, (np.array([3, 0]), np.array([2])))
        >>> [s.tolist() for s in codec.pop(message)]
        [[3, 0], [2]]
    """

    def __init__(self, *codecs: Codec) -> None:
        """Args: codecs: one codec per element of the tuple coded."""
        self.codecs = codecs

    def push(self, message: Message, symbols: Sequence[Any]) -> None:
        """Pushes ``symbols[i]`` with ``codecs[i]``, last element first."""
        if len(symbols) != len(self.codecs):
            raise ValueError(f"expected {len(self.codecs)} values, got {len(symbols)}")
        for codec, value in reversed(list(zip(self.codecs, symbols, strict=True))):
            codec.push(message, value)

    def pop(self, message: Message) -> tuple[Any, ...]:
        """Pops one value per codec, first codec first."""
        return tuple(codec.pop(message) for codec in self.codecs)


def concat_params(steps: Sequence[Params]) -> Params:
    """Concatenates per-step parameter containers along axis 0 into one for all steps.

    A container is an array, or a tuple / NamedTuple of containers (e.g.
    :class:`~bbcodec.coding.leaves.GaussianParams`).

    Args:
        steps: One container per step, all of the same structure.

    Returns:
        A container of that structure whose arrays are the steps' arrays concatenated.

    Example:
        >>> from bbcodec.coding.leaves import GaussianParams
        >>> steps = [GaussianParams(np.zeros(2), np.ones(2))] * 3
        >>> concat_params(steps).means.shape
        (6,)
    """
    first = steps[0]
    if isinstance(first, tuple):
        fields = [concat_params([step[i] for step in steps]) for i in range(len(first))]
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    return np.concatenate([np.asarray(step) for step in steps], axis=0)


def all_params_by_steps(
    step_params: Callable[[np.ndarray, int], Params],
) -> Callable[[np.ndarray], Params]:
    """An ``all_params`` that runs ``step_params`` on the true prefix of every step.

    Costs one model evaluation per step on the encoder too, but the encoder then computes
    its parameters with exactly the decoder's code path, so they are bit-identical.

    Args:
        step_params: ``(prefix, t) -> params of step t``, as for :class:`AutoRegressive`.

    Returns:
        ``symbols -> concat_params([step_params(symbols[:t], t) for every t])``.
    """

    def all_params(symbols: np.ndarray) -> Params:
        return concat_params([step_params(symbols[:t], t) for t in range(symbols.shape[0])])

    return all_params


@dataclass(frozen=True, eq=False)
class AutoRegressive(Generic[Params]):
    """Symbols in ``n_steps`` steps, each step's distribution depending on earlier steps.

    Symbols have shape ``(n_steps, *step_shape)``; step ``t`` is ``symbols[t]`` (for
    instance pixel ``t`` of each of ``B`` images, ``step_shape = (B,)`` or ``(B, 3)``).

    * ``push`` gets all steps' parameters at once from ``all_params(symbols)`` (one parallel
      model pass) and pushes every step in one vectorised codec call, so that step 0 ends on
      top of the stack.
    * ``pop`` runs ``step_params(prefix, t)`` for ``t = 0 .. n_steps-1`` and pops step ``t``
      with ``codec_for_params`` of those parameters.

    The two sides agree because the codec built on the concatenated parameters pushes what
    the per-step codecs, pushed last step first, would have pushed (true for every leaf here;
    for :class:`~bbcodec.coding.logistic.DiscretizedLogisticMixtureRGB` set its
    ``group_size`` to ``step_shape[0]``) — and because ``all_params`` must return, row for
    row, bit-identical parameters to ``step_params`` (see :func:`all_params_by_steps`).

    Attributes:
        codec_for_params: ``params -> codec`` for the symbols those parameters describe.
        all_params: ``symbols (n_steps, *step_shape) -> params`` of all steps, rows in step
            order (leading axis ``n_steps * step_shape[0]``).
        step_params: ``(prefix, t) -> params`` of step ``t``; ``prefix`` is a read-only view
            of the ``(t, *step_shape)`` symbols popped so far, valid during the call.
        n_steps: Number of steps.
        step_shape: Shape of one step's symbols, at least one axis.

    Example:
        >>> from bbcodec.coding.leaves import Categorical
        >>> from bbcodec.coding.message import Message, MessageUnderflowError
        >>> def step_params(prefix, t):  # a binary Markov chain, one chain per column
        ...     previous = prefix[-1] if t else np.zeros(2, dtype=int)
        ...     return np.where(previous[:, None] == 1, [0.1, 0.9], [0.8, 0.2])
        >>> codec = AutoRegressive(Categorical, all_params_by_steps(step_params), step_params,
        ...                        n_steps=3, step_shape=(2,))
        >>> message = Message.seeded(seed=0, n_words=4)
        >>> codec.push(message, np.array([[1, 0], [1, 0], [0, 1]]))
        >>> codec.pop(message).tolist()
        [[1, 0], [1, 0], [0, 1]]
    """

    codec_for_params: Callable[[Params], Codec]
    all_params: Callable[[np.ndarray], Params]
    step_params: Callable[[np.ndarray, int], Params]
    n_steps: int
    step_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_shape", tuple(int(d) for d in self.step_shape))
        if not self.step_shape:
            raise ValueError("step_shape needs at least one axis")

    def push(self, message: Message, symbols: np.ndarray) -> None:
        """Pushes ``(n_steps, *step_shape)`` int symbols, all steps in one codec call."""
        symbols = np.asarray(symbols)
        if symbols.shape != (self.n_steps, *self.step_shape):
            raise ValueError(
                f"symbols have shape {symbols.shape}, expected {(self.n_steps, *self.step_shape)}"
            )
        rows = symbols.reshape(self.n_steps * self.step_shape[0], *self.step_shape[1:])
        self.codec_for_params(self.all_params(symbols)).push(message, rows)

    def pop(self, message: Message) -> np.ndarray:
        """Pops step after step; returns int32 symbols ``(n_steps, *step_shape)``."""
        symbols = np.zeros((self.n_steps, *self.step_shape), dtype=np.int32)
        for t in range(self.n_steps):
            prefix = symbols[:t]
            prefix.flags.writeable = False
            symbols[t] = self.codec_for_params(self.step_params(prefix, t)).pop(message)
        return symbols


@dataclass(frozen=True, eq=False)
class BitsBack:
    """BB-ANS: codes ``x`` with a latent-variable model ``p(z) p(x|z)`` and posterior ``q``.

    Encoder (``push``), on a message that already holds bits:

    1. pop ``z̄`` from the message with the posterior ``Q(z̄|x)`` — the bits back;
    2. push ``x`` with the likelihood ``P(x|z̄)``;
    3. push ``z̄`` with the prior ``P(z̄)``.

    Net cost ``-log2 P(x|z̄) - log2 P(z̄) + log2 Q(z̄|x)`` bits, whose mean over ``q`` is the
    (discretised) negative ELBO.

    Decoder (``pop``), the mirror image:

    1. pop ``z̄`` with the prior ``P(z̄)``;
    2. pop ``x`` with the likelihood ``P(x|z̄)``;
    3. push ``z̄`` back with the posterior ``Q(z̄|x)`` ← bits-back step: this restores the
       message exactly as it was before ``x`` was pushed.

    The mean cost is the −ELBO only if the bits popped in step 1 look random. Right after
    the previous item's step 3, though, the top of the stack is the quantile of the last
    latent pushed with the prior, so the first latent popped would be biased (measured on
    random 3-latent VAEs, 2000 items: coded 0.9-2.2 % above the −ELBO). With ``mix_head``
    (the default) the encoder calls :meth:`Message.mix_head` before step 1 and the decoder
    after step 3; it is self-inverse and costs no bits, and the excess fell to 0.3-0.6 %
    (the rest comes from later latents of the same pop reading words flushed by earlier
    pushes). Encoder and decoder must use the same setting.

    Attributes:
        prior: Codec for ``z``.
        likelihood: ``z -> codec for x``.
        posterior: ``x -> codec for z``.
        mix_head: Scramble the head around each item (part of the bitstream format).
    """

    prior: Codec
    likelihood: Callable[[Any], Codec]
    posterior: Callable[[Any], Codec]
    mix_head: bool = True

    def push(self, message: Message, symbols: Any) -> None:
        """Encodes ``x`` (steps 1-3 above)."""
        if self.mix_head:
            message.mix_head()
        try:
            latents = self.posterior(symbols).pop(message)  # 1. the bits back
        except MessageUnderflowError:
            if self.mix_head:
                message.mix_head()  # leave the message as it was
            raise
        self.likelihood(latents).push(message, symbols)  # 2.
        self.prior.push(message, latents)  # 3.

    def pop(self, message: Message) -> Any:
        """Decodes and returns ``x`` (mirror steps 1-3 above)."""
        latents = self.prior.pop(message)  # 1.
        symbols = self.likelihood(latents).pop(message)  # 2.
        self.posterior(symbols).push(message, latents)  # 3. ← bits-back step
        if self.mix_head:
            message.mix_head()
        return symbols
