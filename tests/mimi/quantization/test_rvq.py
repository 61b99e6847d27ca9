"""EMA codebook nearest-neighbour search, residual VQ, and Mimi's split (semantic + acoustic) RVQ."""

from __future__ import annotations

import pytest
import torch

from mimi.config import QuantizerConfig
from mimi.quantization.codebook import EmaCodebook
from mimi.quantization.rvq import ResidualVectorQuantizer, SplitResidualVectorQuantizer


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _codebook(dim=8, bins=32, seed=0) -> EmaCodebook:
    g = torch.Generator().manual_seed(seed)
    cb = EmaCodebook(dim, bins)
    cb.embedding_sum.copy_(torch.randn(bins, dim, generator=g) * 3)
    cb.cluster_usage.copy_(0.5 + 2 * torch.rand(bins, generator=g))  # non-trivial normalisation
    return cb


# -- EmaCodebook ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_codebook_encode_is_brute_force_nearest(seed):
    cb = _codebook(seed=seed)
    x = torch.randn(600, 8, generator=torch.Generator().manual_seed(100 + seed)) * 2
    codes = cb.encode(x)
    brute = torch.cdist(x.double(), cb.embedding.double()).argmin(dim=-1)
    assert codes.dtype == torch.long and codes.shape == (600,)
    assert torch.equal(codes, brute)
    assert codes.unique().numel() > 16  # the test covers many entries


def test_codebook_embedding_and_decode_are_normalised_lookup():
    cb = _codebook()
    cb.cluster_usage[3] = 0.0  # a dead entry: clamped, not a division by zero
    cb.cluster_usage[5] = 1e-9
    expected_emb = cb.embedding_sum / cb.cluster_usage.clamp(min=cb.epsilon)[:, None]
    assert torch.isfinite(cb.embedding).all()
    torch.testing.assert_close(cb.embedding, expected_emb)
    torch.testing.assert_close(cb.embedding[3], cb.embedding_sum[3] / 1e-5)
    codes = torch.randint(0, 32, (4, 7), generator=torch.Generator().manual_seed(1))
    out = cb.decode(codes)
    assert out.shape == (4, 7, 8)
    manual = cb.embedding_sum[codes] / cb.cluster_usage.clamp(min=cb.epsilon)[codes][..., None]
    torch.testing.assert_close(out, manual)


def test_codebook_encode_decode_fixed_points():
    """Encoding the entries themselves returns their own indices."""
    cb = _codebook()
    assert torch.equal(cb.encode(cb.embedding), torch.arange(32))
    torch.testing.assert_close(cb.decode(cb.encode(cb.embedding)), cb.embedding)


def test_codebook_state_dict_is_the_ema_statistics():
    assert set(EmaCodebook(4, 8).state_dict()) == {"initialized", "cluster_usage", "embedding_sum"}


# -- ResidualVectorQuantizer ----------------------------------------------------------------

def _rvq_from_data(z: torch.Tensor, n_q=5, dim=6, bins=16, seed=0) -> ResidualVectorQuantizer:
    """Each level's entries are rows of the residual that level sees on z."""
    torch.manual_seed(seed)
    rvq = ResidualVectorQuantizer(z.shape[1], dim, n_q, bins)
    g = torch.Generator().manual_seed(seed)
    residual = rvq.project_in(z).transpose(1, 2).reshape(-1, dim)
    for layer in rvq.layers:
        rows = torch.randperm(residual.shape[0], generator=g)[:bins]
        layer.embedding_sum.copy_(residual[rows])
        layer.cluster_usage.fill_(1.0)
        residual = residual - layer.decode(layer.encode(residual))
    return rvq


def _latent(B=2, D=12, T=40, seed=5):
    return torch.randn(B, D, T, generator=torch.Generator().manual_seed(seed))


def test_rvq_decode_sum_is_sum_of_chosen_entries():
    z = _latent()
    rvq = _rvq_from_data(z)
    codes = rvq.encode(z, 5)
    assert codes.shape == (2, 5, 40) and codes.dtype == torch.long
    manual = sum(rvq.layers[k].embedding[codes[:, k]] for k in range(5))  # [B, T, d]
    torch.testing.assert_close(rvq.decode_sum(codes), manual.transpose(1, 2), atol=1e-6, rtol=0)
    out = rvq.decode(codes)
    torch.testing.assert_close(out, torch.einsum("od,bdt->bot", rvq.output_proj.weight[..., 0], manual.transpose(1, 2)),
                               atol=1e-5, rtol=0)
    assert out.shape == z.shape


def test_rvq_encode_is_greedy_level_by_level():
    z = _latent()
    rvq = _rvq_from_data(z)
    codes = rvq.encode(z, 5)
    residual = rvq.project_in(z).transpose(1, 2).reshape(-1, 6).double()
    for k, layer in enumerate(rvq.layers):
        brute = torch.cdist(residual, layer.embedding.double()).argmin(-1)
        assert torch.equal(codes[:, k].reshape(-1), brute), f"level {k}"
        residual = residual - layer.embedding.double()[brute]
    # fewer levels are a prefix of more levels
    assert torch.equal(rvq.encode(z, 2), codes[:, :2])


def test_rvq_residual_norm_non_increasing():
    z = _latent(T=60)
    rvq = _rvq_from_data(z, n_q=6)
    target = rvq.project_in(z)  # [B, d, T]
    norms = []
    for k in range(7):
        codes = rvq.encode(z, k)
        assert codes.shape == (2, k, 60)
        norms.append((target - rvq.decode_sum(codes)).norm().item())
    assert all(b <= a + 1e-5 for a, b in zip(norms, norms[1:])), norms
    assert norms[-1] < 0.5 * norms[0], norms


