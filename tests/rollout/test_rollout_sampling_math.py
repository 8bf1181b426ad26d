"""The pure sampling math: allowed sets, renormalized frequencies, log-probs, greedy, bad args."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.rollout.sampling import filter_logits, sample_tokens
from tests.rollout.rollout_fixtures import chi2_critical, reference_filter

# One row of logits over a vocab of 10, distinct values (no ties at any boundary).
LOGITS_V = np.array([2.0, 1.5, 1.2, 0.9, 0.5, 0.1, -0.3, -0.8, -1.5, -3.0], np.float32)


def reference(temperature, top_k, top_p):
    keep, q = reference_filter(LOGITS_V[None, :], temperature, top_k, top_p)
    return keep[0], q[0]


_sample = jax.jit(sample_tokens, static_argnames=("greedy", "temperature", "top_k", "top_p"))
_filter = jax.jit(filter_logits, static_argnames=("temperature", "top_k", "top_p"))


def kept(logits, **kwargs):
    return np.isfinite(np.asarray(_filter(jnp.asarray(logits, jnp.float32), **kwargs)))


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0),   # plain softmax
    (0.5, 0, 1.0),   # temperature only: sharper
    (1.0, 3, 1.0),   # top-k only
    (1.0, 0, 0.6),   # top-p only
    (1.7, 6, 0.75),  # all three: top-p over the top-k renormalized at temperature 1.7
])
def test_frequencies_match_renormalized_distribution(temperature, top_k, top_p):
    keep, q = reference(temperature, top_k, top_p)
    assert 1 < keep.sum() < len(LOGITS_V) or (top_k, top_p) == (0, 1.0)  # the filter really cuts
    B = 4096
    logits = jnp.broadcast_to(jnp.asarray(LOGITS_V), (B, len(LOGITS_V)))
    tokens, logps, slogps = _sample(jax.random.key(7), logits, temperature=temperature,
                                    top_k=top_k, top_p=top_p)
    tokens = np.asarray(tokens)
    assert keep[tokens].all(), f"drew tokens outside the allowed set: {sorted(set(tokens[~keep[tokens]]))}"
    counts = np.bincount(tokens, minlength=len(LOGITS_V))[keep]
    expected = B * q[keep]
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < chi2_critical(int(keep.sum()) - 1), (counts, expected.round(1))
    # log-probs: the policy at temperature 1, and the renormalized sampling distribution
    logp_ref = LOGITS_V - np.log(np.exp(LOGITS_V.astype(np.float64)).sum())
    np.testing.assert_allclose(np.asarray(logps), logp_ref[tokens], atol=1e-6)
    np.testing.assert_allclose(np.asarray(slogps), np.log(q[tokens]), atol=1e-5)


def test_filter_boundaries():
    x = LOGITS_V[None, :]
    # top_k=1 or a tiny top_p leaves only the argmax; top_k >= V and top_p=1 leave everything
    for kw in (dict(top_k=1), dict(top_p=1e-3)):
        assert kept(x, **kw).tolist() == [[True] + [False] * 9], kw
    np.testing.assert_array_equal(_filter(jnp.asarray(x), top_k=50), x)
    # ties at the top-k boundary are kept together (the rule is logit >= k-th largest)
    assert kept([[1.0, 3.0, 2.0, 2.0, 0.0]], top_k=2).tolist() == [[False, True, True, True, False]]
    # top-p keeps a token when the mass strictly before it is < p: probs [0.5, 0.3, 0.2] have
    # masses before of [0, 0.5, 0.8], so p = 0.5 keeps one token, 0.51 two, 0.81 all three.
    probs = np.log([[0.5, 0.3, 0.2]])
    for p, n in ((0.5, 1), (0.51, 2), (0.81, 3)):
        assert kept(probs, top_p=p).sum() == n, p
    # a tie at the top-p boundary is kept together too: [0.5, 0.25, 0.25] at p = 0.51 keeps all
    assert kept(np.log([[0.5, 0.25, 0.25]]), top_p=0.51).sum() == 3


def test_greedy_is_argmax_with_zero_sampling_logp():
    logits = jax.random.normal(jax.random.key(0), (16, 10))
    tokens, logps, slogps = _sample(None, logits, greedy=True, top_k=3, top_p=0.1)
    np.testing.assert_array_equal(tokens, np.argmax(np.asarray(logits), axis=-1))
    np.testing.assert_allclose(logps, np.max(np.asarray(jax.nn.log_softmax(logits)), axis=-1), atol=1e-6)
    np.testing.assert_array_equal(slogps, 0.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature must be a finite number > 0"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=-1), "top_k must be an int >= 0"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p must be in \\(0, 1\\]"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_args_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        filter_logits(jnp.zeros((2, 5)), **kwargs)


def test_sampling_needs_a_key_and_2d_logits():
    with pytest.raises(ValueError, match="key: a PRNG key is required"):
        sample_tokens(None, jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="logits_BxV must be \\[B, V\\]"):
        filter_logits(jnp.zeros((2, 3, 5)), top_k=2)


def test_kth_largest_equals_top_k_without_sorting():
    """The sort-free threshold of top-k-only filtering is exactly lax.top_k's k-th value: random rows,
    ties at the boundary, +-0, +-inf, subnormals, negative-only rows, k = 1 and k = V."""
    from rlhf_jax.rollout.sampling import kth_largest

    tiny = np.finfo(np.float32).tiny / 4  # subnormal
    rows = np.stack([
        np.random.default_rng(0).normal(size=64).astype(np.float32) * 30,
        np.tile(np.array([1.0, 1.0, 1.0, -np.inf, 0.0, -0.0, -2.0, 5.0], np.float32), 8),
        np.tile(np.array([np.inf, -np.inf, tiny, -tiny, 3e38, -3e38, 1e-30, -1e-30], np.float32), 8),
        -np.abs(np.random.default_rng(1).normal(size=64)).astype(np.float32) - 1,
    ])
    fn = jax.jit(kth_largest, static_argnums=1)
    for k in (1, 2, 3, 7, 8, 9, 33, 63, 64):
        expected = jax.lax.top_k(jnp.asarray(rows), k)[0][:, -1]
        got = fn(jnp.asarray(rows), k)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    # the filter keeps exactly the tokens at or above that value (ties at the boundary included)
    keep = kept(rows, top_k=9)
    assert keep[0].sum() == 9 and keep[1].sum() == 8 + 24  # the eight 5.0s and every 1.0 tied with the 9th
