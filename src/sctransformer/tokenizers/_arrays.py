"""Padded token ids and values of a set of cells: the one array type (no AnnData here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TokenArrays:
    """Token ids and values of ``n`` cells, right-padded to a common width.

    Attributes
    ----------
    tokens
        ``(n, L)`` integer ids (var columns for ``sentence``), ``pad_id`` past each length.
    values
        ``(n, L)`` float32, ``pad_value`` at padding and special positions.
    lengths
        ``(n,)`` real tokens per cell, special tokens included.
    pad_id, pad_value
        The padding.
    all_integer, max_value
        What encoding saw of the input values (integer counts?, largest value).
    """

    tokens: np.ndarray
    values: np.ndarray
    lengths: np.ndarray
    pad_id: int = -1
    pad_value: float = -2.0
    all_integer: bool = True
    max_value: float = 0.0

    def __post_init__(self) -> None:
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.tokens.shape != self.values.shape or len(self.lengths) != len(self.tokens):
            raise ValueError(
                f"tokens {self.tokens.shape}, values {self.values.shape} and lengths "
                f"{self.lengths.shape} do not describe the same cells"
            )

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, idx) -> TokenArrays:
        """The cells ``idx`` (positions or a boolean mask)."""
        return TokenArrays(
            tokens=self.tokens[idx],
            values=self.values[idx],
            lengths=self.lengths[idx],
            pad_id=self.pad_id,
            pad_value=self.pad_value,
        )
