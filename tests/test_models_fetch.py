"""The pooch path against a local HTTP server: real hash, wrong hash, 404, offline; registry."""

from __future__ import annotations

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sctransformer as sct
from sctransformer.models import ModelEntry, RemoteFile
from sctransformer.models._fetch import (
    ChecksumError,
    DownloadError,
    OfflineError,
    fetch,
)
from sctransformer.models._published import REGISTRY


class _Handler(SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self):
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path / 'srv'`` on 127.0.0.1; yields (root, base URL, list of requested paths)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    root = tmp_path / "srv"
    root.mkdir()
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_port}/", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setattr(sct.settings, "cachedir", path)
    monkeypatch.setattr(sct.settings, "offline", False)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_with_real_hash_then_reuse(server, cache):
    root, base, hits = server
    data = b"weights " * 1000
    (root / "w.bin").write_bytes(data)
    dest = cache / "m" / "w.bin"
    assert fetch(base + "w.bin", _sha(data), dest) == dest
    assert dest.read_bytes() == data and hits == ["/w.bin"]
    fetch(base + "w.bin", _sha(data), dest)  # present with the right hash: no request
    assert hits == ["/w.bin"]


def test_wrong_hash_is_refused_and_nothing_kept(server, cache):
    root, base, _ = server
    (root / "w.bin").write_bytes(b"tampered or truncated")
    dest = cache / "m" / "w.bin"
    with pytest.raises(ChecksumError, match="pinned sha256") as e:
        fetch(base + "w.bin", _sha(b"the real file"), dest)
    assert _sha(b"the real file") in str(e.value)
    assert not dest.exists()


def test_404_names_the_url(server, cache):
    _, base, _ = server
    with pytest.raises(DownloadError, match="404") as e:
        fetch(base + "missing.bin", "0" * 64, cache / "missing.bin")
    assert base + "missing.bin" in str(e.value)


def test_offline_fails_at_once_with_url_hash_and_path(server, cache, monkeypatch):
    root, base, hits = server
    (root / "w.bin").write_bytes(b"x")
    monkeypatch.setattr(sct.settings, "offline", True)
    dest = cache / "m" / "w.bin"
    with pytest.raises(OfflineError) as e:
        fetch(base + "w.bin", _sha(b"x"), dest)
    msg = str(e.value)
    assert base + "w.bin" in msg and _sha(b"x") in msg and str(dest) in msg
    assert hits == []  # no request was made
    # a pre-placed file with the right hash is used offline
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"x")
    assert fetch(base + "w.bin", _sha(b"x"), dest) == dest
    # a truncated pre-placed file is refused by its hash, with a message that says so
    dest.write_bytes(b"")
    with pytest.raises(ChecksumError, match="truncated"):
        fetch(base + "w.bin", _sha(b"x"), dest)


def test_offline_setting_reads_the_environment(monkeypatch):
    from sctransformer._settings import SctSettings

    monkeypatch.setenv("SCTRANSFORMER_OFFLINE", "1")
    monkeypatch.setenv("SCTRANSFORMER_CACHE_DIR", "/some/where")
    s = SctSettings()
    assert s.offline and str(s.cachedir) == "/some/where"


def test_published_entries_are_pinned():
    table = sct.models.available()
    assert {
        "sct-tiny-pbmc",
        "geneformer-v1-10m",
        "geneformer-v2-104m",
        "geneformer-v2-316m",
        "scgpt-human",
    } <= set(table.index)
    expected = {
        "geneformer-v1-10m": "a5e33a757431643b3697de7ef6127950cdc49e06e58d4266b3a3ab191b683f14",
        "geneformer-v2-104m": "fff5cba29ddd8792991fa77b4872246fbe548a178cebda3775cdc72b67780e7f",
        "geneformer-v2-316m": "965ceccea81953d362081ef3843560a0e4fef88d396c28017881f1e94b1246f3",
        "scgpt-human": "6cb5d451ab5c4b33eb673adbe4fddc61d2389df1b89b7651a9fe2e557572b922",
    }
    for name, sha in expected.items():
        entry = REGISTRY[name]
        assert entry.files["weights"].sha256 == sha
        for f in entry.files.values():
            assert len(f.sha256) == 64 and "/resolve/main/" not in f.url
            assert "/resolve/ff551ee4" in f.url or "/resolve/a24c2377" in f.url
        assert table.loc[name, "license"].split()[0] in {"Apache-2.0", "MIT"}
        assert table.loc[name, "citation"]
    assert REGISTRY["geneformer-v1-10m"].files["weights"].size == 41_183_536
    assert REGISTRY["scgpt-human"].files["weights"].size == 205_385_258


