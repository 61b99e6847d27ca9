"""Training behaviour of the EMA codebooks (k-means, EMA, dead codes) and of the split RVQ."""

from __future__ import annotations

import pytest
import torch

import mimi
from mimi.quantization.codebook import EmaCodebook
from mimi.quantization.training import (
    QuantizerTrainOutput,
    ema_update_,
    kmeans_init_,
    replace_dead_codes_,
    split_rvq_train_forward,
)




def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blobs(centers: torch.Tensor, per: int, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    return torch.cat([c + spread * torch.randn(per, centers.shape[1], generator=g) for c in centers])


def _set_codebook(cb: EmaCodebook, entries: torch.Tensor, usage: float | torch.Tensor) -> None:
    usage = torch.as_tensor(usage, dtype=torch.float32).expand(cb.bins).clone()
    cb.cluster_usage.copy_(usage)
    cb.embedding_sum.copy_(entries * usage[:, None])


# -- k-means ------------------------------------------------------------------------------------

def test_kmeans_init_entries_are_centroids_of_their_clusters():
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    x = _blobs(centers, 50)
    cb = EmaCodebook(2, 4)
    kmeans_init_(cb, x, iters=10, generator=_gen(1))
    assert cb.initialized.item() == 1
    emb = cb.embedding
    assign = torch.cdist(x, emb).argmin(-1)
    counts = torch.bincount(assign, minlength=4).float()
    # a Lloyd fixed point: each entry is the mean of the points nearest to it, usage = its count
    for e in range(4):
        assert counts[e] > 0
        torch.testing.assert_close(emb[e], x[assign == e].mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(cb.cluster_usage, counts)
    # well separated blobs: the four true centres are found
    dist_to_true = torch.cdist(centers, emb).min(dim=1).values
    assert (dist_to_true < 0.05).all()


def test_kmeans_init_with_fewer_vectors_than_bins():
    x = torch.randn(5, 3, generator=_gen(2))
    cb = EmaCodebook(3, 16)
    kmeans_init_(cb, x, generator=_gen(3))
    emb = cb.embedding
    assert torch.isfinite(emb).all() and cb.initialized.item() == 1
    # every entry sits on one of the 5 vectors (sampled with replacement, k-means keeps them)
    assert torch.cdist(emb, x).min(dim=1).values.max() < 1e-5
    assert float(cb.cluster_usage[cb.cluster_usage >= 1].sum()) == 5.0


# -- EMA ----------------------------------------------------------------------------------------

def test_ema_update_formula_and_moves_entries_toward_assigned_means():
    cb = EmaCodebook(2, 3)
    entries = torch.tensor([[0.0, 0.0], [4.0, 0.0], [9.0, 9.0]])
    _set_codebook(cb, entries, 2.0)
    x = torch.cat([_blobs(torch.tensor([[1.0, 1.0]]), 10, seed=1), _blobs(torch.tensor([[3.0, -1.0]]), 6, seed=2)])
    codes = cb.encode(x)
    assert codes.tolist() == [0] * 10 + [1] * 6
    before_sum, before_usage = cb.embedding_sum.clone(), cb.cluster_usage.clone()
    decay = 0.9
    ema_update_(cb, x, codes, decay)
    counts = torch.tensor([10.0, 6.0, 0.0])
    sums = torch.stack([x[:10].sum(0), x[10:].sum(0), torch.zeros(2)])
    torch.testing.assert_close(cb.cluster_usage, decay * before_usage + (1 - decay) * counts)
    torch.testing.assert_close(cb.embedding_sum, decay * before_sum + (1 - decay) * sums)
    means = torch.stack([x[:10].mean(0), x[10:].mean(0)])
    after = cb.embedding
    for e in range(2):
        assert (after[e] - means[e]).norm() < (entries[e] - means[e]).norm()
    torch.testing.assert_close(after[2], entries[2])  # unassigned entry: unchanged
    for _ in range(200):  # repeated updates converge to the means
        ema_update_(cb, x, codes, decay)
    torch.testing.assert_close(cb.embedding[:2], means, atol=1e-4, rtol=0)


def test_ema_update_all_reduce_sums_the_statistics():
    cb, ref = EmaCodebook(2, 3), EmaCodebook(2, 3)
    _set_codebook(cb, torch.zeros(3, 2), 1.0)
    _set_codebook(ref, torch.zeros(3, 2), 1.0)
    x = torch.randn(8, 2, generator=_gen(4))
    codes = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    ema_update_(cb, x, codes, 0.5, all_reduce=lambda t: 2 * t)  # two ranks with the same batch
    ema_update_(ref, torch.cat([x, x]), torch.cat([codes, codes]), 0.5)
    torch.testing.assert_close(cb.cluster_usage, ref.cluster_usage)
    torch.testing.assert_close(cb.embedding_sum, ref.embedding_sum)


def test_kmeans_and_dead_codes_with_all_reduce_use_global_statistics():
    """Two simulated ranks holding the same batch: the same entries, twice the usage."""
    x = _blobs(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 20, seed=3)
    local, dist = EmaCodebook(2, 3), EmaCodebook(2, 3)
    kmeans_init_(local, x, generator=_gen(7))
    kmeans_init_(dist, x, generator=_gen(7), all_reduce=lambda t: 2 * t)
    torch.testing.assert_close(dist.embedding, local.embedding)
    torch.testing.assert_close(dist.cluster_usage, 2 * local.cluster_usage)
    dist.cluster_usage[1] = 0.0  # dead for a global batch of 120 vectors (threshold 4)
    assert replace_dead_codes_(dist, x, generator=_gen(8), all_reduce=lambda t: 2 * t) == 1
    assert float(dist.cluster_usage[1]) == pytest.approx(0.1 * 120 / 3)


# -- dead codes ---------------------------------------------------------------------------------

def test_dead_codes_are_replaced_by_batch_vectors_and_used_ones_stay():
    bins, dim = 16, 4
    cb = EmaCodebook(dim, bins)
    g = _gen(5)
    entries = torch.randn(bins, dim, generator=g)
    entries[8:] += 100.0  # far from the data: never chosen
    _set_codebook(cb, entries, 10.0)
    x = torch.cat([entries[i] + 0.1 * torch.randn(25, dim, generator=g) for i in range(8)])  # 200 vectors
    for _ in range(4):
        ema_update_(cb, x, cb.encode(x), decay=0.5)
    used_before = cb.embedding[:8].clone()
    threshold = 0.1 * x.shape[0] / bins
    assert (cb.cluster_usage[8:] < threshold).all() and (cb.cluster_usage[:8] > threshold).all()
    n = replace_dead_codes_(cb, x, threshold_ratio=0.1, generator=_gen(6))
    assert n == 8
    emb = cb.embedding
    torch.testing.assert_close(emb[:8], used_before)  # used entries untouched
    # replaced entries are (distinct) batch vectors, no longer dead
    dist = (emb[8:, None, :] - x[None]).norm(dim=-1)
    assert dist.min(dim=1).values.max() < 1e-4
    assert len(set(dist.argmin(dim=1).tolist())) == 8
    assert (cb.cluster_usage[8:] >= threshold * (1 - 1e-6)).all()
    assert replace_dead_codes_(cb, x, threshold_ratio=0.1) == 0


# -- split RVQ training forward ---------------------------------------------------------------

@pytest.fixture
def quantizer():
    torch.manual_seed(0)
    q = mimi.build_mimi(mimi.MimiConfig.tiny()).quantizer  # n_q 8 (1 semantic), bins 64, dim 16
    with torch.no_grad():  # realistic codebook scale relative to the latent
        for rvq in (q.semantic, q.acoustic):
            for layer in rvq.layers:
                layer.embedding_sum.mul_(0.3)
    return q


def _latent(B=4, T=13, seed=0):
    return torch.randn(B, 32, T, generator=_gen(seed))


def test_train_forward_shapes(quantizer):
    z = _latent()
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=True, generator=_gen(1))
    assert isinstance(out, QuantizerTrainOutput)
    assert out.quantized.shape == z.shape and out.semantic.shape == z.shape
    assert out.codes.shape == (4, 8, 13) and out.codes.dtype == torch.long
    assert out.codes.min() >= 0 and out.codes.max() < 64
    assert out.commitment_loss.dim() == 0 and float(out.commitment_loss.detach()) > 0
    assert out.quantized_applied.shape == (4,) and out.quantized_applied.dtype == torch.bool
    assert 2 <= out.num_codebooks <= 8 and out.item_codebooks.shape == (4,)
    assert all(bool(layer.initialized) for layer in quantizer.acoustic.layers)  # k-means ran


def test_no_quantization_rate_one_passes_the_latent(quantizer):
    z = _latent()
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=True, no_quant_rate=1.0, generator=_gen(2))
    assert not out.quantized_applied.any()
    assert torch.equal(out.quantized, z)
    assert not torch.equal(out.semantic, torch.zeros_like(z))  # the semantic level is still computed


