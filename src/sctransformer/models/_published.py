"""The named models: the bundled demonstration model and the published foundation models,
each file pinned to a revision and a sha256 (:data:`REGISTRY`).
"""

from __future__ import annotations

from ._entry import ModelEntry, RemoteFile

REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    REGISTRY[entry.name] = entry


register(
    ModelEntry(
        name="sct-tiny-pbmc",
        description=(
            "demonstration model: 2-layer, 64-dim rank-input encoder pretrained (MLM, 30 "
            "epochs) on the 700 bundled pbmc68k cells; not a foundation model"
        ),
        source="shipped inside the package (scripts/train_tiny.py)",
        license="BSD-3-Clause",
        citation="sctransformer; data: scanpy.datasets.pbmc68k_reduced (10x Genomics PBMC 68k)",
        size_bytes=0,
        bundled="sct-tiny-pbmc",
    )
)


_GF = (
    "https://huggingface.co/ctheodoris/Geneformer/resolve/ff551ee40322e9f58bd86ca867d76cf78f26e41b/"
)
_SCGPT = (
    "https://huggingface.co/wanglab/scGPT-human/resolve/a24c237737a40f3720f75abb555489e9fe753be6/"
)
_GF_LICENSE = "Apache-2.0 (Geneformer model card on the Hugging Face Hub)"
_GF_V1_CITATION = (
    "Theodoris CV et al. Transfer learning enables predictions in network biology. "
    "Nature 618, 616-624 (2023). doi:10.1038/s41586-023-06139-9"
)
_GF_V2_CITATION = (
    "Chen H et al. Quantized multi-task learning for context-specific representations of gene "
    "network dynamics. bioRxiv (2024). doi:10.1101/2024.08.16.608180; and " + _GF_V1_CITATION
)
# BertForMaskedLM settings shared by every Geneformer model (from their config.json files)
_GF_BERT = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_act": "relu",
    "layer_norm_eps": 1e-12,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
}
_GF_V1_DICTS = {
    "token_dictionary": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl",
        "ab9dc40973fa5224d77b793e2fd114cacf3d08423ed9c4c49caf0ba9c7f218f1",
    ),
    "gene_median_dictionary": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/gene_median_dictionary_gc30M.pkl",
        "b3b589bb5ec75040d05fc44dd6bf0184cf87f3c362cf158d196a6ed3b7fe5f39",
    ),
    "gene_name_id_dict": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/gene_name_id_dict_gc30M.pkl",
        "55e67962e79c0039a6c32d43c5c99f38e51964bbcfa32f736150ee1e285c438c",
    ),
    "ensembl_mapping_dict": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/ensembl_mapping_dict_gc30M.pkl",
        "eac0fb0b3007267871b6305ac0003ceba19d4f28d85686cb9067ecf142787869",
    ),
}
_GF_V2_DICTS = {
    "token_dictionary": RemoteFile(
        _GF + "geneformer/token_dictionary_gc104M.pkl",
        "67c445f4385127adfc48dcc072320cd65d6822829bf27dd38070e6e787bc597f",
        425_590,
    ),
    "gene_median_dictionary": RemoteFile(
        _GF + "geneformer/gene_median_dictionary_gc104M.pkl",
        "a51c53f6a771d64508dfaf61529df70e394c53bd20856926117ae5d641a24bf5",
    ),
    "gene_name_id_dict": RemoteFile(
        _GF + "geneformer/gene_name_id_dict_gc104M.pkl",
        "fabfa0c2f49c598c59ae432a32c3499a5908c033756c663b5e0cddf58deea8e1",
    ),
    "ensembl_mapping_dict": RemoteFile(
        _GF + "geneformer/ensembl_mapping_dict_gc104M.pkl",
        "0819bcbd869cfa14279449b037eb9ed1d09a91310e77bd1a19d927465030e95c",
    ),
}


def _geneformer(name, folder, sha256, size, dicts, citation, description, **shape):
    return ModelEntry(
        name=name,
        description=description,
        source=f"huggingface.co/ctheodoris/Geneformer @ ff551ee ({folder})",
        license=_GF_LICENSE,
        citation=citation,
        size_bytes=size + sum(f.size or 0 for f in dicts.values()),
        files={"weights": RemoteFile(f"{_GF}{folder}/model.safetensors", sha256, size), **dicts},
        kind="geneformer",
        config={**_GF_BERT, **shape},
    )


register(
    _geneformer(
        "geneformer-v1-10m",
        "Geneformer-V1-10M",
        "a5e33a757431643b3697de7ef6127950cdc49e06e58d4266b3a3ab191b683f14",
        41_183_536,
        _GF_V1_DICTS,
        _GF_V1_CITATION,
        "Geneformer V1, 10M parameters: 6 layers, 256 wide, 2,048 genes ranked by "
        "median-scaled expression, pretrained on Genecorpus-30M (MLM)",
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=2048,
        vocab_size=25_426,
    )
)
register(
    _geneformer(
        "geneformer-v2-104m",
        "Geneformer-V2-104M",
        "fff5cba29ddd8792991fa77b4872246fbe548a178cebda3775cdc72b67780e7f",
        417_571_156,
        _GF_V2_DICTS,
        _GF_V2_CITATION,
        "Geneformer V2, 104M parameters: 12 layers, 768 wide, <cls> + 4,094 ranked genes + "
        "<eos>, pretrained on Genecorpus-104M (MLM)",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=4096,
        vocab_size=20_275,
    )
)
register(
    _geneformer(
        "geneformer-v2-316m",
        "Geneformer-V2-316M",
        "965ceccea81953d362081ef3843560a0e4fef88d396c28017881f1e94b1246f3",
        1_265_455_076,
        _GF_V2_DICTS,
        _GF_V2_CITATION,
        "Geneformer V2, 316M parameters: 18 layers, 1,152 wide, <cls> + 4,094 ranked genes + "
        "<eos>, pretrained on Genecorpus-104M (MLM)",
        hidden_size=1152,
        num_hidden_layers=18,
        num_attention_heads=18,
        intermediate_size=4608,
        max_position_embeddings=4096,
        vocab_size=20_275,
    )
)
register(
    ModelEntry(
        name="scgpt-human",
        description=(
            "scGPT whole-human: 12 layers, 512 wide, 8 heads, continuous value input of 51 "
            "adaptive bins, up to 1,200 genes, pretrained on 33M human cells (CELLxGENE)"
        ),
        source="huggingface.co/wanglab/scGPT-human @ a24c237 (mirror of scGPT's release)",
        license="MIT (scGPT repository licence, github.com/bowang-lab/scGPT)",
        citation=(
            "Cui H et al. scGPT: toward building a foundation model for single-cell multi-omics "
            "using generative AI. Nature Methods 21, 1470-1480 (2024). "
            "doi:10.1038/s41592-024-02201-0"
        ),
        size_bytes=205_385_258,
        files={
            "weights": RemoteFile(
                _SCGPT + "best_model.pt",
                "6cb5d451ab5c4b33eb673adbe4fddc61d2389df1b89b7651a9fe2e557572b922",
                205_385_258,
            ),
            "args": RemoteFile(
                _SCGPT + "args.json",
                "c18e075e018140cb8b2d9029387b9de26607a5ce6a8ccabd6ead70cd76b95d60",
            ),
            "vocab": RemoteFile(
                _SCGPT + "vocab.json",
                "acca93d114ca62c3f0f50debbd23e8c87f0714f4737764454f6b2b13f2e8580f",
            ),
        },
        kind="scgpt",
        config={"embsize": 512, "nlayers": 12, "nheads": 8, "d_hid": 512, "n_bins": 51},
    )
)