def test_offline_load_lists_every_missing_file(cache, monkeypatch):
    monkeypatch.setattr(sct.settings, "offline", True)
    with pytest.raises(OfflineError) as e:
        sct.models.load("geneformer-v1-10m")
    msg = str(e.value)
    for role, row in sct.models.files("geneformer-v1-10m").iterrows():
        assert row["url"] in msg and row["sha256"] in msg and row["path"] in msg, role
        assert row["path"].startswith(str(cache))


def _serve_geneformer(tmp_path, root, base):
    """A small Geneformer V2-shaped release on the local server, and its registry entry."""
    from test_models_geneformer import V2_SMALL, write_geneformer_folder

    src = tmp_path / "release"
    src.mkdir()
    cfg = dict(V2_SMALL, num_hidden_layers=2, max_position_embeddings=256)
    bert, *_ = write_geneformer_folder(src, cfg, n_genes=40, v2=True)
    files = {}
    for role, fname in (
        ("weights", "model.safetensors"),
        ("token_dictionary", "token_dictionary_gc104M.pkl"),
        ("gene_median_dictionary", "gene_median_dictionary_gc104M.pkl"),
        ("gene_name_id_dict", "gene_name_id_dict_gc104M.pkl"),
    ):
        shutil.copy(src / fname, root / fname)
        data = (root / fname).read_bytes()
        files[role] = RemoteFile(base + fname, _sha(data), len(data))
    entry = ModelEntry(
        name="test-geneformer",
        description="test",
        source="local test server",
        license="Apache-2.0",
        citation="none",
        size_bytes=0,
        files=files,
        kind="geneformer",
        config=bert.config.to_dict(),
    )
    return entry, bert


def test_load_by_name_downloads_converts_once_and_reuses(tmp_path, server, cache, monkeypatch):
    import torch

    root, base, hits = server
    entry, bert = _serve_geneformer(tmp_path, root, base)
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    model = sct.models.load(entry.name)
    assert len(hits) == 4
    converted = cache / entry.name / "converted"
    assert (converted / "model.safetensors").exists()
    assert model.metadata["source_files"] == {r: f.sha256 for r, f in entry.files.items()}
    assert model.metadata["license"] == "Apache-2.0"
    assert sct.models.available().loc[entry.name, "cached"]
    # second load: from the converted checkpoint, no request, same numbers
    monkeypatch.setattr(sct.settings, "offline", True)
    again = sct.models.load(entry.name)
    assert len(hits) == 4
    tokens = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    with torch.no_grad():
        ref = bert(input_ids=tokens, attention_mask=(tokens != 0).long()).logits
        out = again.heads["mlm"](again(tokens).last_hidden_state)
    pad = tokens != 0
    assert (out[pad] - ref[pad]).abs().max() < 1e-4
    assert again.tokenize_params["add_cls"] and again.metadata["embedding"]["pooling"] == "cls"
    # a tampered converted checkpoint is refused by its recorded hash
    with open(converted / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ValueError, match="truncated or was modified"):
        sct.models.load(entry.name)


def test_tampered_download_in_cache_is_replaced_online(tmp_path, server, cache, monkeypatch):
    root, base, hits = server
    entry, _ = _serve_geneformer(tmp_path, root, base)
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    dl = cache / entry.name / "download"
    dl.mkdir(parents=True)
    (dl / "token_dictionary_gc104M.pkl").write_bytes(b"not the dictionary")
    monkeypatch.setattr(sct.settings, "offline", True)
    with pytest.raises(ChecksumError, match="refused"):
        sct.models.load(entry.name)
    monkeypatch.setattr(sct.settings, "offline", False)
    model = sct.models.load(entry.name)
    assert model.vocab.cls_id == 2
    assert "/token_dictionary_gc104M.pkl" in hits


def test_unknown_folder_is_explained(tmp_path):
    with pytest.raises(ValueError, match="Geneformer folder"):
        sct.models.load(tmp_path)
    with pytest.raises(ValueError, match="neither a registered model"):
        sct.models.load("no-such-model")
