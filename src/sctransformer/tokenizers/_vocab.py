"""The one vocabulary class: genes, special tokens and condition tokens."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
DEFAULT_SPECIALS = (PAD, MASK, CLS, EOS)
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")


def condition_token(kind: str, value: object) -> str:
    """The token that stands for ``value`` of a condition ``kind`` (e.g. ``<batch=donor1>``)."""
    return f"<{kind}={value}>"


class GeneVocab:
    """Map genes, special tokens and condition tokens to integer ids.

    Parameters
    ----------
    tokens
        Every token in id order: specials, condition tokens and genes alike.
    specials
        Which of ``tokens`` are special tokens (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``, …).
    conditions
        ``{kind: [values]}`` of condition tokens (batch, species, modality, perturbation)
        present in ``tokens`` as ``<kind=value>``.
    gene_medians
        Optional ``{gene: median}`` of nonzero normalised expression, used by rank encoding
        (Geneformer's gene median dictionary).
    aliases
        Optional ``{other name: gene token}``, e.g. gene symbol to Ensembl ID, so data named
        either way maps onto the vocabulary.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        specials: Iterable[str] = DEFAULT_SPECIALS,
        conditions: Mapping[str, Sequence[object]] | None = None,
        gene_medians: Mapping[str, float] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        tokens = [str(t) for t in tokens]
        index = dict(zip(tokens, range(len(tokens)), strict=True))
        if len(index) < len(tokens):  # name the first repeat
            seen: dict[str, int] = {}
            for i, t in enumerate(tokens):
                if t in seen:
                    raise ValueError(
                        f"token {t!r} appears twice in the vocabulary (ids {seen[t]}, {i})"
                    )
                seen[t] = i
        self._tokens = tokens
        self._index = index
        self.specials = tuple(s for s in specials if s in index)
        self.conditions = {str(k): [str(v) for v in vals] for k, vals in (conditions or {}).items()}
        for kind, vals in self.conditions.items():
            missing = [v for v in vals if condition_token(kind, v) not in index]
            if missing:
                raise ValueError(f"condition tokens of {kind!r} missing from tokens: {missing[:5]}")
        nongene = set(self.specials) | {
            condition_token(k, v) for k, vals in self.conditions.items() for v in vals
        }
        self._is_gene = np.ones(len(tokens), dtype=bool)
        self._is_gene[[index[t] for t in nongene if t in index]] = False
        self.gene_medians = {str(k): float(v) for k, v in (gene_medians or {}).items()}
        self.aliases = {str(k): str(v) for k, v in (aliases or {}).items() if str(v) in index}

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_genes(
        cls,
        genes: Iterable[str],
        *,
        specials: Sequence[str] = DEFAULT_SPECIALS,
        conditions: Mapping[str, Sequence[object]] | None = None,
        gene_medians: Mapping[str, float] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> GeneVocab:
        """Specials first (so ``<pad>`` is 0), then condition tokens, then genes in given order."""
        genes = [str(g) for g in genes]
        dup = _duplicates(genes)
        if dup:
            raise ValueError(f"duplicate gene names {dup[:5]}; make them unique first")
        conditions = {str(k): _unique_str(v) for k, v in (conditions or {}).items()}
        cond_tokens = [condition_token(k, v) for k, vals in conditions.items() for v in vals]
        return cls(
            [*specials, *cond_tokens, *genes],
            specials=specials,
            conditions=conditions,
            gene_medians=gene_medians,
            aliases=aliases,
        )

    def with_conditions(self, kind: str, values: Iterable[object]) -> GeneVocab:
        """A new vocabulary with condition tokens for ``values`` of ``kind`` appended.

        Existing ids do not move, so a model's embedding table only needs new rows.
        """
        have = set(self.conditions.get(kind, []))
        new = [v for v in _unique_str(values) if v not in have]
        conditions = {k: list(v) for k, v in self.conditions.items()}
        conditions.setdefault(kind, []).extend(new)
        return GeneVocab(
            [*self._tokens, *(condition_token(kind, v) for v in new)],
            specials=self.specials,
            conditions=conditions,
            gene_medians=self.gene_medians,
            aliases=self.aliases,
        )

    def with_aliases(self, table: Mapping[str, str] | Iterable[tuple[str, str]]) -> GeneVocab:
        """A new vocabulary that also matches the other name of each ``(name, name)`` pair.

        ``table`` pairs two names of one gene, e.g. symbol → Ensembl ID (a mapping or pairs;
        :func:`human_gene_table` reads an offline one). Where one side is a gene token the
        other becomes its alias, in both directions; existing aliases and tokens win, and a
        name paired with two different tokens is left out (it would be ambiguous).
        """
        pairs = table.items() if isinstance(table, Mapping) else table
        found: dict[str, set[str]] = {}
        genes = set(self.genes)
        for a, b in pairs:
            a, b = str(a), str(b)
            for name, tok in ((a, b), (b, a)):
                if tok in genes and name not in self._index:
                    found.setdefault(name, set()).add(tok)
        aliases = {k: next(iter(v)) for k, v in found.items() if len(v) == 1}
        aliases.update(self.aliases)
        return GeneVocab(
            self._tokens,
            specials=self.specials,
            conditions=self.conditions,
            gene_medians=self.gene_medians,
            aliases=aliases,
        )

    # lookup -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __getitem__(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise KeyError(f"{token!r} is not in the vocabulary") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        cond = {k: len(v) for k, v in self.conditions.items()}
        return f"GeneVocab({self.n_genes} genes, specials={list(self.specials)}, conditions={cond})"

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    @property
    def genes(self) -> list[str]:
        return [t for t, g in zip(self._tokens, self._is_gene, strict=True) if g]

    @property
    def n_genes(self) -> int:
        return int(self._is_gene.sum())

    @property
    def is_gene(self) -> np.ndarray:
        """Boolean mask over ids: True for gene tokens."""
        return self._is_gene.copy()

    def id_to_token(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[int(i)] for i in ids]

    def special_id(self, token: str) -> int:
        """Id of a special token, with an error that says how to get one when it is absent."""
        if token not in self.specials:
            raise ValueError(
                f"this vocabulary has no {token} token (its specials are {list(self.specials)}); "
                f"build one with GeneVocab.from_genes(..., specials=[..., {token!r}]) or turn off "
                "the option that needs it"
            )
        return self._index[token]

    @property
    def pad_id(self) -> int:
        return self.special_id(PAD)

    @property
    def mask_id(self) -> int:
        return self.special_id(MASK)

    @property
    def cls_id(self) -> int:
        return self.special_id(CLS)

    @property
    def eos_id(self) -> int:
        return self.special_id(EOS)

    def condition_id(self, kind: str, value: object) -> int:
        tok = condition_token(kind, value)
        if tok not in self._index:
            known = self.conditions.get(kind, [])
            raise ValueError(
                f"{kind} {value!r} has no token in the vocabulary (known {kind} values: "
                f"{known[:10]}); use a vocabulary built with this {kind}, or "
                f"vocab.with_conditions({kind!r}, values) before training"
            )
        return self._index[tok]

    def encode_genes(self, names: Iterable[str]) -> np.ndarray:
        """Ids of gene names (int64), -1 where unknown.

        A name matches a gene token directly, through an alias (symbol ↔ Ensembl ID), or with an
        Ensembl version suffix dropped (``ENSG00000141510.17`` → ``ENSG00000141510``).
        """
        names = [n if isinstance(n, str) else str(n) for n in names]
        ids = np.fromiter(map(self._index.get, names, [-1] * len(names)), np.int64, len(names))
        for j in np.flatnonzero(ids < 0):  # the rest: an alias, or an Ensembl version dropped
            name = names[j]
            tok = self.aliases.get(name)
            if tok is None:
                m = _ENSEMBL_VERSION.match(name)
                tok = m.group(1) if m else None
            ids[j] = self._index.get(tok, -1) if tok is not None else -1
        known = ids >= 0
        known[known] = self._is_gene[ids[known]]
        return np.where(known, ids, -1)

    def medians_for(self, ids: np.ndarray) -> np.ndarray:
        """Gene medians for ids (NaN where the vocabulary has none or the id is -1)."""
        out = np.full(len(ids), np.nan)
        for j, i in enumerate(ids):
            if i >= 0:
                out[j] = self.gene_medians.get(self._tokens[int(i)], np.nan)
        return out

    # persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "tokens": list(self._tokens),
            "specials": list(self.specials),
            "conditions": {k: list(v) for k, v in self.conditions.items()},
            "gene_medians": dict(self.gene_medians),
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> GeneVocab:
        if "tokens" not in d:
            raise ValueError("not a GeneVocab dictionary: no 'tokens' entry")
        return cls(
            d["tokens"],
            specials=d.get("specials", DEFAULT_SPECIALS),
            conditions=d.get("conditions"),
            gene_medians=d.get("gene_medians"),
            aliases=d.get("aliases"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> GeneVocab:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file, then rename)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file owner-only
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneVocab:
        return cls.from_json(Path(path).read_text())


def _duplicates(names: Sequence[str]) -> list[str]:
    if len(set(names)) == len(names):
        return []
    seen: set[str] = set()
    dup: list[str] = []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    return dup


def _unique_str(values: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values))


def human_gene_table() -> list[tuple[str, str]]:
    """Human ``(Ensembl gene ID, gene symbol)`` pairs from an offline table, for
    :meth:`GeneVocab.with_aliases`.

    Read from the table the ``pygeneconverter`` package ships (``pygeneconverter/data.csv``,
    about 63,000 genes; ``pip install pygeneconverter``; it states no Ensembl release and no
    formal licence, so it is not a dependency of this package). No network is used.
    """
    import csv
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pygeneconverter")
    if spec is None or spec.origin is None:
        raise ImportError(
            "human_gene_table() reads the table shipped with pygeneconverter; "
            "pip install pygeneconverter (or pass your own symbol → Ensembl mapping to "
            "GeneVocab.with_aliases)"
        )
    path = Path(spec.origin).parent / "data.csv"
    with path.open(newline="") as fh:
        rows = csv.DictReader(fh)
        return [
            (r["ENSEMBL_ID"], r["HGNC_ID"])
            for r in rows
            if r.get("ENSEMBL_ID") and r.get("HGNC_ID")
        ]
