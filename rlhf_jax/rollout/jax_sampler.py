"""`JaxSampler`: the default rollout engine, a jitted KV-cache decode loop over the Flax LLaMA.

    sampler = JaxSampler(policy, prompt_buckets=(64, 128, 256))
    out = sampler.generate(None, PromptBatch(ids_BxP, mask_BxP), config, key=key)
    sampler.update_params(nnx.state(policy))        # new weights, same compiled programs

Prompt-length buckets: a batch is left-padded to the smallest bucket that holds its longest
prompt, so a run compiles one program per (bucket, batch size, decode.Program) and then never again
(`num_compilations` counts them). Temperature, top_p and the EOS / stop / pad token ids are traced,
so new values reuse the program; a new max_new_tokens, greedy, top_k, number of stop tokens, or
turning top-p or EOS on or off compiles a new one. Each program allocates its KV cache once, sized
bucket + max_new_tokens; nothing is kept or grows between calls.

Precision: the sampler's copy of the params is kept in the narrower of the model's parameter and
compute dtypes (`sampling_dtype`): every weight is cast to the compute dtype before use anyway, so a
float32-weight policy computing in bf16 samples from a bf16 copy with the same outputs, at half the
memory.

Sharding: prompt rows over (data, fsdp), attention heads and KV-cache heads over tensor. Params
live in the sampler's own layout, `SAMPLING_RULES` by default: the training rules without fsdp on
the embedding dimension, so a decode step does not all-gather every weight (STYLE item 5). Pass
`rules=LOGICAL_RULES` to keep the training layout when params do not fit replicated over fsdp.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rlhf_jax.losses.logprobs import token_logps
from rlhf_jax.models.llama import LlamaForCausalLM
from rlhf_jax.rollout.base import PromptBatch, Rollout, RolloutConfig, RolloutOutput
from rlhf_jax.rollout.decode import Knobs, Program, decode, split_config
from rlhf_jax.sharding import (
    LOGICAL_RULES, MeshConfig, batch_sharding, make_mesh, put_batch, state_shardings, validate_mesh)

SAMPLING_RULES: dict[str, Any] = {**LOGICAL_RULES, "embed": None}
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


def sampling_dtype(cfg) -> jnp.dtype:
    """The dtype of the sampler's params: the narrower of cfg.param_dtype and cfg.dtype. The model casts
    every weight (embedding rows, norms, projections, LM head) to the compute dtype before using it,
    so rounding the copy to the compute dtype up front changes no output."""
    param, compute = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    return compute if compute.itemsize < param.itemsize else param


def _mesh_of(state) -> Mesh:
    """The mesh the params already live on (a 1-device mesh for single-device arrays)."""
    leaf = jax.tree.leaves(state)[0]
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return sharding.mesh
    devices = list(sharding.device_set) if sharding is not None else jax.devices()[:1]
    return make_mesh(MeshConfig(1, 1, 1), devices=devices[:1])


def _check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    out = tuple(buckets)
    if not out or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in out):
        raise ValueError(f"prompt_buckets must be a non-empty sequence of ints >= 1, got {buckets!r}")
    if list(out) != sorted(set(out)):
        raise ValueError(f"prompt_buckets must be strictly increasing, got {buckets!r}")
    return out


def left_pad_prompts(prompts: PromptBatch, width: int, pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Moves each row's masked-in tokens, in order, to the right end of a [B, width] block."""
    ids = np.asarray(prompts.ids_BxP)
    mask = np.asarray(prompts.mask_BxP).astype(bool)
    B, P = ids.shape
    order_BxP = np.argsort(mask, axis=1, kind="stable")  # padding first, tokens in their order
    ids = np.take_along_axis(ids, order_BxP, axis=1).astype(np.int32)
    mask = np.take_along_axis(mask, order_BxP, axis=1)
    if width >= P:
        ids = np.pad(ids, ((0, 0), (width - P, 0)), constant_values=pad_token_id)
        mask = np.pad(mask, ((0, 0), (width - P, 0)), constant_values=False)
    else:  # only padding is cropped: no row is longer than width
        ids, mask = ids[:, P - width:], mask[:, P - width:]
    return np.where(mask, ids, pad_token_id).astype(np.int32), mask


