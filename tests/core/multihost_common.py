"""Shared by the multi-host test and its worker processes."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def global_batch(B=8, T=12, vocab=97):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, vocab, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[1::2, :4] = 0
    return ids, mask


@nnx.jit
def loss_and_grad_norm(model, ids, mask):
    def loss_fn(model):
        logits = model(ids[:, :-1], mask[:, :-1]).astype(jnp.float32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], axis=-1)[..., 0]
        m = mask[:, 1:].astype(jnp.float32)
        return -(logp * m).sum() / m.sum()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    return loss, jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(grads)))


def wait_for_all(procs, timeout: float) -> list[str]:
    """The last 3000 characters of each process's output once all have exited; if one is still running
    after `timeout` seconds, every process is killed and the assertion shows what each had printed."""
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            logs = [q.communicate()[0].decode()[-3000:] for q in procs]
            raise AssertionError(f"processes still running after {timeout} s; their output:\n"
                                 + "\n---\n".join(logs)) from None
        outputs.append(out.decode()[-3000:])
    return outputs
