"""bbcodec: lossless image compression with bits-back ANS coding."""
