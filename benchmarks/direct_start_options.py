"""How to code a chunk's first image without bits back: the options, measured.

Float estimate (the model's own probabilities, not the coder's) of what one image costs
when its latent is chosen, not sampled: −log2 p(x|z̄) for the pixels plus −log2 P(z̄) for
the latent, averaged over the first N test images, next to the model's −ELBO.

    python benchmarks/direct_start_options.py vlae-bmnist ../shared/data/binarized_mnist.npz 100

Options: the prior's conditional means (no latent bits); the posterior mean rounded to a
fixed grid of step 2^k, coded with the prior's mass of its bin; the prior's mean plus k
steps of s prior standard deviations, k nearest the posterior mean, coded with the mass of
its bin under N(0, 1) — what `bbcodec.codec.adapter.ModelAdapter.direct_walk` does, s = 3.
"""

import math
import sys

import torch

from bbcodec.models import heads
from bbcodec.models.data import load_images
from bbcodec.zoo import load_model

LN2 = math.log(2)


def main(name: str, data: str, n: int) -> None:
    torch.set_num_threads(1)
    model = load_model(name).eval()
    x = torch.from_numpy(load_images(data, "test")[:n])
    config = model.config
    dims = config.total_latent_dim

    def pixel_bits(z: torch.Tensor) -> torch.Tensor:
        params = model.likelihood_params(x, z)
        return -heads.log_prob(config.kind, x, params, config.n_mixtures) / LN2

    def walk(choose) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents dimension by dimension: ``choose(i, mean, std) -> (z_i, bits_i)``."""
        z, bits = torch.zeros(len(x), dims), torch.zeros(len(x))
        for i in range(dims):
            g = model.prior_step(z, i)
            z[:, i], b = choose(i, g.mean, g.std)
            bits += b
        return z, bits

    def bin_bits(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return -torch.log2((hi - lo).clamp_min(2**-24))

    with torch.no_grad():
        q = model.posterior(x)
        terms = model.elbo_terms(x)
        print(f"{name}, {n} images: −ELBO {terms.neg_elbo_nats.mean() / LN2:.1f} bits")
        z, _ = walk(lambda i, mean, std: (mean, torch.zeros_like(mean)))
        print(f"  prior's means, no latent bits: {pixel_bits(z).mean():.1f}")
        for k in range(-4, 3):
            step = 2.0**k

            def on_grid(i, mean, std, step=step):
                v = torch.round(q.mean[:, i] / step) * step
                cdf = torch.special.ndtr
                return v, bin_bits(
                    cdf((v - step / 2 - mean) / std), cdf((v + step / 2 - mean) / std)
                )

            z, latent = walk(on_grid)
            total = (pixel_bits(z) + latent).mean()
            print(f"  posterior mean on a grid of 2^{k}: {total:.1f}")
        for s in (1.0, 2.0, 3.0, 4.0):

            def relative(i, mean, std, s=s):
                k = torch.round((q.mean[:, i] - mean) / (std * s))
                cdf = torch.special.ndtr
                return mean + std * s * k, bin_bits(cdf((k - 0.5) * s), cdf((k + 0.5) * s))

            z, latent = walk(relative)
            total = (pixel_bits(z) + latent).mean()
            print(f"  prior mean + k·{s:g} prior std: {total:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100)