def test_rvq_per_vector_residual_non_increasing_with_zero_entry():
    """With a zero entry in every codebook, no vector's residual can grow at any level."""
    z = _latent()
    rvq = _rvq_from_data(z)
    for layer in rvq.layers:
        layer.embedding_sum[0] = 0.0
    target = rvq.project_in(z)
    prev = target.norm(dim=1)  # [B, T]
    for k in range(1, 6):
        cur = (target - rvq.decode_sum(rvq.encode(z, k))).norm(dim=1)
        assert (cur <= prev + 1e-5).all(), k
        prev = cur


def test_rvq_argument_errors():
    z = _latent()
    rvq = _rvq_from_data(z)
    for bad in (-1, 6):
        with pytest.raises(ValueError):
            rvq.encode(z, bad)
    with pytest.raises(ValueError):
        rvq.decode_sum(torch.zeros(2, 6, 40, dtype=torch.long))


# -- SplitResidualVectorQuantizer -----------------------------------------------------------

def _split(n_q=5, n_q_semantic=1, input_dim=12, seed=0):
    torch.manual_seed(seed)
    cfg = QuantizerConfig(dimension=6, n_q=n_q, n_q_semantic=n_q_semantic, bins=16)
    split = SplitResidualVectorQuantizer(input_dim, cfg)
    g = torch.Generator().manual_seed(seed)
    for rvq in (split.semantic, split.acoustic):
        for layer in rvq.layers:
            layer.embedding_sum.copy_(torch.randn(16, 6, generator=g))
    return split


@pytest.mark.parametrize("n_q_semantic", [1, 2])
def test_split_codes_come_from_semantic_then_acoustic(n_q_semantic):
    split = _split(n_q_semantic=n_q_semantic)
    z = _latent()
    codes = split.encode(z, 5)
    assert codes.shape == (2, 5, 40)
    assert torch.equal(codes[:, :n_q_semantic], split.semantic.encode(z, n_q_semantic))
    assert torch.equal(codes[:, n_q_semantic:], split.acoustic.encode(z, 5 - n_q_semantic))
    # both RVQs see the same latent (not the semantic residual): acoustic level 0 differs from a
    # continuation of the semantic RVQ in general
    assert not torch.equal(codes[:, n_q_semantic], split.semantic.encode(z, n_q_semantic)[:, 0])
    # fewer codebooks: a prefix, cut inside the semantic part if needed
    assert torch.equal(split.encode(z, 1), codes[:, :1])
    assert torch.equal(split.encode(z, 3), codes[:, :3])


def test_split_decode_is_sum_of_both_parts():
    split = _split()
    z = _latent()
    codes = split.encode(z, 5)
    expected = split.semantic.decode(codes[:, :1]) + split.acoustic.decode(codes[:, 1:])
    torch.testing.assert_close(split.decode(codes), expected, atol=1e-6, rtol=0)
    partial = split.decode(codes[:, :3])
    torch.testing.assert_close(partial, split.semantic.decode(codes[:, :1]) + split.acoustic.decode(codes[:, 1:3]),
                               atol=1e-6, rtol=0)


def test_split_decode_of_one_codebook_uses_only_semantic():
    split = _split()
    z = _latent()
    codes = split.encode(z, 1)
    before = split.decode(codes)
    torch.testing.assert_close(before, split.semantic.decode(codes), atol=0, rtol=0)
    split.acoustic.output_proj.weight.fill_(123.0)  # the acoustic part must not be touched
    for layer in split.acoustic.layers:
        layer.embedding_sum.fill_(float("nan"))
    assert torch.equal(split.decode(codes), before)


def test_split_errors():
    split = _split()
    z = _latent()
    for bad in (0, 6, -1):
        with pytest.raises(ValueError):
            split.encode(z, bad)
    for K in (0, 6):
        with pytest.raises(ValueError):
            split.decode(torch.zeros(2, K, 40, dtype=torch.long))
    with pytest.raises(ValueError):
        split.decode(torch.zeros(2, 40, dtype=torch.long))


def test_split_attributes_from_config():
    split = _split(n_q=7, n_q_semantic=2)
    assert (split.n_q, split.n_q_semantic, split.bins) == (7, 2, 16)
    assert split.semantic.n_q == 2 and split.acoustic.n_q == 5


def test_codebook_cache_follows_every_kind_of_update():
    """The codebook (sum / usage) is computed once per version of the statistics: in-place EMA
    updates, index writes, a state-dict load and a device/dtype move all refresh it."""
    cb = EmaCodebook(dim=4, bins=8)
    x = torch.randn(32, 4)

    def fresh():
        return cb.embedding_sum / cb.cluster_usage.clamp(min=cb.epsilon)[:, None]

    assert cb.embedding is cb.embedding  # cached between calls
    for update in (lambda: cb.cluster_usage.mul_(0.5),
                   lambda: cb.embedding_sum.add_(1.0),
                   lambda: cb.embedding_sum.__setitem__(torch.tensor([0, 3]), torch.zeros(2, 4)),
                   lambda: cb.load_state_dict({k: torch.rand_like(v) for k, v in cb.state_dict().items()}),
                   lambda: cb.to(torch.float64)):
        update()
        torch.testing.assert_close(cb.embedding, fresh(), rtol=0, atol=0)
        expected = torch.cdist(x.to(cb.embedding.dtype), fresh()).argmin(-1)
        assert torch.equal(cb.encode(x.to(cb.embedding.dtype)), expected)
