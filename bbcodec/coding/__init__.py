"""Entropy-coding layer: an ANS message and push/pop codecs (numpy and constriction only)."""
