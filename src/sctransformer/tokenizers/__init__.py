"""Encodings of expression into tokens: numpy, scipy and numba kernels; no AnnData.

:class:`GeneVocab` is the package's one vocabulary class; :class:`Encoding` holds the
parameters of one encoding and :func:`encode_chunk` applies it to a CSR block of cells.
"""

from ._encode import METHODS, Encoded, Encoding, encode_chunk
from ._vocab import CLS, DEFAULT_SPECIALS, EOS, MASK, PAD, GeneVocab, condition_token

__all__ = [
    "CLS",
    "DEFAULT_SPECIALS",
    "EOS",
    "MASK",
    "METHODS",
    "PAD",
    "Encoded",
    "Encoding",
    "GeneVocab",
    "condition_token",
    "encode_chunk",
]
