"""Is a program's output right? The comparison rules of the APPS and CodeContests judges.

Standard-input tests (`compare_stdout`), in order, first match wins:
  1. "exact": the strings are equal;
  2. "tokens": equal after splitting on any whitespace (trailing spaces, blank lines, CRLF, ...);
  3. "numeric": same number of tokens and, pair by pair, equal strings or, where the *reference*
     token is a finite decimal number, an actual number within `float_tol` absolute or relative
     (default 1e-5; APPS uses numpy.allclose with rtol 1e-5, atol 1e-8).
Call-based tests (`compare_values`): the returned value equals the expected one, with tuples read as
lists, floats within `float_tol` and, as with Python's `==` in APPS' `testing_util`, True == 1;
as there, an expected value wrapped in a one-element list also matches the bare value.
"""

from __future__ import annotations

import math
import re
from typing import Any

DEFAULT_FLOAT_TOL = 1e-5
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def _as_number(token: str) -> float | None:
    if not _DECIMAL.match(token):
        return None
    value = float(token)
    return value if math.isfinite(value) else None


def _close(actual: float, expected: float, float_tol: float) -> bool:
    return math.isclose(actual, expected, rel_tol=float_tol, abs_tol=float_tol)


def compare_stdout(actual: str, expected: str, *, float_tol: float = DEFAULT_FLOAT_TOL) -> tuple[bool, str]:
    """(matched, rule or reason): which rule matched, or a short description of the first difference."""
    if actual == expected:
        return True, "exact"
    got, want = actual.split(), expected.split()
    if got == want:
        return True, "tokens"
    if len(got) != len(want):
        return False, f"expected {len(want)} tokens, got {len(got)}"
    numeric = False
    for position, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        w_num, g_num = _as_number(w), _as_number(g)
        if w_num is None or g_num is None or not _close(g_num, w_num, float_tol):
            return False, f"token {position}: expected {w[:50]!r}, got {g[:50]!r}"
        numeric = True
    assert numeric  # equal token lists were caught above
    return True, "numeric"


def _normalize(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def _values_equal(actual: Any, expected: Any, float_tol: float) -> bool:
    if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(actual, int) and isinstance(expected, int):
            return actual == expected
        return _close(float(actual), float(expected), float_tol)
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            _values_equal(a, e, float_tol) for a, e in zip(actual, expected)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _values_equal(actual[k], expected[k], float_tol) for k in actual
        )
    return actual == expected


def compare_values(actual: Any, expected: Any, *, float_tol: float = DEFAULT_FLOAT_TOL) -> tuple[bool, str]:
    """(matched, rule or reason) for a call-based test's return value (decoded JSON on both sides)."""
    actual, expected = _normalize(actual), _normalize(expected)
    if _values_equal(actual, expected, float_tol):
        return True, "value"
    if isinstance(expected, list) and len(expected) == 1 and _values_equal(actual, expected[0], float_tol):
        return True, "value (unwrapped)"
    return False, f"expected {expected!r:.80}, got {actual!r:.80}"
