"""Names of the AnnData slots this package writes; one place so every module agrees."""

TOKENS = "sct_tokens"  # obsm: int32 token ids, padded
VALUES = "sct_values"  # obsm: float32 values (bin index or expression), padded
N_TOKENS = "sct_n_tokens"  # obs: tokens per cell, specials included
SENTENCE = "sct_sentence"  # obs: Cell2Sentence text
TOKENIZE_UNS = "sct"  # uns: {"params": ..., "vocab": json}
EMBED = "X_sct"  # obsm: cell embeddings
