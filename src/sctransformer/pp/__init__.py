"""Preprocessing: AnnData → transformer inputs."""

from ._tokenize import tokenize

__all__ = ["tokenize"]
