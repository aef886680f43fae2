"""`bbcodec latent`: look at what a model's latent holds, as PNG grids and JSON numbers.

Sub-commands (the pictures and numbers come from `bbcodec.models.latent`):

- ``reconstruct`` — images → posterior mean z → several decodes sampled from p(x|z);
- ``sample`` — z from the model's coding prior → sampled images;
- ``interpolate`` — two images → their posterior means → spherical and linear paths;
- ``attribute`` — an attribute vector (mean z of one class minus another's) added to
  images' latents in steps;
- ``report`` — KL per latent dimension (bar plot), active units, rate/distortion split.

Images must have the model's own size (photo-sized, tiled decoding is not done here).
Every run repeats exactly under the same ``--seed`` (and device and thread count).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bbcodec.cli.args import (
    add_model_and_data,
    check_output_folder,
    non_negative_int,
    positive_float,
    positive_int,
    setup_torch,
    sub,
    write_json,
)
from bbcodec.errors import UsageError

LATENT_DESCRIPTION = """\
Look at what a model's latent z holds, on images of the model's own size: each
sub-command writes a PNG grid (-o) and, with --json, its numbers. Decodes sample every
pixel from p(x|z), one at a time, so the grids show what z fixes and what the PixelCNN
decoder fills in (the VLAE's "lossy code"). Runs repeat exactly under the same --seed.
Photo-sized models and images of another size than the model's are refused."""
LATENT_EXAMPLE = (
    "bbcodec latent reconstruct --model vlae-bmnist --data ../shared/data/binarized_mnist.npz"
    " -o recon.png"
)

RECONSTRUCT_DESCRIPTION = """\
N images spread evenly over the split (it may be sorted by class, as binarized MNIST's
test split is) → their posterior means z = E_q[z|x] → --samples decodes of each z, every
pixel sampled from p(x|z). Grid: one row per image, the original first, then the
samples. What stays the same across a row is what z keeps; what changes is what the
decoder resamples. JSON: per image, its index, −log p(x|z) at the mean in nats and each
sample's mean absolute difference from the original (pixel values; for binary images
the fraction of pixels that differ)."""

SAMPLE_DESCRIPTION = """\
N latents drawn from the model's coding prior (the VLAE's MADE prior; the δ-VAE's
auxiliary MADE prior, the one its codec uses), each decoded by sampling every pixel from
p(x|z). Grid: near-square, ⌈√N⌉ columns, row by row. JSON: the latents."""

INTERPOLATE_DESCRIPTION = """\
Images I and J of the split → their posterior means → --steps latents from one to the
other, along the spherical path (slerp, first row) and the straight line (second row),
t = 0 … 1. Each row: image I, the decodes, image J. Every decode uses the same random
numbers (the pixel sampler restarts from --seed for each one), so the cells differ only
by z. JSON: t, the norm of z along each path, the angle between the two latents."""

ATTRIBUTE_DESCRIPTION = """\
An attribute vector v = mean posterior mean of class --to minus that of class --from,
each over the first --per-class images of the class; then -n further images of class
--from get z + α·v for --steps values of α from 0 to --scale, decoded with the same random
numbers for every cell (the sampler restarts from --seed), so a row changes only by z.
Grid: one row per image: the original, then the decodes.

Labels (--labels) must give one class per image of the split: an IDX label file (MNIST's
../shared/data/mnist/t10k-labels-idx1-ubyte.gz for the test split) or an .npz holding
y_<split> or labels (../shared/data/cifar10.npz: 0 airplane, 1 automobile, 2 bird, 3 cat,
4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck). Binarized MNIST's test split is the
MNIST test set stably sorted by label: use the t10k labels with --labels-sorted. Its
train and valid splits are a shuffled sample with no labels available."""
ATTRIBUTE_EXAMPLE = (
    "bbcodec latent attribute --model vlae-bmnist --data ../shared/data/binarized_mnist.npz"
    " --labels ../shared/data/mnist/t10k-labels-idx1-ubyte.gz --labels-sorted --from 1 --to 7"
    " -o one-to-seven.png"
)

REPORT_DESCRIPTION = """\
How the model uses its latent on N images spread evenly over the split (all of them if
N is larger): the KL (rate) and the
reconstruction term (distortion) in nats per image and bits/dim, one z-sample per image
under the coding prior (as `bbcodec eval`); each latent dimension's share of the KL
(log q(z_i|x) − log p(z_i|z_<i), averaged over the images; the shares sum to the KL);
active units (Burda et al. 2016: Var_x E_q[z_i] > 0.01). The PNG is a bar plot of the KL
per dimension, active dimensions in colour."""


# ----- arguments ---------------------------------------------------------------------------


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2, got {text!r}")
    return value


def _add_latent(subparsers, common) -> None:
    p = sub(
        subparsers,
        "latent",
        "look at the latents: reconstructions, samples, paths, attribute vectors, KL per dimension",
        LATENT_DESCRIPTION,
        LATENT_EXAMPLE,
        [],
    )
    commands = p.add_subparsers(
        dest="latent_command", title="sub-commands", metavar="SUB", required=True
    )

    def command(name, summary, description, example, *, data=True, grid=True):
        q = sub(commands, name, summary, description, example, [common])
        if data:
            add_model_and_data(q)
        else:
            q.add_argument(
                "--model",
                required=True,
                metavar="NAME|PATH",
                help="a shipped model name (see `bbcodec models`), a .safetensors file or a run folder",
            )
        q.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the PNG to write")
        q.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
        if grid:
            q.add_argument(
                "--zoom",
                type=positive_int,
                default=2,
                metavar="Z",
                help="draw each pixel as Z×Z (default 2)",
            )
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        q.set_defaults(func=_cmd_latent)
        return q

    data = "../shared/data/binarized_mnist.npz"
    q = command(
        "reconstruct",
        "images → posterior mean → sampled decodes",
        RECONSTRUCT_DESCRIPTION,
        f"bbcodec latent reconstruct --model vlae-bmnist "
        f"--data {data} -n 8 --samples 4 -o recon.png",
    )
    q.add_argument("-n", type=positive_int, default=8, metavar="N", help="images (default 8)")
    q.add_argument(
        "--samples", type=positive_int, default=4, metavar="S", help="decodes per image (default 4)"
    )

    q = command(
        "sample",
        "latents from the prior → sampled images",
        SAMPLE_DESCRIPTION,
        "bbcodec latent sample --model vlae-bmnist -n 16 -o samples.png",
        data=False,
    )
    q.add_argument("-n", type=positive_int, default=16, metavar="N", help="images (default 16)")

    q = command(
        "interpolate",
        "two images' latents joined by slerp and by a line",
        INTERPOLATE_DESCRIPTION,
        f"bbcodec latent interpolate --model vlae-bmnist --data {data} --pair 0 9000 -o path.png",
    )
    q.add_argument(
        "--pair",
        required=True,
        nargs=2,
        type=non_negative_int,
        metavar=("I", "J"),
        help="indices of the two images in the split",
    )
    q.add_argument(
        "--steps",
        type=_at_least_two,
        default=8,
        metavar="K",
        help="decodes along each path, ends included (default 8)",
    )

    q = command(
        "attribute",
        "add a class-difference vector to images' latents",
        ATTRIBUTE_DESCRIPTION,
        ATTRIBUTE_EXAMPLE,
    )
    q.add_argument(
        "--labels",
        required=True,
        metavar="PATH",
        help="one class label per image of the split: IDX label file or .npz",
    )
    q.add_argument(
        "--labels-sorted",
        action="store_true",
        help="the images are the labelled set stably sorted by label (binarized "
        "MNIST's test split with the MNIST t10k labels)",
    )
    q.add_argument(
        "--from",
        dest="source",
        required=True,
        type=int,
        metavar="A",
        help="the class the vector starts from (and the images edited)",
    )
    q.add_argument(
        "--to",
        dest="target",
        required=True,
        type=int,
        metavar="B",
        help="the class the vector points to",
    )
    q.add_argument(
        "-n",
        type=positive_int,
        default=4,
        metavar="N",
        help="images of class A to edit, one row each (default 4)",
    )
    q.add_argument(
        "--per-class",
        type=positive_int,
        default=500,
        metavar="M",
        help="images of each class averaged for the vector (default 500)",
    )
    q.add_argument(
        "--steps",
        type=_at_least_two,
        default=5,
        metavar="K",
        help="values of α, 0 to --scale (default 5)",
    )
    q.add_argument(
        "--scale", type=positive_float, default=1.0, metavar="S", help="the largest α (default 1)"
    )

    q = command(
        "report",
        "KL per latent dimension, active units, rate/distortion",
        REPORT_DESCRIPTION,
        f"bbcodec latent report --model vlae-bmnist --data {data} -n 1000 -o kl.png --json kl.json",
        grid=False,
    )
    q.add_argument("-n", type=positive_int, default=1000, metavar="N", help="images (default 1000)")
    q.add_argument(
        "--batch-size",
        type=positive_int,
        default=250,
        metavar="B",
        help="images per batch (default 250)",
    )


# ----- running -----------------------------------------------------------------------------


def _cmd_latent(args: argparse.Namespace) -> int:
    check_output_folder(args.output)
    check_output_folder(args.json)
    setup_torch(args)
    from bbcodec.zoo import load_model

    model = load_model(args.model, device=args.device)
    images = None
    if args.latent_command != "sample":
        from bbcodec.models.data import load_images
        from bbcodec.models.evaluate import check_images

        images = load_images(args.data, args.split)
        check_images(model.config, images, f"{args.data} [{args.split}]")
    run = {
        "reconstruct": _reconstruct,
        "sample": _sample,
        "interpolate": _interpolate,
        "attribute": _attribute,
        "report": _report,
    }[args.latent_command]
    numbers = run(args, model, images)
    result = {
        "command": f"latent {args.latent_command}",
        "model": str(args.model),
        "data": getattr(args, "data", None),
        "split": getattr(args, "split", None),
        "seed": args.seed,
        "png": str(args.output),
        **numbers,
    }
    print(f"wrote {args.output}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _save_grid(args, model, cells, layout: str) -> dict:
    """Write cells (R, C, h, w[, 3]) in the model's kind as the PNG grid; its JSON entry."""
    from PIL import Image

    from bbcodec.models.latent import display, grid

    pixels = grid(display(cells, model.config.kind), zoom=args.zoom)
    tmp = Path(args.output).with_name(f".{Path(args.output).name}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, args.output)
    rows, cols = cells.shape[:2]
    print(f"{layout}: {rows} × {cols} cells, {pixels.shape[1]}×{pixels.shape[0]} pixels")
    return {
        "rows": rows,
        "cols": cols,
        "cell_hw": list(model.config.image_hw),
        "zoom": args.zoom,
        "layout": layout,
    }


def _generator(args):
    import torch

    return torch.Generator().manual_seed(args.seed)


def _reconstruct(args, model, images) -> dict:
    import numpy as np
    import torch

    from bbcodec.models import heads
    from bbcodec.models.latent import evenly_spaced, posterior_means, sample_pixels

    indices = evenly_spaced(len(images), args.n)
    x = images[indices]
    z = posterior_means(model, x)
    samples = sample_pixels(
        model, z.repeat_interleave(args.samples, 0), _generator(args), progress=not args.quiet
    ).numpy()
    samples = samples.reshape(len(x), args.samples, *x.shape[1:])
    with torch.no_grad():
        xt = torch.from_numpy(x).to(z.device)
        params = model.likelihood_params(xt, z)
        recon = -heads.log_prob(model.config.kind, xt, params, model.config.n_mixtures)
    diff = np.abs(samples.astype(np.int16) - x[:, None].astype(np.int16))
    mean_abs_diff = diff.reshape(len(x), args.samples, -1).mean(2)
    cells = np.concatenate([x[:, None], samples], 1)
    layout = "row per image: the original, then samples from p(x | z = posterior mean)"
    return {
        "grid": _save_grid(args, model, cells, layout),
        "images": [
            {
                "index": int(index),
                "recon_nats_at_mean": float(recon[k]),
                "sample_mean_abs_diff": mean_abs_diff[k].tolist(),
            }
            for k, index in enumerate(indices)
        ],
    }


def _sample(args, model, images) -> dict:
    import numpy as np

    from bbcodec.models.latent import BACKGROUND, grid_shape, sample_pixels, sample_prior

    generator = _generator(args)
    z = sample_prior(model, args.n, generator)
    x = sample_pixels(model, z, generator, progress=not args.quiet).numpy()
    rows, cols = grid_shape(args.n)
    fill = 0 if model.config.kind == "binary" else BACKGROUND  # shown as black / grey
    cells = np.full((rows * cols, *x.shape[1:]), fill, np.uint8)
    cells[: args.n] = x
    cells = cells.reshape(rows, cols, *x.shape[1:])
    prior = "MADE" if model.aux_prior is None else "auxiliary MADE (δ-VAE)"
    return {
        "grid": _save_grid(args, model, cells, f"{args.n} samples, row by row"),
        "prior": prior,
        "z": z.cpu().tolist(),
    }


def _interpolate(args, model, images) -> dict:
    import math

    import numpy as np
    import torch

    from bbcodec.models.latent import posterior_means, sample_pixels_shared, slerp

    i, j = args.pair
    for k in (i, j):
        if k >= len(images):
            raise UsageError(
                f"--pair {i} {j}: {args.data} [{args.split}] has {len(images)} images "
                f"(indices 0..{len(images) - 1})"
            )
    z = posterior_means(model, images[[i, j]])
    t = torch.linspace(0, 1, args.steps, device=z.device)
    spherical = slerp(z[0], z[1], t)
    linear = z[0] + t[:, None] * (z[1] - z[0])
    decoded = sample_pixels_shared(
        model, torch.cat([spherical, linear]), args.seed, progress=not args.quiet
    ).numpy()
    decoded = decoded.reshape(2, args.steps, *images.shape[1:])
    ends = np.stack([images[[i, j]]] * 2)  # (2 rows, 2 ends, ...)
    cells = np.concatenate([ends[:, :1], decoded, ends[:, 1:]], 1)
    cos = float(torch.dot(z[0], z[1]) / (z[0].norm() * z[1].norm()).clamp(min=1e-30))
    layout = (
        f"row 1 slerp, row 2 linear: image {i}, {args.steps} decodes for t = 0..1, "
        f"image {j}; same sampler noise in every cell"
    )
    return {
        "grid": _save_grid(args, model, cells, layout),
        "pair": [i, j],
        "t": t.tolist(),
        "angle_degrees": math.degrees(math.acos(max(-1.0, min(1.0, cos)))),
        "norm_slerp": spherical.norm(dim=1).tolist(),
        "norm_linear": linear.norm(dim=1).tolist(),
    }


def _attribute(args, model, images) -> dict:
    import numpy as np
    import torch

    from bbcodec.models.latent import (
        attribute_split,
        attribute_vector,
        posterior_means,
        read_labels,
        sample_pixels_shared,
    )

    labels = read_labels(args.labels, args.split, len(images))
    if args.labels_sorted:
        labels = np.sort(labels, kind="stable")
    split = attribute_split(labels, args.source, args.target, args.per_class, args.n)
    vector = attribute_vector(
        posterior_means(model, images[split.source]), posterior_means(model, images[split.target])
    )
    z = posterior_means(model, images[split.edit])
    alphas = torch.linspace(0, args.scale, args.steps, device=z.device)
    edited = z[:, None] + alphas[None, :, None] * vector  # (n, steps, D)
    decoded = sample_pixels_shared(
        model, edited.flatten(0, 1), args.seed, progress=not args.quiet
    ).numpy()
    x = images[split.edit]
    cells = np.concatenate([x[:, None], decoded.reshape(len(x), args.steps, *x.shape[1:])], 1)
    layout = (
        f"row per image of class {args.source}: the original, then z + α·v for "
        f"α = 0..{args.scale:g} (v: class {args.source} → {args.target}); same sampler "
        "noise in every cell"
    )
    return {
        "grid": _save_grid(args, model, cells, layout),
        "labels": str(args.labels),
        "from": args.source,
        "to": args.target,
        "n_from": len(split.source),
        "n_to": len(split.target),
        "edited": split.edit.tolist(),
        "alphas": alphas.tolist(),
        "vector": vector.tolist(),
        "vector_norm": float(vector.norm()),
        "mean_latent_norm": float(z.norm(dim=1).mean()),
    }


def _report(args, model, images) -> dict:
    from bbcodec.models.latent import evenly_spaced, latent_report

    x = images[evenly_spaced(len(images), args.n)]
    r = latent_report(model, x, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
    _plot_kl(r, Path(args.output), str(args.model))
    print(f"KL (rate)      {r.kl_bpd:.4f} bits/dim  {r.kl_nats:10.3f} nats/image")
    print(f"recon          {r.recon_bpd:.4f} bits/dim  {r.recon_nats:10.3f} nats/image")
    print(f"−ELBO          {r.neg_elbo_bpd:.4f} bits/dim  {r.neg_elbo_nats:10.3f} nats/image")
    print(
        f"active units   {r.active_units} / {r.latent_dim}  (Var_x E_q[z_i] > "
        f"{r.active_threshold})  on {r.n_images} images"
    )
    return r.to_dict()


def _plot_kl(r, path: Path, name: str) -> None:
    """Bar plot of the KL per latent dimension, active dimensions in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * r.latent_dim + 2), 4), dpi=100)
    try:
        colours = ["tab:blue" if a else "tab:gray" for a in r.active]
        ax.bar(range(r.latent_dim), r.kl_dims_nats, color=colours)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("latent dimension (coding order); grey: inactive")
        ax.set_ylabel("KL share (nats / image)")
        ax.set_title(
            f"{name}: KL {r.kl_nats:.2f} nats ({r.kl_bpd:.4f} bpd), recon {r.recon_nats:.2f} "
            f"nats, active {r.active_units}/{r.latent_dim}, {r.n_images} images",
            fontsize=9,
        )
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
