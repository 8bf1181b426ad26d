"""Typed config overrides from the command line."""

import dataclasses
from typing import Literal

import pytest

from rlhf_jax.config import ConfigError, apply_overrides, load_config, parse_argv, to_dict
from rlhf_jax.models import LlamaConfig
from rlhf_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class Train:
    steps: int = 10
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    eval_every: int | None = None
    betas: tuple[float, float] = (0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class Exp:
    name: str = "demo"
    train: Train = Train()
    mesh: MeshConfig = MeshConfig()
    model: LlamaConfig = LlamaConfig()
    use_ema: bool = False


def get_config(preset=None):
    if preset not in (None, "small"):
        raise ValueError(f"unknown preset {preset}")
    cfg = Exp()
    return cfg if preset is None else dataclasses.replace(cfg, name="small")


def test_overrides_are_parsed_by_type():
    cfg = load_config(get_config, [
        "--config=small", "--config.train.steps=1e3", "--config.train.lr=3e-5",
        "--config.train.schedule=cosine", "--config.train.eval_every=none",
        "--config.train.betas=0.8,0.99", "--config.use_ema=true", "--config.mesh.tensor=2",
        "--config.model.rope_theta=500000", "--config.model.remat=dots"])
    assert cfg.name == "small"
    assert cfg.train == Train(steps=1000, lr=3e-5, schedule="cosine", eval_every=None, betas=(0.8, 0.99))
    assert cfg.use_ema is True and cfg.mesh.tensor == 2
    assert cfg.model.rope_theta == 500000.0 and cfg.model.remat == "dots"
    assert Exp().train.steps == 10  # frozen: defaults untouched
    assert to_dict(cfg)["train"]["betas"] == [0.8, 0.99]


def test_optional_int_accepts_a_number():
    assert apply_overrides(Exp(), [("train.eval_every", "5")]).train.eval_every == 5


@pytest.mark.parametrize("flag, message", [
    ("--config.train.stepz=3", r"unknown config key 'train.stepz'; valid keys under 'train': "
                               r"\['betas', 'eval_every', 'lr', 'schedule', 'steps'\]"),
    ("--config.nope=3", r"unknown config key 'nope'; valid keys here: \['mesh', 'model', 'name', 'train', 'use_ema'\]"),
    ("--config.train.steps=ten", r"--config.train.steps='ten': expected int"),
    ("--config.train.steps=1.5", r"expected int"),
    ("--config.train.schedule=linear", r"must be one of \['constant', 'cosine'\]"),
    ("--config.use_ema=maybe", r"expected a boolean"),
    ("--config.train=3", r"is a group"),
    ("--config.train.betas=0.9", r"expected 2 comma-separated values"),
    ("--steps=3", r"unrecognized argument '--steps=3'"),
])
def test_bad_flags_name_the_key(flag, message):
    with pytest.raises(ConfigError, match=message):
        load_config(get_config, [flag])


def test_parse_argv_splits_preset_and_overrides():
    assert parse_argv(["--config=x", "--config.a.b=1=2"]) == ("x", [("a.b", "1=2")])
