"""From a causal LM to per-token log-probs without materializing [B, T, V] logits.

`model_token_logps` runs the decoder to its final hidden states, then applies the LM head chunk by
chunk along T inside `lax.map`, computing log p(x_t | x_<t) = logit[x_t] - logsumexp(logit) in
float32 per chunk. Each chunk is rematerialized in the backward pass, so peak memory holds one
[B, chunk, V] float32 block rather than the full logits (the large-vocabulary problem of
LLaMA-3's 128k vocabulary). Values are aligned with `input_ids`: entry t is the log-prob of token
t given the tokens before it; entry 0 (no context) is 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hidden_token_logps(hidden_BxTxD, head_DxV, input_ids_BxT, *, chunk_size: int = 128):
    """log p(input_ids[:, t] | hidden[:, t - 1]) for t >= 1; [B, T] float32, 0 at t = 0."""
    B, T, D = hidden_BxTxD.shape
    h, labels = hidden_BxTxD[:, :-1], input_ids_BxT[:, 1:]
    n = T - 1
    chunk = max(1, min(chunk_size, n))
    pad = (-n) % chunk
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    labels = jnp.pad(labels, ((0, 0), (0, pad)))
    k = (n + pad) // chunk
    h_KxBxCxD = h.reshape(B, k, chunk, D).transpose(1, 0, 2, 3)
    labels_KxBxC = labels.reshape(B, k, chunk).transpose(1, 0, 2)

    @jax.checkpoint
    def one(args):
        h_c, y_c = args
        logits = jnp.einsum("bcd,dv->bcv", h_c, head_DxV.astype(h_c.dtype),
                            preferred_element_type=jnp.float32)
        picked = jnp.take_along_axis(logits, y_c[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    logps = jax.lax.map(one, (h_KxBxCxD, labels_KxBxC))  # [K, B, C]
    logps = logps.transpose(1, 0, 2).reshape(B, n + pad)[:, :n]
    return jnp.concatenate([jnp.zeros((B, 1), jnp.float32), logps], axis=1)


def model_token_logps(model, input_ids_BxT, attention_mask_BxT=None, positions_BxT=None,
                      segment_ids_BxT=None, *, chunk_size: int = 128):
    """Per-token log-probs [B, T] (float32) of `input_ids` under a LlamaForCausalLM.

    Entry t is log p(x_t | x_<t); entry 0 is 0. Mask the result with the loss/response mask of the
    tokens (`loss_mask`); at padding it is meaningless. In packed rows, the first token of each
    segment gets the log-prob given the previous segment's last hidden state: its loss mask must be 0
    (prompt tokens), as the data pipeline lays it out.
    """
    hidden = model.hidden(input_ids_BxT, attention_mask_BxT, positions_BxT, segment_ids_BxT)
    return hidden_token_logps(hidden, model.head_weight(), input_ids_BxT, chunk_size=chunk_size)
