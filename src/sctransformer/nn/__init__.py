"""Torch building blocks (no AnnData here)."""
