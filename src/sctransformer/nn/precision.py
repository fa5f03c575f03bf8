"""Numeric precision: bf16 where the hardware runs it fast, fp32 otherwise."""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

import torch

__all__ = ["autocast_context", "cpu_supports_bf16", "resolve_precision"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them bf16 is emulated and slower than fp32, so ``"auto"`` stays in fp32.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: Precision, device: torch.device | str) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``"auto"`` → bf16 on CUDA devices that support it and on CPUs with AVX512-BF16/AMX, fp32
    otherwise. ``"fp16"`` only on CUDA.

    Raises
    ------
    ValueError
        For an unknown precision or fp16 off CUDA.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use one of {_PRECISIONS}")
    device = torch.device(device)
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(
                f"precision='fp16' needs a CUDA device (got {device.type!r}); "
                "use 'bf16' or 'auto' on CPU"
            )
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def autocast_context(
    precision: Precision, device: torch.device | str
) -> contextlib.AbstractContextManager:
    """Context manager running the enclosed torch ops at ``precision`` on ``device``.

    ``"fp32"`` (or ``"auto"`` without fast bf16) disables autocast; otherwise
    :func:`torch.autocast` with the resolved dtype.

    Examples
    --------
    >>> with autocast_context("auto", "cpu"):  # doctest: +SKIP
    ...     out = model(tokens)
    """
    device = torch.device(device)
    dtype = resolve_precision(precision, device)
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
