"""Training behaviour of the EMA codebooks and of the split RVQ.

Inference (`codebook.py`, `rvq.py`) only reads the codebook statistics; this module changes
them. The codebooks are not trained by gradient descent: each entry is
`embedding_sum / cluster_usage`, where both statistics are exponential moving averages over
training steps of, respectively, the sum of the vectors assigned to the entry and how many
there were. One training step of a codebook is

1. k-means initialisation on the first batch it sees (`kmeans_init_`),
2. nearest-entry assignment (the ordinary `EmaCodebook.encode`),
3. EMA update of the statistics with that assignment (`ema_update_`),
4. dead-code replacement: entries whose EMA usage fell below `threshold_ratio` times the usage
   a uniform assignment would give are moved onto random vectors of the batch
   (`replace_dead_codes_`).

`split_rvq_train_forward` runs Mimi's split RVQ the way training needs it: quantizer dropout
(a random number of acoustic levels per item), quantization of only part of the batch (the
other items give the decoder the unquantised latent), a straight-through estimator so that
the decoder's gradient reaches the encoder, a commitment loss, and the codebook updates above.

Distributed training: pass `all_reduce` (a function returning the SUM of a tensor over all
ranks, e.g. `lambda t: (torch.distributed.all_reduce(t), t)[1]`). The EMA statistics and the
dead-code threshold then use the global batch, and the random vectors of k-means
initialisation and dead-code replacement are taken from one rank's batch (rank 0, shared with
the others through `all_reduce`), so the codebooks stay identical on every rank without any
buffer broadcast. (Should every process believe it is rank 0, e.g. with a custom
`all_reduce` and no `torch.distributed` process group, the shared vectors are the average of
the ranks' samples: still identical everywhere.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mimi.quantization.codebook import EmaCodebook
from mimi.quantization.rvq import ResidualVectorQuantizer, SplitResidualVectorQuantizer

AllReduce = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "QuantizerTrainOutput", "ema_update_", "kmeans_init_", "replace_dead_codes_", "split_rvq_train_forward",
]


# -- codebook statistics ----------------------------------------------------------------------

def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (L2) for each row of x [N, d] -> [N]."""
    scores = torch.addmm((centroids * centroids).sum(-1)[None, :], x, centroids.t(), alpha=-2.0)
    return scores.argmin(dim=-1)


