"""Exponential moving average of parameters: the EMA reference model of Xu et al. (ICML 2024).

Table 3's last row ("+ ref EMA") replaces the frozen reference by an EMA of the actor, updated after
every actor step; the authors' system example uses ref <- 0.001 * actor + 0.999 * ref.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_unit_interval, upcast


def ema_update(ema_params: Any, new_params: Any, *, decay: float) -> Any:
    """ema <- decay * ema + (1 - decay) * new, leaf by leaf over matching pytrees.

    Each leaf is computed in float32 (or wider) and cast back to the EMA leaf's dtype, so bf16
    parameters keep their dtype. Element-wise, hence the output keeps the input sharding under
    `jax.jit` and eagerly. Non-float leaves (e.g. integer step counters) are an error.

    Args:
      ema_params: pytree of float arrays (the EMA / reference parameters).
      new_params: pytree with the same structure and leaf shapes (the actor parameters).
      decay: in [0, 1]; 0.999 gives the paper's 0.001 * actor + 0.999 * ref. 1 freezes the EMA.

    Returns:
      pytree like `ema_params`, same dtypes.
    """
    check_unit_interval("decay", decay)
    ema_leaves, treedef = jax.tree.flatten(ema_params)
    new_leaves, new_treedef = jax.tree.flatten(new_params)
    if treedef != new_treedef:
        raise ValueError(
            f"ema_params and new_params must have the same tree structure, got {treedef} and "
            f"{new_treedef}"
        )
    with_paths, _ = jax.tree_util.tree_flatten_with_path(ema_params)
    paths = [jax.tree_util.keystr(p) for p, _ in with_paths]
    out = []
    for path, ema, new in zip(paths, ema_leaves, new_leaves):
        if jnp.shape(ema) != jnp.shape(new):
            raise ValueError(
                f"ema_params{path} has shape {jnp.shape(ema)} but new_params{path} has shape "
                f"{jnp.shape(new)}"
            )
        for name, leaf in (("ema_params", ema), ("new_params", new)):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(f"{name}{path} must be a float array, got {jnp.result_type(leaf)}")
        mixed = decay * upcast(ema) + (1.0 - decay) * upcast(new)
        out.append(mixed.astype(jnp.result_type(ema)))
    return jax.tree.unflatten(treedef, out)
