"""Dry runs compile full steps from abstract shapes and report per-device memory that adds up."""

import math

import jax
import numpy as np
import pytest

from experiments import dry_run
from rlhf_jax.config import apply_overrides
from rlhf_jax.models import LlamaForCausalLM, preset
from rlhf_jax.sharding import MeshConfig, make_mesh
from rlhf_jax.training import dry_run as dr


def test_parameter_bytes_per_device_follow_the_shardings():
    cfg = preset("tiny")
    mesh = make_mesh(MeshConfig(1, 8, 1))
    _, params = dr.abstract_params(LlamaForCausalLM, cfg, mesh)
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing allocated
    total = sum(math.prod(x.shape) * 4 for x in leaves)
    replicated = sum(math.prod(x.shape) * 4 for x in leaves if x.sharding.spec == jax.P(*([None] * x.ndim)))
    assert dr.per_device_bytes(params) == replicated + (total - replicated) // 8


def test_frozen_bf16_weights_compile_without_the_cpu_upcast_copies():
    """The CPU backend upcasts bf16 matmul operands and hoists the converts of read-only weights out of
    loops (float32 copies a GPU/TPU compile does not make); frozen-weight programs are compiled over a
    float32 view of bf16 weights, so their temporaries are what a native-bf16 backend would hold."""
    from rlhf_jax.rollout.jax_sampler import SAMPLING_RULES

    mesh = make_mesh(MeshConfig(1, 8, 1))
    cfg = preset("tiny", vocab_size=1024, hidden_size=256, intermediate_size=512, num_layers=4, dtype="bfloat16")
    graphdef, params = dr.abstract_params(LlamaForCausalLM, cfg, mesh, SAMPLING_RULES)
    bf16 = dr.abstract_like(params, "bfloat16")
    view = dr.frozen_view(bf16)
    assert {x.dtype for x in jax.tree.leaves(view)} == {np.dtype("float32")}
    assert [x.sharding for x in jax.tree.leaves(view)] == [x.sharding for x in jax.tree.leaves(bf16)]
    shape = dict(batch=16, prompt_len=16, new_tokens=16)
    f32_mem = dr.compile_generate(graphdef, params, mesh, **shape)
    bf16_mem = dr.compile_generate(graphdef, bf16, mesh, **shape)
    assert bf16_mem["temporaries"] == f32_mem["temporaries"] < dr.per_device_bytes(bf16)


def _run(**fields):
    return dry_run.main(apply_overrides(dry_run.get_config(), [(k, str(v)) for k, v in fields.items()]))


def _resident_equals_parts(out):
    assert out["resident"] == sum(sum(parts.values()) for parts in out["models"].values())
    extra = max(m["temporaries"] + m["outputs"] - m["aliased"] - out["away"].get(name, 0)
                for name, m in out["programs"].items())
    assert out["peak"] == out["resident"] + extra and out["fits"]


@pytest.mark.parametrize("run", ["sft", "reward", "dpo"])
def test_dry_run_compiles_each_step_and_reports(run):
    out = _run(run=run, model="tiny", batch_size=16, micro_batches=2, seq_len=32)
    trained = out["models"]["policy" if run == "dpo" else "model"]
    assert trained["optimizer"] == pytest.approx(2 * trained["params"], rel=0.01)  # Adam: mu and nu
    (step,) = out["programs"].values()
    assert step["temporaries"] > 0 and step["arguments"] >= trained["params"] + trained["optimizer"]
    if run == "dpo":  # experiments.dpo keeps its reference as a copy of the policy: same bytes
        assert out["models"]["reference (frozen copy, float32)"]["params"] == trained["params"]
    _resident_equals_parts(out)


def test_dpo_dry_run_counts_a_bfloat16_reference_at_half():
    out = _run(run="dpo", model="tiny", batch_size=16, micro_batches=2, seq_len=32, reference_dtype="bfloat16")
    assert 2 * out["models"]["reference (frozen copy, bfloat16)"]["params"] == out["models"]["policy"]["params"]
    _resident_equals_parts(out)


def _total_bytes(model_cls, cfg):
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(dr.abstract_params(model_cls, cfg, make_mesh(MeshConfig(1, 8, 1)))[1]))


