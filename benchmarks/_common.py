"""What the benchmark scripts share: the CPU's name and Geneformer V1's shape."""

from __future__ import annotations

import contextlib
import platform

# Geneformer V1 (Theodoris et al., Nature 2023; the published model's config.json), as
# transformers.BertConfig arguments
GENEFORMER_V1 = dict(
    vocab_size=25426,
    hidden_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    hidden_act="relu",
    max_position_embeddings=2048,
    layer_norm_eps=1e-12,
    pad_token_id=0,
    hidden_dropout_prob=0.02,
    attention_probs_dropout_prob=0.02,
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
