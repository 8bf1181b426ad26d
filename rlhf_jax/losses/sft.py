"""Supervised fine-tuning loss: token-mean negative log-likelihood over response tokens."""

from __future__ import annotations

import jax

from rlhf_jax.losses._checks import check_float, check_mask, check_rank, check_same_shape
from rlhf_jax.losses.masked import masked_count, masked_mean


def sft_loss(
    logps_BxT: jax.Array, mask_BxT: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative log-likelihood of the response tokens, one mean over all valid tokens.

      loss = -sum_{b,t} mask_bt * log pi(y_bt | y_b,<t) / sum_{b,t} mask_bt

    The maximum-likelihood objective of supervised fine-tuning (e.g. Ouyang et al. 2022, the SFT
    stage; Xu et al. 2024 start every run from SFT). Because it is one sum over one count, the value
    is the same however the tokens are split into rows, micro-batches, shards or packed rows:
    a packed row (several examples separated by `segment_ids`, see `rlhf_jax.data.batching`) gives
    the same loss as the examples unpacked, provided the model keeps attention within segments and
    the label mask excludes each segment's first token (it has no in-segment predecessor).

    Args:
      logps_BxT: [B, T] float, log pi of each label token (e.g. `token_logps(logits, labels, m)`).
      mask_BxT: [B, T] 0/1, 1 on response tokens (the labels to learn); prompt and padding are 0.

    Returns:
      loss: scalar, 0 if no valid token (never NaN).
      metrics: "loss" (the same token mean) and "count" (number of valid tokens); merge
        micro-batches with `combine_metrics`.
    """
    check_rank("logps_BxT", logps_BxT, 2)
    check_float("logps_BxT", logps_BxT)
    check_same_shape(logps_BxT=logps_BxT, mask_BxT=mask_BxT)
    check_mask("mask_BxT", mask_BxT)
    loss = -masked_mean(logps_BxT, mask_BxT)
    return loss, {"loss": loss, "count": masked_count(mask_BxT)}
