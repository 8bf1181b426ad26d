"""Exponential moving average of parameters: the EMA reference model of Xu et al. (ICML 2024).

Table 3's last row ("+ ref EMA") replaces the frozen reference by an EMA of the actor, updated after
every actor step; the authors' system example uses ref <- 0.001 * actor + 0.999 * ref (eta = 0.001).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_unit_interval, upcast


def ema_update(ref_params: Any, policy_params: Any, *, eta: float) -> Any:
    """ref <- (1 - eta) * ref + eta * policy, leaf by leaf over matching pytrees.

    Each leaf is computed in float32 (or wider) and cast back to the reference leaf's dtype, so
    bf16 parameters keep their dtype. Element-wise, hence the output keeps the input sharding under
    `jax.jit` and eagerly. Non-float leaves (e.g. integer step counters) are an error.

    Args:
      ref_params: pytree of float arrays (the EMA reference parameters).
      policy_params: pytree with the same structure and leaf shapes (the actor parameters).
      eta: in [0, 1], the weight of the policy; 0.001 gives the paper's
        0.001 * actor + 0.999 * ref. 0 freezes the reference, 1 copies the policy.

    Returns:
      pytree like `ref_params`, same dtypes.
    """
    check_unit_interval("eta", eta)
    ref_leaves, treedef = jax.tree.flatten(ref_params)
    policy_leaves, policy_treedef = jax.tree.flatten(policy_params)
    if treedef != policy_treedef:
        raise ValueError(
            f"ref_params and policy_params must have the same tree structure, got {treedef} and "
            f"{policy_treedef}"
        )
    with_paths, _ = jax.tree_util.tree_flatten_with_path(ref_params)
    paths = [jax.tree_util.keystr(p) for p, _ in with_paths]
    out = []
    for path, ref, policy in zip(paths, ref_leaves, policy_leaves):
        if jnp.shape(ref) != jnp.shape(policy):
            raise ValueError(
                f"ref_params{path} has shape {jnp.shape(ref)} but policy_params{path} has shape "
                f"{jnp.shape(policy)}"
            )
        for name, leaf in (("ref_params", ref), ("policy_params", policy)):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(f"{name}{path} must be a float array, got {jnp.result_type(leaf)}")
        mixed = (1.0 - eta) * upcast(ref) + eta * upcast(policy)
        out.append(mixed.astype(jnp.result_type(ref)))
    return jax.tree.unflatten(treedef, out)
