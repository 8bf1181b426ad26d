"""Splash attention (the TPU Pallas flash-attention kernel) for full-sequence forwards.

`splash_attention(q, k, v, segments, scale=..., sliding_window=...)` computes what the XLA path
computes from the dense [B, T, S] mask of `layers.make_attention_mask`, for every query that is a
real token: causal attention inside each segment (packed rows: the segment ids; otherwise the
attention mask, 1 for tokens and 0 for padding), optionally within a sliding window. The kernel
never builds a [T, S] mask or logits: the causal / local structure is a static block-sparse mask and
segments are compared blockwise. Padding queries (segment 0) attend to the earlier padding instead
of only to themselves as on the XLA path; their outputs are masked out of every loss either way.

Grouped-query attention runs the kernel's multi-query form once per kv head over its query-head
group. Traced under `jax.set_mesh` of a (data, fsdp, tensor) mesh, the kernel runs per shard
(`shard_map`: rows over data and fsdp, kv heads over tensor). Without a mesh context it is one call
over the global arrays: right on one device, but on several XLA cannot split the kernel and gathers
its operands. PPO's iteration runs under the mesh; the SFT / reward / DPO steps (`jit_step`) are not
traced under it yet, so on a multi-chip slice `attention="splash"` is for PPO until they are. On a backend other than TPU the kernel runs in Pallas' interpret mode,
which is how the tests check it on CPU against the XLA path, forward and backward.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rlhf_jax.sharding import AXES, logical_to_spec

BLOCKS = (512, 256, 128)  # the largest that divides the sequence is used


def _block(length: int) -> int:
    for b in BLOCKS:
        if length % b == 0:
            return b
    raise ValueError(f"attention='splash' needs a sequence length that is a multiple of {BLOCKS[-1]} "
                     f"(TPU tiles), got {length}; pad the batch (data.max_length) or use attention='xla'")


def _kernel(length: int, group: int, sliding_window: int | None, interpret: bool):
    """The multi-query splash kernel for `group` query heads over one kv head (built while tracing:
    it holds arrays of the trace, so it is not kept across traces)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    if sliding_window is None:
        one = sm.CausalMask((length, length))
    else:  # key slot k is seen from query slot q when q - sliding_window < k <= q
        one = sm.LocalMask((length, length), window_size=(sliding_window - 1, 0), offset=0)
    b = _block(length)
    sizes = sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                          block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    return sk.make_splash_mqa_single_device(sm.MultiHeadMask([one] * group), block_sizes=sizes,
                                            interpret=interpret)


def _local(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segments_BxT, *, scale: float, sliding_window: int | None):
    """Splash attention over this shard's rows and heads (plain arrays, no mesh)."""
    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import SegmentIds

    B, T, N, H = q_BxTxNxH.shape
    K = k_BxTxKxH.shape[2]
    kernel = _kernel(T, N // K, sliding_window, jax.default_backend() != "tpu")
    q = (q_BxTxNxH * jnp.asarray(scale, q_BxTxNxH.dtype)).reshape(B, T, K, N // K, H)
    q = q.transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    k, v = k_BxTxKxH.transpose(0, 2, 1, 3), v_BxTxKxH.transpose(0, 2, 1, 3)  # [B, K, T, H]

    def one_row(q_KxGxTxH, k_KxTxH, v_KxTxH, seg_T):
        ids = SegmentIds(q=seg_T, kv=seg_T)
        return jax.vmap(lambda qq, kk, vv: kernel(qq, kk, vv, segment_ids=ids))(q_KxGxTxH, k_KxTxH, v_KxTxH)

    out = jax.vmap(one_row)(q, k, v, segments_BxT.astype(jnp.int32))  # [B, K, G, T, H]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H).astype(q_BxTxNxH.dtype)


def splash_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segments_BxT, *, scale: float,
                     sliding_window: int | None = None):
    """Causal attention within segments (0 = padding), [B, T, N, H]; see the module docstring."""
    if q_BxTxNxH.shape[1] != k_BxTxKxH.shape[1]:
        raise ValueError(f"attention='splash' is for full-sequence forwards (T == S), got T="
                         f"{q_BxTxNxH.shape[1]}, S={k_BxTxKxH.shape[1]}")
    _block(q_BxTxNxH.shape[1])
    local = functools.partial(_local, scale=scale, sliding_window=sliding_window)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or set(mesh.axis_names) != set(AXES):
        return local(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segments_BxT)
    heads = logical_to_spec(("batch", "length", "act_kv_heads", None))
    rows = logical_to_spec(("batch", "length"))
    return jax.shard_map(local, in_specs=(heads, heads, heads, rows), out_specs=heads,
                         check_vma=False)(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segments_BxT)

