"""Training data for the photo models: random crops of whole photos.

A photo model is trained on crops of ``tiles × tiles`` model tiles (say 64×64 pixels of a
32×32-tile model), each crop modelled as the tiled codec codes a photo
(`bbcodec.models.vae.LatentVariableModel.elbo_terms`): its pixels near a tile border see
the neighbouring tile's pixels, as they do in a real photo.

- **Photos**: every image file under the data folder and its subfolders (named as
  `bbcodec.models.data.image_files` names them, read by `bbcodec.models.data.read_image`),
  sorted by path; grey models train on their
  luma, converted exactly as ``PIL.Image.convert("L")`` converts a user's photo.
- **Split**: every `VALID_EVERY`-th photo (in path order) is held out for validation;
  the split depends on the file names only, so it is the same in every session.
- **Crops**: `PhotoCrops` is an array-like of ``n`` crops whose crop ``k`` is fixed by
  ``(seed, k)``: a photo drawn in proportion to its area, a position drawn uniformly and a
  left–right mirror with probability ½. Only mirroring: no rescaling, which would change a
  photo's pixel statistics (a downscaled photo is smoother than the camera's), and no
  upside-down flips (light comes from above). The training loop's own shuffling of the
  indices is the random order; resuming a run gives the same crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bbcodec.errors import DataError

#: One photo in this many (by sorted path) is the validation split.
VALID_EVERY = 15
#: Crops in one epoch of a photo run (the training loop's unit of reshuffling).
CROPS_PER_EPOCH = 100_000
#: Validation crops: fixed, from the held-out photos.
VALID_CROPS = 256
#: Side of the central square of each held-out photo that `central_crops` evaluates
#: (the model card's −ELBO of a photo model).
EVAL_SIDE = 256


def photo_files(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursively), sorted by path."""
    from bbcodec.models.data import IMAGE_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of photos")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < VALID_EVERY:
        raise DataError(
            f"{root}: {len(files)} photos; a photo model needs at least {VALID_EVERY} "
            "(one in every {VALID_EVERY} is held out for validation)"
        )
    return files


def load_photos(root: str | Path, kind: str, split: str) -> list[np.ndarray]:
    """The ``train`` or ``valid`` photos under ``root`` as (H, W, 3) RGB or (H, W) luma."""
    from bbcodec.models.data import read_image

    if split not in ("train", "valid"):
        raise ValueError(f"photo split is train or valid, not {split!r}")
    files = photo_files(root)
    chosen = [
        f for i, f in enumerate(files) if (i % VALID_EVERY == VALID_EVERY - 1) == (split == "valid")
    ]
    photos = []
    for f in chosen:
        image, _ = read_image(f, max_pixels=None)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(to_kind(image, kind))
    return photos


def to_kind(image: np.ndarray, kind: str) -> np.ndarray:
    """An (H, W, 3) RGB photo as ``kind``: itself, or its luma as Pillow computes it."""
    if kind == "rgb":
        return np.ascontiguousarray(image)
    if kind == "grey":
        return np.array(Image.fromarray(image, "RGB").convert("L"))
    raise ValueError(f"photo models are rgb or grey, not {kind}")


class PhotoCrops:
    """``n`` crops of ``(crop_h, crop_w)`` pixels of ``photos``; crop ``k`` fixed by (seed, k).

    Indexing with an integer array gives (len(idx), crop_h, crop_w[, 3]) uint8, as the
    training loop indexes an image array.
    """

    def __init__(self, photos: list[np.ndarray], crop_hw: tuple[int, int], n: int, seed: int = 0):
        self.photos, self.crop_hw, self.n, self.seed = photos, crop_hw, n, seed
        crop_h, crop_w = crop_hw
        small = [i for i, p in enumerate(photos) if p.shape[0] < crop_h or p.shape[1] < crop_w]
        if small:
            raise DataError(f"photo {small[0]} is smaller than a {crop_h}x{crop_w} crop")
        areas = np.array([(p.shape[0] - crop_h + 1) * (p.shape[1] - crop_w + 1) for p in photos])
        self._cumulative = np.cumsum(areas / areas.sum())
        first = photos[0]
        self.shape = (n, crop_h, crop_w) + first.shape[2:]

    def __len__(self) -> int:
        return self.n

    def crop(self, k: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(k)])
        index = min(int(np.searchsorted(self._cumulative, rng.random())), len(self.photos) - 1)
        photo = self.photos[index]
        crop_h, crop_w = self.crop_hw
        top = int(rng.integers(photo.shape[0] - crop_h + 1))
        left = int(rng.integers(photo.shape[1] - crop_w + 1))
        out = photo[top : top + crop_h, left : left + crop_w]
        return out[:, ::-1] if rng.random() < 0.5 else out

    def __getitem__(self, idx) -> np.ndarray:
        return np.stack([self.crop(k) for k in np.atleast_1d(idx)])


def central_crops(photos: list[np.ndarray], side: int) -> np.ndarray:
    """(N, side, side[, 3]): the central ``side`` × ``side`` square of each photo — the
    held-out photos' evaluation set of a photo model (whole tiles, one shape)."""
    out = []
    for photo in photos:
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        if top < 0 or left < 0:
            raise DataError(f"a {photo.shape[0]}x{photo.shape[1]} photo is smaller than {side}")
        out.append(photo[top : top + side, left : left + side])
    return np.stack(out)
