"""Numeric precision: bf16 where it is measured faster on the machine at hand, fp32 otherwise.

``precision="auto"`` is decided by a measurement, not by a CPU flag alone: whether bf16 pays off
depends on the CPU (AVX512-BF16 doubles GEMM throughput, AMX multiplies it; without either bf16
is emulated), on the work (inference runs packed bf16 GEMMs, training runs autocast with fp32
master weights and casts) and on the shape (long cells spend their time in attention). The first
``"auto"`` call for a given device, kind of work and layer shape times one encoder layer of that
shape in fp32 and in bf16 (a fraction of a second) and the faster one is kept for the rest of
the process. Callers record the resolved name (:func:`choose_precision`) in their parameters.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from .config import TransformerConfig

__all__ = [
    "autocast_context",
    "choose_precision",
    "cpu_supports_bf16",
    "measure_precisions",
    "resolve_precision",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# bf16 must beat fp32 by this factor to be chosen: fp32 is the more accurate, and a near-tie on a
# busy machine is noise
_MARGIN = 0.9
# the timed layer sees at most this many tokens (the attention share is measured at long cells
# without spending seconds on it)
_MAX_PROBE_TOKENS = 2048


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    Without them bf16 is emulated and slower than fp32, so ``"auto"`` stays in fp32 without
    measuring.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def _probe_shape(config: TransformerConfig | None, length: int | None) -> tuple[int, int, int, int]:
    """(hidden, heads, ffn, tokens) of the timed layer, tokens rounded up to a power of two."""
    hidden, heads, ffn = (
        (256, 4, 512)
        if config is None
        else (
            config.hidden_size,
            config.num_heads,
            config.ffn_size,
        )
    )
    n = max(64, min(int(length or 1024), _MAX_PROBE_TOKENS))
    return hidden, heads, ffn, 1 << (n - 1).bit_length()


def _time_layer(layer, x, dtype: torch.dtype, training: bool, device: torch.device) -> float:
    from .varlen import Workspace

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    if training:
        ctx = (
            torch.autocast(device.type, enabled=False)
            if dtype == torch.float32
            else torch.autocast(device.type, dtype=dtype)
        )
        with torch.enable_grad(), ctx:
            out, _ = layer(x[None])
            out.float().sum().backward()
    else:
        with torch.no_grad():
            layer.forward_packed(x.to(dtype), [0, x.shape[0]], dtype=dtype, workspace=Workspace())
    sync()
    return time.perf_counter() - start


@functools.cache
def _measured(
    device: str, training: bool, hidden: int, heads: int, ffn: int, tokens: int
) -> dict[str, float]:
    from .config import TransformerConfig
    from .layers import EncoderLayer

    dev = torch.device(device)
    cfg = TransformerConfig(
        vocab_size=8,
        hidden_size=hidden,
        num_heads=heads,
        ffn_size=ffn,
        num_layers=1,
        dropout=0.0,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = EncoderLayer(cfg).to(dev).train(training)
        x = torch.randn(tokens, hidden, device=dev)
    times = {"fp32": float("inf"), "bf16": float("inf")}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for dtype in dtypes.values():  # warm-up: kernels, caches
        _time_layer(layer, x, dtype, training, dev)
    for _ in range(2):  # interleaved, so load from other processes hits both alike
        for name, dtype in dtypes.items():
            times[name] = min(times[name], _time_layer(layer, x, dtype, training, dev))
    return times


def measure_precisions(
    device: torch.device | str = "cpu",
    *,
    config: TransformerConfig | None = None,
    length: int | None = None,
    training: bool = False,
) -> dict[str, float]:
    """Seconds one encoder layer of ``config``'s shape takes in fp32 and in bf16 on ``device``.

    Inference times the packed path (:meth:`~sctransformer.nn.layers.EncoderLayer.forward_packed`
    with weights cast once); training times forward + backward under autocast. ``length``
    (capped at 2,048 and rounded up to a power of two) is the number of tokens. Measured once
    per process for each (device, training, shape) and cached.

    Returns
    -------
    ``{"fp32": seconds, "bf16": seconds}``.
    """
    hidden, heads, ffn, tokens = _probe_shape(config, length)
    return dict(_measured(str(torch.device(device)), training, hidden, heads, ffn, tokens))


def resolve_precision(
    precision: Precision,
    device: torch.device | str,
    *,
    config: TransformerConfig | None = None,
    length: int | None = None,
    training: bool = False,
) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``"auto"`` → on CUDA bf16 where supported, fp32 otherwise; on a CPU without AVX512-BF16/AMX
    fp32; on other CPUs whichever of fp32 and bf16 :func:`measure_precisions` finds faster for
    ``config``'s layer shape at ``length`` tokens (``training`` selects forward + backward under
    autocast rather than packed inference); bf16 must be at least 10% faster to be chosen.
    ``"fp16"`` only on CUDA.

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
    if device.type != "cpu" or not cpu_supports_bf16():
        return torch.float32
    times = measure_precisions(device, config=config, length=length, training=training)
    return torch.bfloat16 if times["bf16"] < _MARGIN * times["fp32"] else torch.float32


def choose_precision(
    precision: Precision,
    device: torch.device | str,
    *,
    config: TransformerConfig | None = None,
    length: int | None = None,
    training: bool = False,
) -> str:
    """:func:`resolve_precision` as a name (``"fp32"``, ``"bf16"``, ``"fp16"``) to record in
    params and pass on, so that ``"auto"`` is decided once per call.
    """
    return _NAMES[
        resolve_precision(precision, device, config=config, length=length, training=training)
    ]


def autocast_context(
    precision: Precision,
    device: torch.device | str,
    *,
    config: TransformerConfig | None = None,
    length: int | None = None,
    training: bool = False,
) -> contextlib.AbstractContextManager:
    """Context manager running the enclosed torch ops at ``precision`` on ``device``.

    ``"fp32"`` (or ``"auto"`` resolved to fp32) disables autocast; otherwise
    :func:`torch.autocast` with the resolved dtype (``config``, ``length``, ``training``: see
    :func:`resolve_precision`).

    Examples
    --------
    >>> with autocast_context("auto", "cpu"):  # doctest: +SKIP
    ...     out = model(tokens)
    """
    device = torch.device(device)
    dtype = resolve_precision(precision, device, config=config, length=length, training=training)
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
