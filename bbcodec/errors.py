"""Every error bbcodec raises on purpose, under one root (torch-free: the CLI imports it).

::

    BbcodecError                  catch this one: a problem with the input, not a bug
    ├── UsageError                bad options or arguments (workers, settings, devices, names)
    ├── DataError                 input images or dataset files that cannot be read as images
    │   ├── ImageKindError        images the chosen model cannot code (kind, shape, values)
    │   └── SizeLimitError        an input (or a file's claim) over a stated size limit
    ├── WeightsError              weights or registry missing, unreadable or tampered with
    ├── BaselineError             a classic codec failed to give its input back (benchmarks)
    ├── BbcFileError              a .bbc file that cannot be decoded
    │   ├── ContainerError        malformed framing or header (damaged or not a .bbc file)
    │   └── DecodeError           the stream does not decode with these weights and settings
    │       └── ChecksumError     it decoded, but to other pixels than were encoded
    └── MessageError              the coding layer: an ANS stack used wrongly
        ├── MessageUnderflowError     a pop needs more bits than the stack holds
        └── MessageSeedMismatchError  the stack left over is not the seed

Every class but `BaselineError` and `MessageError` is also a `ValueError`, as Python code
that validates input expects. Messages are one line and say what to do.

Example:
    >>> try:
    ...     raise ChecksumError("decoded images 0..9 do not match their checksum")
    ... except BbcodecError as exc:
    ...     print(type(exc).__name__, isinstance(exc, DecodeError))
    ChecksumError True
"""

from __future__ import annotations

__all__ = [
    "BaselineError",
    "BbcFileError",
    "BbcodecError",
    "ChecksumError",
    "ContainerError",
    "DataError",
    "DecodeError",
    "ImageKindError",
    "MessageError",
    "MessageSeedMismatchError",
    "MessageUnderflowError",
    "SizeLimitError",
    "UsageError",
    "WeightsError",
]


class BbcodecError(Exception):
    """The root: something about the input, the options or a file is wrong (not a bug)."""


class UsageError(BbcodecError, ValueError):
    """Bad options or arguments: the message names the option and what would work."""


class DataError(BbcodecError, ValueError):
    """Bad input data: the message says what is wrong and with which file, in one line."""


class ImageKindError(DataError):
    """Images the chosen model cannot code (shape, kind or dtype), with what would work."""


class SizeLimitError(DataError):
    """An input, or what a file claims it holds, is larger than a stated limit (checked
    before anything that size is allocated); the message names the option that raises it."""


class WeightsError(BbcodecError, ValueError):
    """A weights file or registry entry that is missing, unreadable or does not match."""


class BaselineError(BbcodecError, RuntimeError):
    """A classic codec (PNG, WebP, JPEG-XL) did not give its input back exactly."""


class BbcFileError(BbcodecError, ValueError):
    """A ``.bbc`` file that cannot be decoded (see the subclasses for why)."""


class ContainerError(BbcFileError):
    """Malformed ``.bbc`` framing or header: the file is damaged or not a ``.bbc`` file."""


class DecodeError(BbcFileError):
    """A stream that does not decode to what was encoded (damaged, or other weights or
    settings than the file was made with)."""


class ChecksumError(DecodeError):
    """Decoded pixels differ from the chunk's stored sha256: the stream was intact but
    decoded to other pixels (wrong model, or the determinism contract broken)."""


class MessageError(BbcodecError):
    """An ANS message used in a way that cannot be undone or verified."""


class MessageUnderflowError(MessageError):
    """A pop needs more bits than the message holds: the message was not pushed with the
    codecs now popping it, or a bits-back pop was started without enough initial bits."""


class MessageSeedMismatchError(MessageError):
    """The stack left after decoding is not the seed the message started from."""