def _cluster_stats(x: torch.Tensor, codes: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry counts [bins] and sums [bins, d] of the rows of x assigned to each entry."""
    counts = torch.bincount(codes, minlength=bins).to(x.dtype)
    # index_put_ with accumulate, not index_add_: the latter has a large fixed cost on CPU
    sums = x.new_zeros(bins, x.shape[1]).index_put_((codes,), x, accumulate=True)
    return counts, sums


def _random_rows(n: int, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """`count` row indices in [0, n): distinct when n >= count, else drawn with replacement."""
    gen_device = generator.device if generator is not None else device
    if n >= count:
        idx = torch.randperm(n, generator=generator, device=gen_device)[:count]
    else:
        idx = torch.randint(0, n, (count,), generator=generator, device=gen_device)
    return idx.to(device)


def _is_leader() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _share(t: torch.Tensor, all_reduce: AllReduce | None) -> torch.Tensor:
    """With `all_reduce`, every rank gets rank 0's `t` (see the module docstring)."""
    if all_reduce is None:
        return t
    flag = torch.ones(1, device=t.device, dtype=t.dtype) * float(_is_leader())
    total = all_reduce(torch.cat([t.reshape(-1) * flag, flag]))
    return (total[:-1] / total[-1].clamp(min=1.0)).view_as(t)


def _as_stats(codebook: EmaCodebook, x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2 or x.shape[1] != codebook.dim:
        raise ValueError(f"expected vectors [N, {codebook.dim}], got {tuple(x.shape)}")
    return x.detach().to(codebook.embedding_sum.dtype)


@torch.no_grad()
def kmeans_init_(codebook: EmaCodebook, x: torch.Tensor, iters: int = 10,
                 generator: torch.Generator | None = None, all_reduce: AllReduce | None = None) -> None:
    """Initialise the codebook with k-means (`iters` Lloyd iterations) on the vectors x [N, d].

    Centroids start on random rows of x (with replacement when N < bins). A cluster left
    empty keeps its previous centroid. Afterwards `cluster_usage` holds each cluster's size
    (the scale the EMA keeps: vectors per step) and `embedding_sum` = centroid * usage, so
    `codebook.embedding` equals the centroids. Empty clusters get the minimal usage
    (`codebook.epsilon`): they count as dead and the next dead-code replacement moves them.
    With `all_reduce`, the starting centroids are rank 0's and every iteration uses the global
    cluster statistics, so all ranks end with the same codebook.
    """
    x = _as_stats(codebook, x)
    if x.shape[0] == 0:
        raise ValueError("k-means needs at least one vector")
    bins = codebook.bins
    centroids = _share(x[_random_rows(x.shape[0], bins, generator, x.device)].clone(), all_reduce)  # [bins, d]
    counts = torch.zeros(bins, dtype=x.dtype, device=x.device)
    for _ in range(max(iters, 1)):
        counts, sums = _cluster_stats(x, _nearest(x, centroids), bins)
        if all_reduce is not None:
            counts, sums = all_reduce(counts), all_reduce(sums)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    usage = torch.where(counts > 0, counts, torch.full_like(counts, codebook.epsilon))
    codebook.cluster_usage.copy_(usage)
    codebook.embedding_sum.copy_(centroids * usage[:, None])
    codebook.initialized.fill_(1.0)


@torch.no_grad()
def ema_update_(codebook: EmaCodebook, x: torch.Tensor, codes: torch.Tensor, decay: float,
                all_reduce: AllReduce | None = None) -> None:
    """EMA update of the statistics with the assignment codes [N] of the vectors x [N, d].

    cluster_usage <- decay * cluster_usage + (1 - decay) * counts
    embedding_sum <- decay * embedding_sum + (1 - decay) * onehot(codes)^T x
    With `all_reduce` (sum over ranks), counts and sums are those of the global batch.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    x = _as_stats(codebook, x)
    codes = codes.reshape(-1)
    if codes.shape[0] != x.shape[0]:
        raise ValueError(f"{codes.shape[0]} codes for {x.shape[0]} vectors")
    counts, sums = _cluster_stats(x, codes.long(), codebook.bins)
    if all_reduce is not None:
        counts, sums = all_reduce(counts), all_reduce(sums)
    codebook.cluster_usage.mul_(decay).add_(counts, alpha=1.0 - decay)
    codebook.embedding_sum.mul_(decay).add_(sums, alpha=1.0 - decay)


@torch.no_grad()
def replace_dead_codes_(codebook: EmaCodebook, x: torch.Tensor, threshold_ratio: float = 0.1,
                        generator: torch.Generator | None = None,
                        all_reduce: AllReduce | None = None) -> torch.Tensor:
    """Move dead entries onto random vectors of the batch x [N, d]; returns how many moved
    (a 0-dim long tensor: reading it is the caller's choice, the update itself never waits
    for the device).

    An entry is dead when its EMA usage is below `threshold_ratio * N_total / bins`, i.e. a
    fraction of the usage every entry would have under a uniform assignment (N_total: vectors
    in this step, over all ranks with `all_reduce`). A replaced entry becomes exactly the
    sampled vector, with usage equal to the threshold: it is not dead right away, but it must
    attract at least that many vectors per step to stay (otherwise it decays below the
    threshold and is moved again), and it adapts quickly to the vectors it does attract.
    One candidate row is drawn per entry (distinct rows when the batch has at least `bins`),
    and only the dead entries take theirs. With `all_reduce`, the dead set is the same on every
    rank (the usage is global) and the new vectors are rank 0's.
    """
    x = _as_stats(codebook, x)
    n_total = float(x.shape[0])
    if all_reduce is not None:
        n_total = float(all_reduce(torch.tensor([n_total], device=x.device, dtype=x.dtype))[0])
    if x.shape[0] == 0 or n_total == 0:
        return torch.zeros((), dtype=torch.long, device=x.device)
    threshold = threshold_ratio * n_total / codebook.bins
    dead = codebook.cluster_usage < threshold  # [bins]
    new_usage = max(threshold, codebook.epsilon)
    candidates = _share(x[_random_rows(x.shape[0], codebook.bins, generator, x.device)], all_reduce)  # [bins, d]
    codebook.embedding_sum.copy_(torch.where(dead[:, None], candidates * new_usage, codebook.embedding_sum))
    codebook.cluster_usage.masked_fill_(dead, new_usage)
    return dead.sum()


# -- split RVQ, training forward ----------------------------------------------------------------

@dataclass
class QuantizerTrainOutput:
    """What one training forward of the split RVQ gives.

    quantized: [B, D, T] decoder input. Items with `quantized_applied` hold the quantised
        latent (value = inference `decode(encode(z))` with their number of levels; gradient =
        identity to the latent through the straight-through estimator); the others hold z.
    codes: [B, n_q, T] codes of every level computed this step. All `n_q` levels are computed
        for every item (so all codebooks keep training); item b's decoder input only uses the
        first `item_codebooks[b]` of them.
    semantic: [B, D, T] the semantic RVQ's output (after its output_proj), straight-through;
        computed for every item, whether quantised or not: what distillation uses.
    commitment_loss: scalar, sum over levels of mean((residual - quantized.detach())^2) in
        the codebook space, each level averaged over the items whose dropout draw uses it
        (quantised or not: every item trains the encoder toward the codebooks).
    num_codebooks: the largest number of codebooks any item used this step.
    quantized_applied: bool [B], whether each item's decoder input is quantised.
    item_codebooks: long [B], codebooks (semantic + acoustic) each item's quantisation uses.
    dead_codes: 0-dim long tensor, entries replaced this step, summed over levels (0 when
        not updating).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    semantic: torch.Tensor
    commitment_loss: torch.Tensor
    num_codebooks: int
    quantized_applied: torch.Tensor
    item_codebooks: torch.Tensor | None = None
    dead_codes: torch.Tensor | None = None


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _rvq_train_levels(rvq: ResidualVectorQuantizer, z: torch.Tensor, n_levels: int, active: torch.Tensor,
                      *, update: bool, decay: float, threshold_ratio: float, generator, all_reduce
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise `n_levels` levels of one RVQ; level k is used by item b when active[b, k].

    Returns (output [B, D, T] after output_proj, straight-through; codes [B, n_levels, T];
    commitment loss; number of dead codes replaced).
    """
    B, _, T = z.shape
    projected = rvq.project_in(z)  # [B, d, T]
    stats_dtype = rvq.layers[0].embedding_sum.dtype if n_levels else projected.dtype
    live = projected.to(stats_dtype).transpose(1, 2).reshape(B * T, -1)  # [B*T, d], carries the gradient
    residual = live.detach()  # the residual chain, exactly as inference computes it
    total = torch.zeros_like(residual)  # sum of the entries each vector's active levels chose
    codes: list[torch.Tensor] = []
    commit = live.new_zeros(())
    replaced = torch.zeros((), dtype=torch.long, device=z.device)
    # One host read per RVQ (not per level): are all its levels initialised? Nothing else in
    # the loop waits for the device.
    fresh = update and n_levels > 0 and not bool(torch.stack([l.initialized for l in rvq.layers[:n_levels]]).all())
    for k in range(n_levels):
        layer = rvq.layers[k]
        if fresh and not bool(layer.initialized.item()):
            kmeans_init_(layer, residual, generator=generator, all_reduce=all_reduce)
        idx = layer.encode(residual)  # [B*T]
        q = layer.decode(idx)  # [B*T, d], no grad (codebooks are buffers)
        mask = active[:, k].repeat_interleave(T).to(q.dtype)[:, None]  # [B*T, 1]
        level_input = live - (live.detach() - residual)  # value: residual; gradient: identity
        sq = (level_input - q).pow(2).mean(dim=-1, keepdim=True)  # [B*T, 1]
        # a level no item uses adds exactly 0 (its masked sum is 0, divided by 1)
        commit = commit + (sq * mask).sum() / mask.sum().clamp(min=1.0)
        total = total + q * mask
        if update:
            ema_update_(layer, residual, idx, decay, all_reduce=all_reduce)
            replaced = replaced + replace_dead_codes_(layer, residual, threshold_ratio, generator=generator,
                                            all_reduce=all_reduce)
        residual = residual - q
        codes.append(idx.view(B, T))
    # Straight-through over the whole stack: value = sum of the chosen entries, gradient =
    # identity to the projected latent (see `split_rvq_train_forward`).
    st = live + (total - live).detach()  # [B*T, d]
    out = rvq.output_proj(st.view(B, T, -1).transpose(1, 2).to(projected.dtype))  # [B, D, T]
    codes_t = torch.stack(codes, dim=1) if codes else z.new_zeros(B, 0, T, dtype=torch.long)
    return out, codes_t, commit, replaced


def split_rvq_train_forward(quantizer: SplitResidualVectorQuantizer, z: torch.Tensor, *, n_q: int,
                            q_dropout: bool, no_quant_rate: float = 0.5, ema_decay: float = 0.99,
                            threshold_ratio: float = 0.1, update: bool = True,
                            generator: torch.Generator | None = None,
                            all_reduce: AllReduce | None = None) -> QuantizerTrainOutput:
    """Training forward of the split RVQ on the latent z [B, D, T].

    n_q: codebooks in all (semantic + acoustic), at most `quantizer.n_q`.
    q_dropout: each item uses the semantic level plus a random number of acoustic levels,
        uniform in [1, n_q - n_semantic] (drawn per item; the levels beyond are masked).
        Without it every item uses all n_q levels.
    no_quant_rate: probability that an item's decoder input is z itself (not quantised);
        0.5 in the recipe. The semantic output is computed for every item regardless.
    update: train the codebooks (k-means initialisation of a level on its first batch, EMA
        update with decay `ema_decay`, dead-code replacement below `threshold_ratio` x the
        uniform usage). Every level of every item feeds the codebook statistics, whether the
        item's decoder input uses it or not: the residual a level sees does not depend on it.
    generator: random source for dropout, the quantised-items draw, k-means and dead codes.
    all_reduce: sum over ranks, for the EMA statistics under DDP (see the module docstring).

    Straight-through estimator: per RVQ, the decoder input is
    `output_proj(p + (sum_k q_k - p).detach())` with p the projected latent and q_k the chosen
    entries; the value is exactly the inference `decode(encode(z, n))` and the gradient reaches
    p (hence the encoder) with a factor 1. Applying the estimator level by level instead would
    multiply the encoder's gradient by the number of levels, which would differ between items
    (dropout) and between quantised and unquantised items. The commitment loss still pulls
    every active level's input residual toward its entry.

    Codebook search runs in the precision of the codebook statistics (float32), with
    autocast disabled.
    """
    if z.dim() != 3:
        raise ValueError(f"latent must be [B, D, T], got {tuple(z.shape)}")
    if not 1 <= n_q <= quantizer.n_q:
        raise ValueError(f"n_q must be in [1, {quantizer.n_q}], got {n_q}")
    if not 0.0 <= no_quant_rate <= 1.0:
        raise ValueError(f"no_quant_rate must be in [0, 1], got {no_quant_rate}")
    B = z.shape[0]
    device = z.device
    n_sem = min(n_q, quantizer.n_q_semantic)
    n_ac = n_q - n_sem

    if q_dropout and n_ac > 1:  # drawn where the generator lives: its max needs no device read
        draw = _rand((B,), generator, generator.device if generator is not None else device)
        n_active_host = (draw * n_ac).long().clamp(max=n_ac - 1) + 1  # [B] in [1, n_ac]
    else:
        n_active_host = torch.full((B,), n_ac, dtype=torch.long)
    num_codebooks = int(n_active_host.max()) + n_sem if B else n_q
    n_active_ac = n_active_host.to(device)
    applied = _rand((B,), generator, device) >= no_quant_rate  # [B] bool

    options = dict(update=update, decay=ema_decay, threshold_ratio=threshold_ratio,
                   generator=generator, all_reduce=all_reduce)
    with torch.autocast(device_type=device.type, enabled=False):
        zf = z.float() if z.is_floating_point() and z.dtype != torch.float64 else z
        sem_active = torch.ones(B, n_sem, dtype=torch.bool, device=device)
        semantic, sem_codes, commit, replaced = _rvq_train_levels(quantizer.semantic, zf, n_sem, sem_active,
                                                                  **options)
        out = semantic
        codes = sem_codes
        if n_ac > 0:
            ac_active = torch.arange(n_ac, device=device)[None, :] < n_active_ac[:, None]  # [B, n_ac]
            acoustic, ac_codes, ac_commit, ac_replaced = _rvq_train_levels(quantizer.acoustic, zf, n_ac,
                                                                           ac_active, **options)
            out = out + acoustic
            codes = torch.cat([codes, ac_codes], dim=1)
            commit = commit + ac_commit
            replaced = replaced + ac_replaced
        quantized = torch.where(applied[:, None, None], out, zf).to(z.dtype)
    item_codebooks = n_active_ac + n_sem
    return QuantizerTrainOutput(
        quantized=quantized,
        codes=codes,
        semantic=semantic,
        commitment_loss=commit,
        num_codebooks=num_codebooks,
        quantized_applied=applied,
        item_codebooks=item_codebooks,
        dead_codes=replaced,
    )
