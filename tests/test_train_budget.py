"""Training that fits the machine: memory estimate, micro-batches, the cost log, precision."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sctransformer as sct
from _train_utils import tiny_config, tokenized_pbmc, vocab_of
from sctransformer.nn import CellTransformer, TransformerConfig
from sctransformer.train.budget import (
    HEADROOM,
    TrainingMemoryError,
    available_memory,
    estimate_training_bytes,
    fit_batch_size,
    n_parameters,
)
from sctransformer.train.cost import TrainingCost
from sctransformer.train.data import TokenArrays
from sctransformer.train.loop import TrainConfig, config_dict, train


@pytest.fixture(scope="module")
def pbmc64():
    return tokenized_pbmc(max_length=64)


@pytest.fixture(scope="module")
def pbmc256():
    """Cells of different lengths: some fill the 256 slots, others are shorter."""
    return tokenized_pbmc(max_length=256)


def _arrays(adata) -> TokenArrays:
    return TokenArrays(
        tokens=np.asarray(adata.obsm["sct_tokens"]),
        values=np.asarray(adata.obsm["sct_values"]),
        lengths=adata.obs["sct_n_tokens"].to_numpy(),
        pad_id=vocab_of(adata).pad_id,
    )


def _train(model, adata, **kw):
    vocab = vocab_of(adata)
    cfg = TrainConfig(
        batch_size=12, max_steps=3, lr=1e-2, warmup_steps=1, precision="fp32", seed=0, **kw
    )
    history = train(model, _arrays(adata), cfg, is_gene=vocab.is_gene, mask_id=vocab.mask_id)
    return history, cfg


@pytest.mark.parametrize("extra", [{}, {"heads": ["mlm", "bins"], "value_input": "bins"}])
def test_n_parameters_counts_the_built_model(extra):
    config = TransformerConfig(vocab_size=500, hidden_size=32, num_heads=4, ffn_size=48, **extra)
    model = CellTransformer(config)
    assert n_parameters(config) == sum(p.numel() for p in model.parameters())
    config = TransformerConfig(vocab_size=500, hidden_size=32, num_heads=4, num_classes=5)
    assert n_parameters(config) == sum(p.numel() for p in CellTransformer(config).parameters())


def test_estimate_grows_with_tokens_not_with_cells_or_length_squared():
    config = TransformerConfig(
        vocab_size=32_790, hidden_size=128, num_heads=4, ffn_size=256, attention_dropout=0.02
    )
    e = {
        (b, n): estimate_training_bytes(config, b, n).parts["activations"]
        for b, n in ((8, 1024), (16, 1024), (8, 2048), (4, 4096))
    }
    assert e[(16, 1024)] == 2 * e[(8, 1024)] == e[(8, 2048)] == e[(4, 4096)]
    total = estimate_training_bytes(config, 4, 2048)
    # the transient blocks are capped: one block of scores and one block of logits
    assert total.parts["attention"] == estimate_training_bytes(config, 16, 4096).parts["attention"]
    assert total.parts["logits"] == estimate_training_bytes(config, 16, 4096).parts["logits"]
    assert estimate_training_bytes(config, 4, 2048, objective=None).parts["logits"] == 0
    # without attention dropout the fused kernel keeps one statistic per head and token
    fused = TransformerConfig(vocab_size=32_790, hidden_size=128, num_heads=4, ffn_size=256)
    assert (
        estimate_training_bytes(fused, 8, 2048).parts["attention"]
        == 2 * estimate_training_bytes(fused, 4, 2048).parts["attention"]
        < total.parts["attention"]
    )


def test_fit_batch_size_returns_the_largest_that_fits():
    config = TransformerConfig(vocab_size=32_790, hidden_size=128, num_heads=4, ffn_size=256)
    need = {b: estimate_training_bytes(config, b, 2048).total for b in range(1, 17)}
    memory = int(need[5] / HEADROOM) + 1
    assert fit_batch_size(config, 16, 2048, memory=memory) == 5
    assert fit_batch_size(config, 4, 2048, memory=memory) == 4
    assert fit_batch_size(config, 16, 2048, memory=int(need[16] / HEADROOM) + 1) == 16
    with pytest.raises(TrainingMemoryError, match=r"max_length=\d+"):
        fit_batch_size(config, 16, 2048, memory=int(need[1] / HEADROOM) - 1)


def test_available_memory_is_positive_and_below_physical():
    avail = available_memory("cpu")
    assert 0 < avail <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_micro_batches_give_the_same_training(pbmc256):
    """Passes of 5 cells (each padded to its own longest) add up to one pass of 12."""
    adata = pbmc256[:60].copy()
    assert len(np.unique(adata.obs["sct_n_tokens"])) > 10
    config = tiny_config(vocab_of(adata), 256, num_layers=1)
    torch.manual_seed(0)
    ref_model = CellTransformer(config)
    model = copy.deepcopy(ref_model)
    ref, ref_cfg = _train(ref_model, adata)
    got, cfg = _train(model, adata, micro_batch_size=5)
    assert ref_cfg.micro_batch_size == 12 and cfg.micro_batch_size == 5
    assert [r["n_predicted"] for r in got] == [r["n_predicted"] for r in ref]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-5)
    # AdamW moves each weight by about lr = 1e-2 per step whatever its gradient's size, so a
    # wrong gradient shows as ~1e-2; summation order alone moves near-zero gradients' weights
    # by up to ~1e-4
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=3e-4, rtol=0, msg=name)
    assert config_dict(cfg)["micro_batch_size"] == 5


def test_small_memory_limit_adapts_the_passes_and_says_so(pbmc64, capsys, monkeypatch):
    monkeypatch.setattr(sct.settings, "verbosity", 2)
    adata = pbmc64[:60].copy()
    config = tiny_config(vocab_of(adata), 64, num_layers=1)
    width = int(adata.obs["sct_n_tokens"].max())
    n_params = n_parameters(config)
    need3 = estimate_training_bytes(config, 3, width, n_params=n_params).total
    limit = int(need3 / HEADROOM) + 1
    torch.manual_seed(0)
    _, cfg = _train(CellTransformer(config), adata, memory_limit=limit)
    assert cfg.micro_batch_size == 3
    err = capsys.readouterr().err
    assert "each step in passes of 3 cells" in err
    assert f"of {limit / 2**30:.1f} GiB available" in err


def test_too_little_memory_raises_before_training(pbmc64):
    adata = pbmc64[:24].copy()
    config = tiny_config(vocab_of(adata), 64, num_layers=1)
    torch.manual_seed(0)
    model = CellTransformer(config)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(TrainingMemoryError, match="GiB is available"):
        _train(model, adata, memory_limit=2**20)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_micro_batch_size_and_memory_limit_are_refused():
    with pytest.raises(ValueError, match="micro_batch_size"):
        TrainConfig(micro_batch_size=0)
    with pytest.raises(ValueError, match="memory_limit"):
        TrainConfig(memory_limit=-5)


def test_cost_log_names_tokens_cut_cells_steps_and_time(pbmc256, capsys, monkeypatch):
    monkeypatch.setattr(sct.settings, "verbosity", 2)
    adata = pbmc256[:60].copy()
    lengths = adata.obs["sct_n_tokens"].to_numpy()
    full = int((lengths >= 256).sum())
    assert 0 < full < len(lengths)
    config = tiny_config(vocab_of(adata), 256, num_layers=1)
    torch.manual_seed(0)
    _train(CellTransformer(config), adata)
    err = capsys.readouterr().err
    assert (
        f"training cost: 60 cells, {lengths.mean():.0f} tokens per cell "
        f"(median {np.median(lengths):.0f}, max {lengths.max()})" in err
    )
    assert f"{full} cells fill all max_length=256 slots" in err
    assert "3 steps of 12 cells" in err
    assert "s per step, about" in err and "for the remaining 1 of 3 steps" in err
    assert "Levers: max_length" in err and "precision (now 'fp32')" in err


def test_training_cost_counts_truncated_cells_and_warns_for_long_runs(capsys, monkeypatch):
    import sctransformer.train.cost as cost_module

    monkeypatch.setattr(sct.settings, "verbosity", 1)  # warnings only, the default
    config = TransformerConfig(vocab_size=100, attention_dropout=0.02)
    cost = TrainingCost(
        lengths=np.array([10, 20, 20, 5]),
        steps=1000,
        batch_size=2,
        config=config,
        precision="fp32",
        device="cpu",
        max_length=20,
        n_truncated=1,
    )
    summary = cost.before()
    assert summary["n_at_max_length"] == 2 and summary["n_truncated"] == 1
    assert summary["tokens_mean"] == pytest.approx(13.75)
    times = iter([0.0, 1.0, 3.0])  # start, after step 1, after step 2: 2 s per step
    monkeypatch.setattr(cost_module.time, "perf_counter", lambda: next(times))
    cost.start()
    assert cost.step_done() is None  # the first step is warm-up
    assert cost.step_done() == pytest.approx(2.0 * 998)
    err = capsys.readouterr().err
    assert "training cost" not in err  # info, hidden at the default verbosity
    assert "WARNING: training: 2.00 s per step, about 33 min for the remaining 998" in err
    assert "attention_dropout=0" in err and "device='cuda'" in err


def test_auto_precision_is_measured_once_and_recorded(pbmc64, monkeypatch):
    import sctransformer.nn.precision as prec

    config = TransformerConfig(vocab_size=50, hidden_size=32, num_heads=4, ffn_size=64)
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: True)
    times = prec.measure_precisions("cpu", config=config, length=100, training=True)
    assert set(times) == {"fp32", "bf16"} and all(t > 0 for t in times.values())
    hits = prec._measured.cache_info().hits
    want = "bf16" if times["bf16"] < 0.9 * times["fp32"] else "fp32"
    # lengths 65..128 share one probe (rounded up to a power of two): no new measurement
    assert prec.choose_precision("auto", "cpu", config=config, length=120, training=True) == want
    assert prec._measured.cache_info().hits == hits + 1
    monkeypatch.setattr(prec, "cpu_supports_bf16", lambda: False)
    assert prec.choose_precision("auto", "cpu", config=config, length=100) == "fp32"
    # the loop resolves "auto" before training and leaves the name in its config
    adata = pbmc64[:24].copy()
    model = CellTransformer(tiny_config(vocab_of(adata), 64, num_layers=1))
    vocab = vocab_of(adata)
    cfg = TrainConfig(batch_size=12, max_steps=1, precision="auto")
    train(model, _arrays(adata), cfg, is_gene=vocab.is_gene, mask_id=vocab.mask_id)
    assert cfg.precision == "fp32"
    assert config_dict(cfg)["precision"] == "fp32"


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    import numpy as np, torch
    torch.set_num_threads(1)
    from sctransformer.nn import CellTransformer, TransformerConfig
    from sctransformer.train.data import TokenArrays
    from sctransformer.train.loop import TrainConfig, train
    batch, length, hidden, layers = (int(a) for a in sys.argv[1:5])
    config = TransformerConfig(vocab_size=32_790, hidden_size=hidden, num_layers=layers,
                               num_heads=4, ffn_size=2 * hidden, max_positions=length)
    torch.manual_seed(0)
    model = CellTransformer(config)
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 32_790, (batch, length))
    data = TokenArrays(tokens, np.zeros(tokens.shape, np.float32), np.full(batch, length), 0)
    is_gene = torch.ones(32_790, dtype=torch.bool); is_gene[:2] = False
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page
    start = peak = rss(); stop = threading.Event()
    def sample():
        global peak
        while not stop.wait(0.002):
            peak = max(peak, rss())
    t = threading.Thread(target=sample); t.start()
    cfg = TrainConfig(batch_size=batch, max_steps=1, precision="fp32", micro_batch_size=batch)
    train(model, data, cfg, is_gene=is_gene, mask_id=1)
    stop.set(); t.join()
    print(json.dumps({"peak": max(peak, rss()) - start}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("batch", "length", "hidden", "layers"), [(2, 1024, 64, 2), (4, 512, 128, 2)]
)
def test_estimate_is_within_2x_of_the_measured_peak(batch, length, hidden, layers):
    """One training step in a fresh process: its peak RSS against the formula."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(batch), str(length), str(hidden), str(layers)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    config = TransformerConfig(
        vocab_size=32_790,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=4,
        ffn_size=2 * hidden,
        max_positions=length,
    )
    estimate = estimate_training_bytes(config, batch, length).total
    print(f"measured {measured / 2**20:.0f} MiB, estimated {estimate / 2**20:.0f} MiB")
    assert measured / 2 <= estimate <= 2 * measured
