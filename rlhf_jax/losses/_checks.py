"""Trace-time input checks shared by the loss modules.

Every check runs on static information only (shapes, dtypes, Python numbers), so it costs nothing
under `jax.jit` and fails while tracing, before any device work, with a message naming the argument.
Hyperparameters passed as traced arrays (e.g. a scheduled beta) are not range-checked: their value
is unknown at trace time.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp


def check_rank(name: str, x: Any, rank: int) -> None:
    """Raises ValueError unless `x` has exactly `rank` dimensions."""
    if jnp.ndim(x) != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {jnp.shape(x)}")


def check_same_shape(**arrays: Any) -> tuple[int, ...]:
    """Raises ValueError unless all given arrays share one shape; returns that shape.

    Arguments are passed by keyword so the message can name them, e.g.
    `check_same_shape(logps_BxT=logps, mask_BxT=mask)`. `None` values are skipped.
    """
    shapes = {k: tuple(jnp.shape(v)) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}{list(s)}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: expected equal shapes, got {listed}")
    return next(iter(shapes.values())) if shapes else ()


def check_float(name: str, x: Any) -> None:
    """Raises ValueError unless `x` has a floating dtype (log-probs, values, scores)."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} must have a floating dtype, got {jnp.result_type(x)}")


def check_mask(name: str, mask: Any) -> None:
    """Raises ValueError unless `mask` is bool, integer or float (a 0/1 mask)."""
    dtype = jnp.result_type(mask)
    if not (
        dtype == jnp.bool_
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.floating)
    ):
        raise ValueError(f"{name} must be a bool or 0/1 numeric mask, got dtype {dtype}")


def _concrete(x: Any) -> float | None:
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return float(x)
    return None


def check_positive(name: str, x: Any) -> None:
    """Raises ValueError if `x` is a Python number that is not > 0."""
    v = _concrete(x)
    if v is not None and not v > 0:
        raise ValueError(f"{name} must be > 0, got {x}")


def check_non_negative(name: str, x: Any) -> None:
    """Raises ValueError if `x` is a Python number that is not >= 0."""
    v = _concrete(x)
    if v is not None and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {x}")


def check_unit_interval(name: str, x: Any) -> None:
    """Raises ValueError if `x` is a Python number outside [0, 1]."""
    v = _concrete(x)
    if v is not None and not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")


def upcast(x: Any) -> jax.Array:
    """`x` as a jax array of at least float32 precision, for accumulation and loss math."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
