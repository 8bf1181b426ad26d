"""Best-checkpoint selection: max and min, exports that load as the best step's params, a record
that survives a resume through the checkpoint meta, and a repaired interrupted swap."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.models import LlamaForCausalLM, create_model, load_pretrained, preset
from rlhf_jax.training.selection import BestCheckpoint, SelectionConfig, read_record
from rlhf_jax.training.state import split_model


@pytest.fixture(scope="module")
def models():
    """model(step)() -> a tiny model whose params are the base params + 0.01 * step, and a count
    of the calls (the exporter must build a model only when it saves one)."""
    graphdef, base = split_model(create_model(LlamaForCausalLM, preset("tiny", vocab_size=64), seed=0))
    calls = []

    def model(step):
        def build():
            calls.append(step)
            return nnx.merge(graphdef, jax.tree.map(lambda p: p + 0.01 * step, base))
        return build

    return model, calls, base


def _assert_exported(path, step, base):
    loaded = jax.tree.leaves(split_model(load_pretrained(path))[1])
    for got, b in zip(loaded, jax.tree.leaves(base)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(b) + 0.01 * step, rtol=0, atol=1e-6)


def test_mode_max_keeps_the_highest_and_exports_its_params(models, tmp_path):
    model, calls, base = models
    calls.clear()
    sel = BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward", mode="max"))
    values = [0.1, 0.5, 0.3, 0.5, float("nan"), 0.2]  # a tie keeps the earlier step; NaN never wins
    exported = [sel.update(s, {"reward": v, "loss": 1.0}, model(s)) for s, v in enumerate(values)]
    assert exported == [True, True, False, False, False, False]
    assert calls == [0, 1]
    assert sel.best == (1, 0.5)
    assert sel.state_dict()["history"] == [[0, 0.1], [1, 0.5], [2, 0.3], [3, 0.5], [4, None], [5, 0.2]]
    assert read_record(sel.path) == {"metric": "reward", "mode": "max", "step": 1, "value": 0.5}
    _assert_exported(sel.path, 1, base)
    assert sorted(os.listdir(tmp_path)) == ["best"]  # no temporary folder left behind


def test_mode_min_keeps_the_lowest(models, tmp_path):
    model, calls, base = models
    calls.clear()
    sel = BestCheckpoint(str(tmp_path), SelectionConfig(metric="loss", mode="min"))
    for step, value in zip((10, 20, 30, 40, 50), (3.0, 2.0, 2.5, 1.0, 1.0)):
        sel.update(step, {"loss": value}, model(step))
    assert calls == [10, 20, 40] and sel.best == (40, 1.0)
    assert read_record(sel.path)["step"] == 40
    _assert_exported(sel.path, 40, base)


def test_record_survives_a_resume_through_the_checkpoint_meta(models, tmp_path):
    model, calls, _ = models
    cfg = SelectionConfig(metric="pass@5", mode="max")
    sel = BestCheckpoint(str(tmp_path), cfg)
    for step, value in ((2, 0.2), (4, 0.4), (6, 0.3)):
        sel.update(step, {"pass@5": value}, model(step))
    with Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        ckpt.save(6, {"x": jnp.zeros(2)}, meta={"selection": sel.state_dict()})
    with Checkpointer(str(tmp_path / "checkpoints")) as ckpt:
        _, meta = ckpt.restore(target={"x": jnp.zeros(2)})

    resumed = BestCheckpoint(str(tmp_path), cfg)
    resumed.restore(meta["selection"])
    assert resumed.best == (4, 0.4) and resumed.history == sel.history
    calls.clear()
    assert not resumed.update(8, {"pass@5": 0.35}, model(8))  # below the restored best: kept
    assert read_record(resumed.path)["step"] == 4 and calls == []
    assert resumed.update(10, {"pass@5": 0.45}, model(10))
    assert read_record(resumed.path) == {"metric": "pass@5", "mode": "max", "step": 10, "value": 0.45}
    with pytest.raises(ValueError, match="selection steps must increase: step 9 after 10"):
        resumed.update(9, {"pass@5": 0.9}, model(9))

    other = BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward", mode="max"))
    with pytest.raises(ValueError, match=r"selection.metric='reward', but the run being resumed "
                                         r"selected by metric 'pass@5'"):
        other.restore(meta["selection"])


def test_an_interrupted_swap_is_repaired(models, tmp_path):
    model, _, base = models
    sel = BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward"))
    sel.update(3, {"reward": 1.0}, model(3))
    # A crash after `best` was renamed away and while the new model was half-written:
    os.rename(tmp_path / "best", tmp_path / "best.old")
    os.makedirs(tmp_path / "best.tmp")
    (tmp_path / "best.tmp" / "model.safetensors").write_bytes(b"partial")
    BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward"))
    assert sorted(os.listdir(tmp_path)) == ["best"]
    assert read_record(str(tmp_path / "best"))["step"] == 3
    _assert_exported(str(tmp_path / "best"), 3, base)


def test_bad_settings_name_the_key(models, tmp_path):
    model, _, _ = models
    with pytest.raises(ValueError, match="selection.metric is not set"):
        BestCheckpoint(str(tmp_path), SelectionConfig())
    with pytest.raises(ValueError, match="selection.mode='up'; choose 'max' or 'min'"):
        BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward", mode="up"))
    sel = BestCheckpoint(str(tmp_path), SelectionConfig(metric="reward"))
    with pytest.raises(ValueError, match=r"selection.metric='reward' is not among the validation "
                                         r"metrics \['loss', 'margin'\]"):
        sel.update(1, {"loss": 0.1, "margin": 0.2}, model(1))