class JaxSampler(Rollout):
    """Jitted static-KV-cache sampler for `LlamaForCausalLM` on a (data, fsdp, tensor) mesh.

    Args:
      model: the policy; its params become the sampler's current params (resharded to `rules`).
      mesh: where to run (default: the mesh the model's params live on).
      prompt_buckets: increasing prompt widths to pad to; a longer prompt is an error.
      rules: logical-axis rules for the params while sampling (see the module docstring).
    """

    def __init__(self, model: LlamaForCausalLM, *, mesh: Mesh | None = None,
                 prompt_buckets: Sequence[int] = DEFAULT_BUCKETS,
                 rules: Mapping[str, Any] = SAMPLING_RULES):
        if not isinstance(model, LlamaForCausalLM):
            raise TypeError(f"model must be a LlamaForCausalLM, got {type(model).__name__}")
        self.cfg = model.cfg
        self.prompt_buckets = _check_buckets(prompt_buckets)
        graphdef, state = nnx.split(model)
        self.mesh = _mesh_of(state) if mesh is None else mesh
        validate_mesh(self.mesh, num_heads=self.cfg.num_heads, num_kv_heads=self.cfg.num_kv_heads,
                      what="JaxSampler mesh")
        self._shardings = state_shardings(state, self.mesh, rules)
        self._abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        self.dtype = sampling_dtype(self.cfg)
        self._graphdef = graphdef
        self._params = self._place(state)
        self._traces: collections.Counter = collections.Counter()
        self._generate_jit = jax.jit(self._generate_program, static_argnames=("program",))
        self._logps_jit = jax.jit(self._logps_program)

    # ------------------------------------------------------------------ params
    def _place(self, params):
        """`params` as the sampler's copy: cast to `self.dtype` where they are (a narrower transient
        copy in the caller's layout), then moved to the sampling layout."""
        cast = jax.tree.map(lambda x: x if x.dtype == self.dtype else x.astype(self.dtype), self._checked(params))
        return jax.device_put(cast, self._shardings)

    def _checked(self, params):
        if isinstance(params, nnx.Module):
            params = nnx.state(params)
        if jax.tree.structure(params) != jax.tree.structure(self._abstract):
            raise ValueError("params: tree structure differs from the sampler model's state "
                             f"({jax.tree.structure(params)} vs {jax.tree.structure(self._abstract)})")
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(self._abstract)):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(f"params{jax.tree_util.keystr(path)}: {a.shape} {a.dtype}, "
                                 f"expected {b.shape} {b.dtype}")
        return params

    def update_params(self, params) -> None:
        """Makes `params` (an nnx.State of the same model, or the model) the current params.

        The previous copy is released before the new one is placed, so the sampler never holds two;
        a trainer that calls this before each `generate(None, ...)` keeps exactly one sampling-layout
        copy of its policy (`generate(params, ...)` places a transient copy on every call instead)."""
        params = self._checked(params)
        self._params = None
        self._params = self._place(params)

    @property
    def params(self):
        """The current params, in the sampler's layout."""
        return self._params

    @property
    def num_compilations(self) -> int:
        """How many generate programs were traced (= compiled) so far, all shapes together."""
        return sum(self._traces.values())

    # ------------------------------------------------------------------ generate
    def _generate_program(self, params, ids_BxP, mask_BxP, key, knobs: Knobs, *, program: Program):
        self._traces[(ids_BxP.shape, program)] += 1  # runs only while tracing
        model = nnx.merge(self._graphdef, params)
        return decode(model, ids_BxP, mask_BxP, key, program, knobs)

    def bucket_for(self, prompt_length: int) -> int:
        """The smallest bucket holding `prompt_length` tokens."""
        for b in self.prompt_buckets:
            if prompt_length <= b:
                return b
        raise ValueError(f"prompts: a prompt of {prompt_length} tokens is longer than the largest "
                         f"of prompt_buckets={self.prompt_buckets}")

    def generate(self, params, prompts: PromptBatch, config: RolloutConfig, *,
                 key: jax.Array | None = None) -> RolloutOutput:
        """Samples up to `config.max_new_tokens` tokens per prompt; see `Rollout.generate`.

        `prompts` holds this process's rows (multi-host: every process calls with its own rows,
        as `put_batch`); the batch size must divide over data * fsdp.
        """
        if not isinstance(config, RolloutConfig):
            raise TypeError(f"config must be a RolloutConfig, got {type(config).__name__}")
        if not isinstance(prompts, PromptBatch):
            raise TypeError(f"prompts must be a PromptBatch, got {type(prompts).__name__}")
        config.check_vocab(self.cfg.vocab_size)
        ids, mask = np.asarray(prompts.ids_BxP), np.asarray(prompts.mask_BxP)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(
                f"prompts: ids_BxP {ids.shape} and mask_BxP {mask.shape} must be the same [B, P]")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"prompts.ids_BxP must hold integer token ids, got {ids.dtype}")
        lengths = mask.astype(bool).sum(axis=1)
        if ids.shape[0] == 0 or lengths.min() == 0:
            raise ValueError("prompts: every row needs at least one token (mask_BxP has an empty row)")
        valid_ids = ids[mask.astype(bool)]
        if valid_ids.min() < 0 or valid_ids.max() >= self.cfg.vocab_size:
            raise ValueError(f"prompts.ids_BxP: token ids must be in [0, {self.cfg.vocab_size})")
        longest = int(lengths.max())
        if jax.process_count() > 1:  # every process must pick the same bucket
            from jax.experimental import multihost_utils
            longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
        if longest + config.max_new_tokens > self.cfg.max_position_embeddings:
            raise ValueError(
                f"config.max_new_tokens={config.max_new_tokens} plus the longest prompt ({longest}) "
                f"exceeds the model's max_position_embeddings={self.cfg.max_position_embeddings}")
        validate_mesh(self.mesh, batch_size=ids.shape[0] * jax.process_count(), what="prompts")
        if key is None:
            if not config.greedy:
                raise ValueError("key: a PRNG key is required to sample (only greedy decoding needs none)")
            key = jax.random.key(0)
        params = self._params if params is None else self._place(params)
        ids, mask = left_pad_prompts(prompts, self.bucket_for(longest), config.pad_token_id)
        with jax.set_mesh(self.mesh):
            ids, mask = put_batch((ids, mask), self.mesh)
            program, knobs = split_config(config)
            return self._generate_jit(params, ids, mask, key, knobs, program=program)

    # ------------------------------------------------------------------ scoring
    def _logps_program(self, params, tokens_BxT, mask_BxT):
        model = nnx.merge(self._graphdef, params)
        mask_BxT = mask_BxT.astype(bool)
        logits_BxTxV = model(tokens_BxT, mask_BxT)
        has_prev_BxT1 = jnp.cumsum(mask_BxT, axis=1)[:, :-1] > 0
        label_mask = mask_BxT[:, 1:] & has_prev_BxT1
        logps = token_logps(logits_BxTxV[:, :-1], tokens_BxT[:, 1:], label_mask)
        return jnp.pad(logps, ((0, 0), (1, 0)))

    def logps(self, params, tokens_BxT, mask_BxT) -> jax.Array:
        """Per-token log-probs from one training-style forward; see `Rollout.logps`."""
        if jnp.ndim(tokens_BxT) != 2 or jnp.shape(tokens_BxT) != jnp.shape(mask_BxT):
            raise ValueError(f"tokens_BxT {jnp.shape(tokens_BxT)} and mask_BxT {jnp.shape(mask_BxT)} "
                             "must be the same [B, T]")
        if isinstance(tokens_BxT, jax.Array):  # global arrays, e.g. RolloutOutput.sequences()
            validate_mesh(self.mesh, batch_size=tokens_BxT.shape[0], what="tokens_BxT")
            rows = batch_sharding(self.mesh, 2)
            tokens, mask = (jax.device_put(tokens_BxT.astype(jnp.int32), rows),
                            jax.device_put(jnp.asarray(mask_BxT).astype(bool), rows))
        else:  # this process's rows
            validate_mesh(self.mesh, batch_size=len(tokens_BxT) * jax.process_count(), what="tokens_BxT")
            tokens, mask = put_batch(
                (np.asarray(tokens_BxT, np.int32), np.asarray(mask_BxT, bool)), self.mesh)
        params = self._params if params is None else self._place(params)
        with jax.set_mesh(self.mesh):
            return self._logps_jit(params, tokens, mask)
