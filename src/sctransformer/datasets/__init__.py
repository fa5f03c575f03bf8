"""Data sets shipped inside installed packages (no network)."""

from ._builtin import celltypist_sample, pbmc68k_counts

__all__ = ["celltypist_sample", "pbmc68k_counts"]
