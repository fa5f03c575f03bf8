"""Tools: pretraining, embeddings and the tasks built on them."""

from ._embed import embed_cells, embed_genes
from ._pretrain import pretrain

__all__ = ["embed_cells", "embed_genes", "pretrain"]