def test_full_quantization_matches_inference(quantizer):
    z = _latent()
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, no_quant_rate=0.0, update=False)
    assert out.quantized_applied.all() and out.num_codebooks == 8
    codes = quantizer.encode(z, 8)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.quantized, quantizer.decode(codes), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.semantic, quantizer.decode(codes[:, :1]), atol=1e-5, rtol=1e-5)
    # with n_q < total: only those levels
    out4 = split_rvq_train_forward(quantizer, z, n_q=4, q_dropout=False, no_quant_rate=0.0, update=False)
    torch.testing.assert_close(out4.quantized, quantizer.decode(quantizer.encode(z, 4)), atol=1e-5, rtol=1e-5)


def test_straight_through_gradient_reaches_the_latent(quantizer):
    z = _latent().requires_grad_(True)
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=True, no_quant_rate=0.0, generator=_gen(3))
    w = torch.randn(z.shape, generator=_gen(4))
    (out.quantized * w).sum().backward()
    # straight-through: d quantized / d z is the linear map of the projections, for every item
    zz = z.detach().clone().requires_grad_(True)
    lin = sum(rvq.output_proj(rvq.input_proj(zz)) for rvq in (quantizer.semantic, quantizer.acoustic))
    (lin * w).sum().backward()
    torch.testing.assert_close(z.grad, zz.grad)
    # the commitment loss also sends gradient to the latent
    z.grad = None
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, generator=_gen(5))
    out.commitment_loss.backward()
    assert z.grad.abs().sum() > 0


