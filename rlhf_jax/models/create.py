"""Creating models with sharded parameters, never materializing them whole.

`create_model` evaluates the model's shapes abstractly (`nnx.eval_shape`), derives each
parameter's NamedSharding from its `logical_axes`, and runs the initializer under `jax.jit` with
those `out_shardings`: every device only ever allocates its own shard.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
from flax import nnx
from jax.sharding import Mesh

from rlhf_jax.models.config import LlamaConfig
from rlhf_jax.sharding import LOGICAL_RULES, make_mesh, state_shardings, validate_mesh


def abstract_model(model_cls, cfg: LlamaConfig, *, seed: int = 0):
    """The model with ShapeDtypeStruct leaves: shapes and metadata, no memory."""
    return nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(seed)))


def model_shardings(model_cls, cfg: LlamaConfig, mesh: Mesh, rules: Mapping[str, Any] = LOGICAL_RULES):
    """(graphdef, abstract state, state of NamedShardings) for a model class on a mesh."""
    validate_mesh(mesh, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                  what=f"{model_cls.__name__}")
    graphdef, abstract_state = nnx.split(abstract_model(model_cls, cfg))
    return graphdef, abstract_state, state_shardings(abstract_state, mesh, rules)


def create_model(model_cls, cfg: LlamaConfig, *, mesh: Mesh | None = None, seed: int = 0,
                 rules: Mapping[str, Any] = LOGICAL_RULES):
    """A randomly initialized model whose parameters are created directly in their shards."""
    mesh = make_mesh() if mesh is None else mesh
    graphdef, _, shardings = model_shardings(model_cls, cfg, mesh, rules)

    @jax.jit
    def init():
        return nnx.state(model_cls(cfg, rngs=nnx.Rngs(seed)))

    state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)
