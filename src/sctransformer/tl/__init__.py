"""Tools: pretraining, embeddings and the tasks built on them."""

from ._annotate import annotate
from ._annotator import CellAnnotator
from ._attention_grn import attention_grn
from ._benchmark import benchmark, to_czbenchmarks
from ._embed import embed_cells, embed_genes
from ._integration import integration_metrics
from ._perturb import in_silico_perturb
from ._pretrain import pretrain
from ._soma import embed_soma

__all__ = [
    "CellAnnotator",
    "annotate",
    "attention_grn",
    "benchmark",
    "embed_cells",
    "embed_genes",
    "embed_soma",
    "in_silico_perturb",
    "integration_metrics",
    "pretrain",
    "to_czbenchmarks",
]