def test_ppo_dry_run_builds_every_model_and_compiles_every_program():
    # PPO-Lagrangian with a frozen bf16 reference: every model and program kind of a PPO iteration
    B, P, N = 16, 8, 8
    out = _run(run="ppo", model="tiny", reward_model="tiny", cost_model="tiny", ema_reference="false", batch_size=B, mini_batches=2,
               micro_batches=1, offload_optimizer="true", prompt_len=P, new_tokens=N, remat="none", dtype="float32",
               **{"mesh.data": 2, "mesh.fsdp": 4})
    models, programs = out["models"], out["programs"]
    assert list(models) == ["actor", "critic", "reference (frozen)", "reward model", "cost model", "cost critic",
                            "sampler copy of the policy"]
    assert set(programs) == {f"generate ({B} rows, {P}+{N} tokens)", "reward scores (chunked)", "cost scores (chunked)",
                             "actor log-probs", "reference log-probs", "critic values", "cost critic values",
                             "actor step", "critic step", "cost critic step"}
    actor, critic = models["actor"], models["critic"]
    for trained in (actor, critic, models["cost critic"]):
        assert trained["optimizer"] == pytest.approx(2 * trained["params"], rel=0.01)
    # fp32 trained weights, bf16 frozen copies of the same shapes: exactly half the bytes
    assert 2 * models["reference (frozen)"]["params"] == actor["params"]
    assert 2 * models["reward model"]["params"] == critic["params"] == 2 * models["cost model"]["params"]
    # params sharded over fsdp=4 (norms replicated): total / 4 within the replicated vectors
    total = _total_bytes(LlamaForCausalLM, preset("tiny"))
    assert total / 4 <= actor["params"] < total / 4 + 4096
    # the sampler's layout drops fsdp: with tensor=1 every device holds the whole actor
    assert models["sampler copy of the policy"]["params"] == total
    # the generate program holds the KV cache of its 16 / (2*4) rows (the params it reads are the
    # sampler's resident copy, not a transient one)
    cfg = preset("tiny", dtype="float32")
    kv = 2 * cfg.num_layers * (B // 8) * (P + N) * cfg.num_kv_heads * cfg.resolved_head_dim * 4
    gen = programs[f"generate ({B} rows, {P}+{N} tokens)"]
    assert kv <= gen["temporaries"] < kv + total
    assert programs["actor step"]["aliased"] > 0  # the donated train state is reused
    _resident_equals_parts(out)
    # ppo.offload_optimizer: every optimizer state is off the device while rolling out, not while stepping
    parked = actor["optimizer"] + critic["optimizer"] + models["cost critic"]["optimizer"]
    assert out["away"] == {name: parked for name in programs if not name.endswith("step")}


def test_offload_optimizer_is_a_ppo_option():
    with pytest.raises(ValueError, match="offload_optimizer=true is a PPO option"):
        _run(run="dpo", model="tiny", batch_size=16, micro_batches=2, seq_len=32, offload_optimizer="true")


def test_iterative_dpo_dry_run_reports_the_sampler_and_the_labeler():
    out = _run(run="iterative_dpo", model="tiny", reward_model="tiny", batch_size=16, micro_batches=2, seq_len=32, sample_batch=16,
               prompt_len=16, new_tokens=16, remat="none")
    assert list(out["models"]) == ["policy", "sampler copy of the policy", "labeler reward model"]
    assert set(out["programs"]) == {"dpo step (precomputed reference)", "reference log-probs (round start)",
                                    "generate (16 rows, 16+16 tokens)", "labeler scores"}
    cfg = preset("tiny", dtype="bfloat16")
    kv = 2 * cfg.num_layers * 2 * 32 * cfg.num_kv_heads * cfg.resolved_head_dim * 2  # 2 rows per device, bf16
    assert dr.kv_cache_bytes(cfg, batch=16, length=32, mesh=make_mesh(MeshConfig(1, 8, 1))) == kv
    assert out["programs"]["generate (16 rows, 16+16 tokens)"]["temporaries"] >= kv
    _resident_equals_parts(out)


def test_a_mesh_that_does_not_divide_the_micro_batch_is_rejected():
    cfg = apply_overrides(dry_run.get_config(), [("model", "tiny"), ("batch_size", "16"),
                                                 ("micro_batches", "4")])
    with pytest.raises(ValueError, match="batch size 4 is not divisible by data\\*fsdp"):
        dry_run.main(cfg)


def test_adam_moments_are_created_in_the_parameters_shardings():
    from rlhf_jax.models import create_model
    from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model

    mesh = make_mesh(MeshConfig(1, 4, 2))
    _, params = split_model(create_model(LlamaForCausalLM, preset("tiny"), mesh=mesh))
    state = init_train_state(params, make_optimizer(OptimConfig()))
    adam = state.opt_state[1][0]  # (clip, adamw) chain; adamw's ScaleByAdamState
    for moments in (adam.mu, adam.nu):
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(moments)):
            assert m.sharding == p.sharding
    assert adam.count.sharding.mesh == mesh
    assert dr.per_device_bytes(state.opt_state) == pytest.approx(2 * dr.per_device_bytes(params), rel=0.01)

