"""The stages of the miniature paper: each one an experiment module's `main` with a tiny config.

Every stage runs the same code path a paper-scale run takes (`experiments.sft`, `.reward_model`,
`.dpo`, `.iterative_dpo`, `.ppo`, `.ranking`): Hugging Face folders in and out, Orbax checkpoints,
TensorBoard and JSONL metrics under the stage's workdir. Only the sizes differ (`Scale`).

A stage whose workdir already holds its output (`hf_model`, or `done.json` for stages that return
numbers) is not run again, so an interrupted miniature resumes where it stopped; the experiment
modules themselves resume mid-stage from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from rlhf_jax.sharding import MeshConfig
from rlhf_jax.training.loop import LoopConfig
from rlhf_jax.training.sources import ModelSource
from rlhf_jax.training.state import OptimConfig

MESH = MeshConfig(data=-1, fsdp=1, tensor=1)  # data parallel over every device (one on a laptop)
TEMPLATE = "safe_rlhf"  # one prompt template for every stage of both tasks
KEY_FILE = "stage_settings.json"


def _key(settings: dict) -> dict:
    """`settings` as plain JSON (dataclasses and other objects by their repr)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


def check_sizes(scale, key: str, *, zero_ok: tuple[str, ...] = ()) -> None:
    """Every size of a scale dataclass positive (ints >= 1, or >= 0 when named in `zero_ok`; floats
    > 0; tuples of ints non-empty and >= 1; nested dataclasses likewise); errors name `key.field`."""
    for field in dataclasses.fields(scale):
        name, value = f"{key}.{field.name}", getattr(scale, field.name)
        if isinstance(value, bool):
            continue
        if dataclasses.is_dataclass(value):
            check_sizes(value, name)
        elif isinstance(value, int):
            low = 0 if field.name in zero_ok else 1
            if value < low:
                raise ValueError(f"{name}={value} must be >= {low}")
        elif isinstance(value, float):
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0")
        elif isinstance(value, tuple):
            if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"{name}={value} must be a non-empty tuple of ints >= 1")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The tiny LLaMA every stage starts from (vocabulary: the bundle tokenizer's)."""

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    tie_word_embeddings: bool = True  # the head reads the embedding: copying a token from the prompt is easier


def init_model(out_dir: str, tokenizer_dir: str, shape: ModelShape, *, seed: int) -> str:
    """A random LLaMA of `shape` saved as a Hugging Face folder (skipped if it exists)."""
    if os.path.exists(os.path.join(out_dir, "config.json")):
        return out_dir
    from rlhf_jax.models import LlamaForCausalLM, create_model, load_tokenizer, preset, save_pretrained
    from rlhf_jax.sharding import make_mesh

    tokenizer = load_tokenizer(tokenizer_dir)
    cfg = preset("tiny", vocab_size=len(tokenizer), **dataclasses.asdict(shape))
    model = create_model(LlamaForCausalLM, cfg, mesh=make_mesh(MESH), seed=seed)
    save_pretrained(model, out_dir, tokenizer=tokenizer)
    return out_dir


def loop(steps: int, *, progress: bool = True) -> LoopConfig:
    """One checkpoint at the end (each stage is short), a progress bar, metrics every step."""
    return LoopConfig(steps=steps, checkpoint_every=max(steps, 1), keep_checkpoints=1, progress=progress)


def model(path: str) -> ModelSource:
    return ModelSource(hf_path=path)


def adam(lr: float, steps: int, warmup: int = 0, cosine: bool = False) -> OptimConfig:
    return OptimConfig(lr=lr, schedule="cosine" if cosine else "constant", warmup_steps=warmup,
                       total_steps=max(steps, 1), max_grad_norm=1.0)


class Stages:
    """Runs named stages under `root`, timing each and skipping those already done."""

    def __init__(self, root: str, *, log: Callable[[str], None] = print):
        self.root, self.log = root, log
        self.seconds: dict[str, float] = {}  # stages run by this object
        self.all_seconds: dict[str, float] = {}  # those and the stages done before (their stored times)

    def _timed(self, name: str, start: float) -> None:
        self.seconds[name] = self.all_seconds[name] = time.time() - start
        os.makedirs(self.dir(name), exist_ok=True)
        with open(os.path.join(self.dir(name), "seconds.json"), "w") as f:
            json.dump(self.seconds[name], f)

    def _cached(self, name: str) -> None:
        path = os.path.join(self.dir(name), "seconds.json")
        if os.path.exists(path):
            with open(path) as f:
                self.all_seconds[name] = float(json.load(f))

    def dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _check_key(self, name: str, key: dict) -> None:
        """A stage done before with other settings is an error naming them, never silently reused."""
        path = os.path.join(self.dir(name), KEY_FILE)
        if not os.path.exists(path):
            return
        with open(path) as f:
            stored = json.load(f)
        if stored != key:
            diff = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
            raise ValueError(f"{self.dir(name)}: stage {name!r} was run with other settings ("
                             + ", ".join(f"{k}: {stored.get(k)!r} then, {key.get(k)!r} now" for k in diff)
                             + "); use another workdir or delete that folder to run it again")

    def _write_key(self, name: str, key: dict) -> None:
        os.makedirs(self.dir(name), exist_ok=True)
        with open(os.path.join(self.dir(name), KEY_FILE), "w") as f:
            json.dump(key, f, indent=1, sort_keys=True)

    def model_stage(self, name: str, fn: Callable[..., Any], /, **kwargs) -> str:
        """Runs fn(workdir, **kwargs) unless workdir/hf_model exists; returns workdir/hf_model.

        The settings (kwargs but `progress`) are stored with the stage; a rerun with other settings is
        a ValueError naming them."""
        workdir = self.dir(name)
        out = os.path.join(workdir, "hf_model")
        key = _key({k: v for k, v in kwargs.items() if k != "progress"})
        self._check_key(name, key)
        if os.path.exists(os.path.join(out, "config.json")):
            self.log(f"[{name}] done before: {out}")
            self._cached(name)
            return out
        self.log(f"[{name}] ...")
        start = time.time()
        result = fn(workdir, **kwargs)
        self._write_key(name, key)
        self._timed(name, start)
        if isinstance(result, dict) and result.get("eval"):  # the stage's final held-out evaluation
            with open(os.path.join(workdir, "final_eval.json"), "w") as f:
                json.dump({k: float(v) for k, v in result["eval"].items()}, f, indent=1, sort_keys=True)
        self.log(f"[{name}] {self.seconds[name]:.0f} s")
        return out

    def final_eval(self, name: str) -> dict:
        """The held-out evaluation a model stage's experiment returned (empty if it had none)."""
        path = os.path.join(self.dir(name), "final_eval.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def value_stage(self, name: str, fn: Callable[[], dict], *, key: dict | None = None) -> dict:
        """Runs fn() unless workdir/done.json exists; returns (and stores) its JSON-able result.
        `key`: the settings fn depends on, checked like `model_stage`'s."""
        path = os.path.join(self.dir(name), "done.json")
        key = _key(key or {})
        self._check_key(name, key)
        if os.path.exists(path):
            self._cached(name)
            with open(path) as f:
                return json.load(f)
        start = time.time()
        result = fn()
        self._write_key(name, key)
        self._timed(name, start)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
        return result


# ---------------------------------------------------------------------------------------- stages
def sft(workdir: str, *, init: str, tokenizer: str, data_format: str, data_path: str, steps: int,
        batch_size: int, lr: float, max_length: int, max_prompt_length: int, seed: int, progress: bool = True):
    from experiments import sft as sft_exp

    cfg = sft_exp.SFTConfig(
        model=model(init), tokenizer_path=tokenizer,
        data=sft_exp.SFTData(format=data_format, path=data_path, template=TEMPLATE, max_length=max_length,
                             max_prompt_length=max_prompt_length),
        mesh=MESH, optim=adam(lr, steps, warmup=min(20, steps // 10), cosine=True),
        loop=loop(steps, progress=progress), batch_size=batch_size, seed=seed, workdir=workdir)
    return sft_exp.main(cfg)


def reward_model(workdir: str, *, init: str, tokenizer: str, data_format: str, data_path: str, eval_path: str,
                 kind: str, steps: int, batch_size: int, lr: float, max_length: int, max_prompt_length: int,
                 seed: int, progress: bool = True):
    from experiments import reward_model as rm_exp

    cfg = rm_exp.RewardModelConfig(
        kind=kind, model=model(init), tokenizer_path=tokenizer,
        data=rm_exp.ScoreData(format=data_format, path=data_path, eval_path=eval_path, template=TEMPLATE,
                              max_length=max_length, max_prompt_length=max_prompt_length),
        mesh=MESH, optim=adam(lr, steps, warmup=min(10, steps // 10), cosine=True),
        loop=loop(steps, progress=progress), batch_size=batch_size, seed=seed, workdir=workdir)
    return rm_exp.main(cfg)


def dpo(workdir: str, *, init: str, tokenizer: str, data_format: str, data_path: str, steps: int,
        batch_size: int, lr: float, beta: float, max_length: int, max_prompt_length: int, seed: int,
        progress: bool = True):
    from experiments import dpo as dpo_exp
    from rlhf_jax.training.preference_steps import DPOLoss

    cfg = dpo_exp.DPOConfig(
        model=model(init), tokenizer_path=tokenizer,
        data=dpo_exp.DPOData(format=data_format, path=data_path, template=TEMPLATE, max_length=max_length,
                             max_prompt_length=max_prompt_length),
        dpo=DPOLoss(beta=beta), mesh=MESH, optim=adam(lr, steps),
        loop=loop(steps, progress=progress), batch_size=batch_size, seed=seed, workdir=workdir)
    return dpo_exp.main(cfg)


def iterative_dpo(workdir: str, *, init: str, tokenizer: str, prompt_format: str, prompt_path: str,
                  labeler: dict, pair_rule: str, rounds: int, steps_per_round: int, prompts_per_round: int,
                  samples_per_prompt: int, max_new_tokens: int, batch_size: int, lr: float, beta: float,
                  max_length: int, max_prompt_length: int, seed: int, progress: bool = True):
    from experiments import iterative_dpo as it_exp
    from rlhf_jax.training.iterative_labels import LabelerConfig
    from rlhf_jax.training.iterative_rounds import SamplingConfig
    from rlhf_jax.training.preference_steps import DPOLoss

    k = samples_per_prompt
    cfg = it_exp.IterativeDPOConfig(
        model=model(init), tokenizer_path=tokenizer,
        prompts=it_exp.PromptData(format=prompt_format, path=prompt_path, template=TEMPLATE,
                                  max_prompt_length=max_prompt_length, max_length=max_length),
        sampling=SamplingConfig(samples_per_prompt=k, prompts_per_round=prompts_per_round,
                                max_new_tokens=max_new_tokens, temperature=1.0, top_k=0,
                                batch_size=k * max(1, 32 // k)),
        labeler=LabelerConfig(**labeler), pair_rule=pair_rule, dpo=DPOLoss(beta=beta), rounds=rounds,
        steps_per_round=steps_per_round, batch_size=batch_size, mesh=MESH,
        optim=adam(lr, rounds * steps_per_round), loop=loop(0, progress=progress), seed=seed, workdir=workdir,
        export_rounds=True)
    return it_exp.main(cfg)


def ppo(workdir: str, *, init: str, tokenizer: str, prompt_format: str, prompt_path: str, reward: dict,
        iterations: int, small_batch: int, large_batch: int, mini_batches: int, advantage_norm: bool,
        large: bool, ema: bool, ema_eta: float, kl_coef: float, lr: float, critic_lr: float,
        max_new_tokens: int, max_prompt_length: int, seed: int, epochs: int = 1, critic_init: str | None = None,
        progress: bool = True):
    from experiments import ppo as ppo_exp
    from rlhf_jax.training import ppo_config as pc

    cfg = pc.PPOConfig(
        actor=model(init), critic=None if critic_init is None else model(critic_init), tokenizer_path=tokenizer,
        data=pc.PromptData(format=prompt_format, path=prompt_path, template=TEMPLATE,
                           max_prompt_length=max_prompt_length),
        generation=pc.GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_k=200),
        reward=pc.RewardConfig(**reward),
        ppo=pc.PPOSettings(advantage_norm=advantage_norm, large_batch=large, ema_reference=ema,
                           large_batch_size=large_batch, small_batch_size=small_batch, mini_batches=mini_batches,
                           ema_eta=ema_eta, kl_coef=kl_coef, epochs=epochs),
        actor_optim=adam(lr, iterations), critic_optim=adam(critic_lr, iterations), mesh=MESH,
        loop=loop(iterations, progress=progress), seed=seed, workdir=workdir)
    return ppo_exp.main(cfg)


def ranking(workdir: str, *, algorithm: str, init: str, tokenizer: str, data_format: str, data_path: str,
            steps: int, batch_size: int, lr: float, max_length: int, max_prompt_length: int, seed: int,
            progress: bool = True):
    from experiments import ranking as rk_exp

    cfg = rk_exp.RankingConfig(
        algorithm=algorithm, model=model(init), tokenizer_path=tokenizer,
        data=rk_exp.RankingData(format=data_format, path=data_path, template=TEMPLATE, max_length=max_length,
                                max_prompt_length=max_prompt_length),
        eval=rk_exp.RankingEval(path=""), selection=rk_exp.SelectionConfig(metric=None),
        mesh=MESH, optim=adam(lr, steps), loop=dataclasses.replace(loop(steps, progress=progress),
                                                                         eval_every=None),
        batch_size=batch_size, seed=seed, workdir=workdir)
    return rk_exp.main(cfg)
