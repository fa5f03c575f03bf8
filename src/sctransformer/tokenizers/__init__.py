"""Encodings of expression into tokens: numpy, scipy and numba kernels; no AnnData.

:class:`GeneVocab` is the package's one vocabulary class; :class:`Encoding` holds the
parameters of one encoding, :func:`encode_chunk` applies it to a CSR block of cells and
:class:`TokenArrays` holds the result.
"""

from ._arrays import TokenArrays
from ._encode import METHODS, Encoding, encode_chunk
from ._vocab import (
    CLS,
    DEFAULT_SPECIALS,
    EOS,
    MASK,
    PAD,
    GeneVocab,
    condition_token,
    human_gene_table,
)

__all__ = [
    "CLS",
    "DEFAULT_SPECIALS",
    "EOS",
    "MASK",
    "METHODS",
    "PAD",
    "Encoding",
    "GeneVocab",
    "TokenArrays",
    "condition_token",
    "encode_chunk",
    "human_gene_table",
]
