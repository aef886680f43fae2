"""bbcodec: lossless image compression with bits-back ANS coding.

Public API (imported lazily, so ``import bbcodec`` and ``bbcodec --help`` stay fast):

- ``bbcodec.compress(images, model="auto") -> bytes``
- ``bbcodec.decompress(data) -> np.ndarray``
- ``bbcodec.load_model(name_or_path)``
"""

_API = ("compress", "decompress", "compress_to", "decompress_from", "load_model")

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from bbcodec import api

        return getattr(api, name)
    raise AttributeError(f"module 'bbcodec' has no attribute {name!r}")
