"""Paper presets and hardware layouts: every preset builds a valid config on every layout, the
command line selects them, and the dry run reads its shapes from them."""

import importlib
import sys

import pytest
from jax.sharding import AbstractMesh

from experiments import dry_run
from rlhf_jax.config import ConfigError, apply_overrides, experiment_name, load_config
from rlhf_jax.models import preset as arch
from rlhf_jax.training import paper_configs as pc


def _validate(experiment: str, module, cfg) -> None:
    mesh = AbstractMesh((cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor), ("data", "fsdp", "tensor"))
    if experiment == "experiments.ppo":
        from rlhf_jax.training.ppo_rewards import REWARD_SOURCES
        from rlhf_jax.training.ppo_rollout import PROMPT_SOURCES
        module.validate(cfg, mesh, prompt_sources=PROMPT_SOURCES, reward_sources=REWARD_SOURCES)
    else:
        module.validate(cfg, mesh)


@pytest.mark.parametrize("name", sorted(pc.PRESETS))
def test_every_preset_is_a_valid_config_on_every_layout(name, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text("")  # iterative_dpo's validate checks that its prompt file exists
    preset = pc.PRESETS[name]
    module = importlib.import_module(preset.experiment)
    assert preset.layout in pc.LAYOUTS
    for layout_name, layout in pc.LAYOUTS.items():
        cfg = load_config(module.get_config, [f"--config={name}@{layout_name}"])
        assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == (layout.mesh.data, layout.mesh.fsdp,
                                                                     layout.mesh.tensor)
        assert cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor == layout.devices
        if preset.experiment == "experiments.iterative_dpo":
            cfg = apply_overrides(cfg, [("prompts.path", str(data))])
        _validate(preset.experiment, module, cfg)  # batch / micro-batch / mesh divisibility, names
        for key, src in pc.models_in_use(preset.experiment, cfg).items():
            assert src.hf_path == "" and src.remat == layout.remat and src.dtype == "bfloat16", key
            model = arch(src.preset)  # the mesh divides the heads and the sharded dimensions
            assert model.num_heads % layout.mesh.tensor == 0 and model.num_kv_heads % layout.mesh.tensor == 0
            assert model.hidden_size % layout.mesh.fsdp == 0 and model.intermediate_size % layout.mesh.tensor == 0
        micro = cfg.ppo.micro_batches if preset.experiment == "experiments.ppo" else cfg.micro_batches
        rows = (cfg.ppo.rollout_batch_size // cfg.ppo.mini_batches if preset.experiment == "experiments.ppo"
                else cfg.batch_size * (2 if preset.experiment in pc.PAIRED else 1))
        per_device = rows // micro // (layout.mesh.data * layout.mesh.fsdp)
        assert 1 <= per_device <= max(layout.rows_per_device, 2)


def test_presets_carry_the_papers_hyperparameters():
    from experiments import dpo, iterative_dpo, ppo

    p = load_config(ppo.get_config, ["--config=llama2-7b-saferlhf-ppo"])
    assert (p.actor_optim.lr, p.critic_optim.lr, p.ppo.rollout_batch_size, p.ppo.mini_batches) == (1e-5, 5e-6, 512, 4)
    assert (p.generation.temperature, p.generation.top_k, p.generation.max_new_tokens) == (1.0, 200, 256)
    assert (p.ppo.gamma, p.ppo.lam, p.ppo.kl_coef, p.ppo.reward_clip) == (1.0, 1.0, 0.1, 20.0)
    assert p.ppo.advantage_norm and p.ppo.large_batch and p.ppo.ema_reference
    assert p.reward.model.param_dtype == "bfloat16" and p.critic.param_dtype == "float32"  # frozen RM in bf16
    code = load_config(ppo.get_config, ["--config=codellama-34b-apps-ppo"])
    assert code.generation.max_new_tokens == 1024 and code.reward.source == "apps_unit_tests"
    assert code.loop.steps == 157  # 16 epochs over 5,000 problems at 512 per iteration: ceil(156.25)
    assert code.actor.preset == "codellama-34b" and code.mesh.tensor == 8  # default layout h100x32
    cc = load_config(ppo.get_config, ["--config=codellama-34b-codecontests-ppo"])
    assert (cc.data.format, cc.reward.source, cc.data.max_prompt_length) == (
        "code_contests", "code_contests_unit_tests", 1024)
    assert cc.loop.steps == 417  # 16 epochs over 13,328 problems at 512 per iteration: ceil(416.5)
    d = load_config(dpo.get_config, ["--config=llama2-7b-saferlhf-dpo-no-dual"])
    assert (d.dpo.beta, d.optim.lr, d.data.format) == (0.1, 1e-6, "safe_rlhf_no_dual")
    it = load_config(iterative_dpo.get_config, ["--config=codellama-7b-apps-iterative-dpo@tpu-v4-32"])
    assert (it.sampling.samples_per_prompt, it.sampling.max_new_tokens, it.labeler.name) == (5, 1024, "unit_tests")
    # later flags override the preset
    p2 = load_config(ppo.get_config, ["--config=llama2-7b-saferlhf-ppo", "--config.ppo.kl_coef=0.05"])
    assert p2.ppo.kl_coef == 0.05 and p2.actor_optim.lr == 1e-5


def test_unknown_names_are_errors_that_list_the_choices():
    from experiments import ppo, sft

    with pytest.raises(ConfigError, match="paper presets of experiments.ppo: .*llama2-7b-saferlhf-ppo"):
        load_config(ppo.get_config, ["--config=llama2-7b-ppo"])
    with pytest.raises(ConfigError, match="layout 'h100x7' is unknown; choose from"):
        load_config(ppo.get_config, ["--config=llama2-7b-saferlhf-ppo@h100x7"])
    with pytest.raises(ConfigError, match="paper presets of experiments.sft"):
        load_config(sft.get_config, ["--config=llama2-7b-saferlhf-ppo"])  # a preset of another experiment


def test_the_experiment_is_found_under_python_dash_m(monkeypatch):
    from experiments import ppo

    main = type(sys)("__main__")
    main.__spec__ = ppo.__spec__  # what `python -m experiments.ppo` leaves on __main__

    def get_config(preset_name=None):
        return ppo.get_config(preset_name)
    get_config.__module__ = "__main__"
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert experiment_name(get_config) == "experiments.ppo"
    assert load_config(get_config, ["--config=llama2-7b-hh-ppo"]).data.format == "hh_rlhf"


def test_paths_left_empty_stop_the_run_naming_the_key():
    from experiments import sft

    cfg = load_config(sft.get_config, ["--config=llama2-7b-saferlhf-sft-alpaca", "--config.workdir=/nonexistent/x"])
    with pytest.raises(FileNotFoundError, match="tokenizer_path='' is not a tokenizer folder"):
        sft.main(cfg)


def test_dry_run_reads_models_and_shapes_from_a_preset():
    cfg = dry_run.from_preset(apply_overrides(dry_run.get_config(), [("preset", "llama2-7b-saferlhf-ppo-lagrangian"),
                                                                      ("layout", "tpu-v5p-64")]))
    assert (cfg.run, cfg.model, cfg.reward_model, cfg.critic_model, cfg.cost_model) == (
        "ppo", "llama2-7b", "llama2-7b", "llama2-7b", "llama2-7b")
    assert (cfg.batch_size, cfg.mini_batches, cfg.micro_batches, cfg.prompt_len, cfg.new_tokens) == (512, 4, 2, 256, 256)
    assert (cfg.devices, cfg.device_memory_gib, cfg.mesh.fsdp) == (32, 95.0, 32)
    code = dry_run.from_preset(apply_overrides(dry_run.get_config(), [("preset", "codellama-13b-apps-iterative-dpo")]))
    assert (code.run, code.reward_model, code.sample_batch, code.new_tokens, code.seq_len) == (
        "iterative_dpo", "", 160, 1024, 1536)
    with pytest.raises(ConfigError, match=r"\['batch_size'\] are set by preset"):
        dry_run.from_preset(apply_overrides(dry_run.get_config(), [("preset", "llama2-7b-hh-dpo"), ("batch_size", "8")]))


def test_a_tiny_preset_runs_through_the_dry_run(monkeypatch):
    monkeypatch.setitem(pc.LAYOUTS, "cpu8", pc.Layout(8, pc.MeshConfig(1, 4, 2), 1.0, remat="none", rows_per_device=2))
    tiny = {"model.hf_path": "", "model.preset": "tiny", "model.dtype": "bfloat16", "batch_size": 16,
            "data.max_length": 32}
    monkeypatch.setitem(pc.PRESETS, "tiny-dpo", pc.Preset("experiments.dpo", tiny, "cpu8", "a test preset"))
    out = dry_run.main(apply_overrides(dry_run.get_config(), [("preset", "tiny-dpo")]))
    # 16 pairs over data*fsdp = 4 shards at 2 rows (1 pair) per device: 4 micro-batches
    assert load_config(importlib.import_module("experiments.dpo").get_config,
                       ["--config=tiny-dpo"]).micro_batches == 4
    assert set(out["programs"]) == {"dpo step"} and out["fits"]
