"""Encodings of expression into tokens: numpy/scipy only, no AnnData."""