def test_quantizer_dropout_varies_levels_per_item(quantizer):
    z = _latent(B=32, T=5, seed=6)
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=True, no_quant_rate=0.0, update=False,
                                  generator=_gen(7))
    levels = out.item_codebooks
    assert levels.min() >= 2 and levels.max() <= 8  # semantic + 1..7 acoustic levels
    assert len(set(levels.tolist())) >= 4
    assert out.num_codebooks == int(levels.max())
    for b in range(32):  # each item's output is the inference decode of its own levels
        k = int(levels[b])
        ref = quantizer.decode(out.codes[b : b + 1, :k])
        torch.testing.assert_close(out.quantized[b : b + 1], ref, atol=1e-5, rtol=1e-5)


def test_partial_quantization_selects_per_item(quantizer):
    z = _latent(B=64, T=3, seed=8)
    out = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, no_quant_rate=0.5, update=False,
                                  generator=_gen(9))
    applied = out.quantized_applied
    assert 16 < int(applied.sum()) < 48
    assert torch.equal(out.quantized[~applied], z[~applied])
    torch.testing.assert_close(out.quantized[applied], quantizer.decode(out.codes)[applied], atol=1e-5, rtol=1e-5)


def test_update_trains_codebooks_toward_the_data(quantizer):
    z = _latent(B=8, T=13, seed=10)
    g = _gen(11)
    first = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, no_quant_rate=0.0, generator=g)
    stats = quantizer.acoustic.layers[0].embedding_sum.clone()
    for _ in range(5):
        last = split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, no_quant_rate=0.0, generator=g)
    assert not torch.equal(stats, quantizer.acoustic.layers[0].embedding_sum)
    assert float(last.commitment_loss.detach()) < float(first.commitment_loss.detach())
    # update=False leaves every statistic alone
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=True, update=False, generator=g)
    assert all(torch.equal(before[k], v) for k, v in quantizer.state_dict().items())


def test_invalid_arguments(quantizer):
    z = _latent()
    with pytest.raises(ValueError):
        split_rvq_train_forward(quantizer, z, n_q=9, q_dropout=False)
    with pytest.raises(ValueError):
        split_rvq_train_forward(quantizer, z, n_q=8, q_dropout=False, no_quant_rate=1.5)
