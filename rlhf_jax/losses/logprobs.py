"""Per-token and per-sequence log-probabilities from logits, computed in float32 chunk by chunk.

The caller aligns logits and labels: `logits_BxTxV[:, t]` is the distribution that predicts
`labels_BxT[:, t]`. For a causal LM run on `tokens_BxL` that means
`logits = model(tokens)[:, :-1]` and `labels = tokens[:, 1:]` (the shift happens outside).

log p(label) = logit[label] - logsumexp(logit) in float32. Each chunk of `chunk_size` positions is
upcast on its own inside `lax.map` and rematerialized in the backward pass (`jax.checkpoint`),
so the memory overhead is a few float32 [B, chunk_size, V] buffers, not several [B, T, V] copies.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_float, check_mask, check_rank, check_same_shape
from rlhf_jax.losses.masked import masked_count, masked_sum, safe_divide


def _chunk_logps(logits_BxCxV: jax.Array, labels_BxC: jax.Array) -> jax.Array:
    logits = logits_BxCxV.astype(jnp.promote_types(logits_BxCxV.dtype, jnp.float32))
    label_logit = jnp.take_along_axis(logits, labels_BxC[..., None], axis=-1)[..., 0]
    return label_logit - jax.nn.logsumexp(logits, axis=-1)


def token_logps(
    logits_BxTxV: jax.Array,
    labels_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    chunk_size: int = 128,
) -> jax.Array:
    """Log-probability of each label token: log softmax(logits)[label], 0 where mask == 0.

    Args:
      logits_BxTxV: [B, T, V] any float dtype; position t predicts labels_BxT[:, t] (caller shifts).
      labels_BxT: [B, T] integer token ids in [0, V) at valid positions; masked positions may hold
        anything (e.g. -100 or a pad id) and are never gathered.
      mask_BxT: [B, T] 0/1, 1 for tokens whose log-prob is wanted.
      chunk_size: positions per chunk along T (> 0); the last chunk may be shorter.

    Returns:
      logps_BxT: [B, T] float32 (float64 under x64 with float64 logits), 0 where mask == 0.
    """
    check_rank("logits_BxTxV", logits_BxTxV, 3)
    check_float("logits_BxTxV", logits_BxTxV)
    check_rank("labels_BxT", labels_BxT, 2)
    if jnp.shape(logits_BxTxV)[:2] != jnp.shape(labels_BxT):
        raise ValueError(
            f"logits_BxTxV{list(jnp.shape(logits_BxTxV))} and "
            f"labels_BxT{list(jnp.shape(labels_BxT))} must agree on [B, T]"
        )
    check_same_shape(labels_BxT=labels_BxT, mask_BxT=mask_BxT)
    check_mask("mask_BxT", mask_BxT)
    if not jnp.issubdtype(jnp.result_type(labels_BxT), jnp.integer):
        raise ValueError(f"labels_BxT must be integer token ids, got {jnp.result_type(labels_BxT)}")
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")

    logits_BxTxV = jnp.asarray(logits_BxTxV)
    valid = jnp.asarray(mask_BxT) != 0
    labels = jnp.where(valid, labels_BxT, 0)
    t = logits_BxTxV.shape[1]
    chunk = min(chunk_size, t)
    n_full, tail = divmod(t, chunk) if t else (0, 0)
    step = jax.checkpoint(_chunk_logps)

    pieces = []
    if n_full:
        def one(i):
            start = i * chunk
            return step(
                jax.lax.dynamic_slice_in_dim(logits_BxTxV, start, chunk, axis=1),
                jax.lax.dynamic_slice_in_dim(labels, start, chunk, axis=1),
            )

        out_NxBxC = jax.lax.map(one, jnp.arange(n_full))
        b = logits_BxTxV.shape[0]
        pieces.append(jnp.moveaxis(out_NxBxC, 0, 1).reshape(b, n_full * chunk))
    if tail:
        pieces.append(step(logits_BxTxV[:, n_full * chunk :], labels[:, n_full * chunk :]))
    if not pieces:
        return jnp.zeros(jnp.shape(labels_BxT), jnp.float32)
    logps = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
    return jnp.where(valid, logps, 0.0)


def sequence_logps(
    logits_BxTxV: jax.Array,
    labels_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    length_normalized: bool = False,
    chunk_size: int = 128,
) -> jax.Array:
    """Log-probability of each sequence's masked tokens: sum_t mask * log p(label_t).

    With `length_normalized=True` returns the mean over the sequence's valid tokens instead,
    (1/|y|) sum_t log p(y_t), the score used by RRHF (Yuan et al. 2023) and PRO (Song et al. 2023).
    A sequence with no valid tokens gets 0 in both modes.

    Args: as `token_logps`.

    Returns:
      logps_B: [B] float32.
    """
    logps_BxT = token_logps(logits_BxTxV, labels_BxT, mask_BxT, chunk_size=chunk_size)
    total_B = masked_sum(logps_BxT, mask_BxT, axis=-1)
    if length_normalized:
        return safe_divide(total_B, masked_count(mask_BxT, axis=-1))
    return total_B


def segment_logps(
    logps_BxT: jax.Array,
    mask_BxT: jax.Array,
    segment_ids_BxT: jax.Array,
    *,
    num_segments: int,
    length_normalized: bool = False,
) -> jax.Array:
    """Per-segment log-probabilities of packed rows: `sequence_logps` for several examples a row.

      out[b, s] = sum_t mask[b, t] * [segment_ids[b, t] == s + 1] * logps[b, t]

    Segment ids follow `rlhf_jax.data.batching` (1, 2, ... per packed example, 0 = padding), so
    column s holds segment s + 1; ids above `num_segments` are dropped, absent segments give 0.
    With `length_normalized=True`, each sum is divided by the segment's valid-token count.
    Packed == unpacked: for a model that keeps attention within segments, out[b, s] equals
    `sequence_logps` of that example in a row of its own (tests/losses/test_sft_loss.py).

    Args:
      logps_BxT: [B, T] float per-token log-probs (from `token_logps` on the packed row).
      mask_BxT: [B, T] 0/1 label mask; 0 on each segment's first position (it has no
        in-segment predecessor to be predicted from) and on padding.
      segment_ids_BxT: [B, T] integer segment ids of the labels.
      num_segments: static int > 0, the most segments a row can hold.
      length_normalized: divide by each segment's token count (RRHF/PRO score).

    Returns:
      logps_BxS: [B, num_segments] float32.
    """
    check_rank("logps_BxT", logps_BxT, 2)
    check_float("logps_BxT", logps_BxT)
    check_same_shape(logps_BxT=logps_BxT, mask_BxT=mask_BxT, segment_ids_BxT=segment_ids_BxT)
    check_mask("mask_BxT", mask_BxT)
    if not jnp.issubdtype(jnp.result_type(segment_ids_BxT), jnp.integer):
        raise ValueError(
            f"segment_ids_BxT must be integer ids, got {jnp.result_type(segment_ids_BxT)}"
        )
    if not isinstance(num_segments, int) or num_segments <= 0:
        raise ValueError(f"num_segments must be a positive int, got {num_segments!r}")
    ids_1x1xS = jnp.arange(1, num_segments + 1).reshape(1, 1, num_segments)
    in_seg_BxTxS = (jnp.asarray(segment_ids_BxT)[..., None] == ids_1x1xS) & (
        jnp.asarray(mask_BxT)[..., None] != 0
    )
    total_BxS = masked_sum(
        jnp.broadcast_to(jnp.asarray(logps_BxT)[..., None], in_seg_BxTxS.shape), in_seg_BxTxS,
        axis=1,
    )
    if length_normalized:
        return safe_divide(total_BxS, masked_count(in_seg_BxTxS, axis=1))
    return total_BxS
