"""Torch models (PixelCNN decoders, VLAE, delta-VAE), training and evaluation."""
