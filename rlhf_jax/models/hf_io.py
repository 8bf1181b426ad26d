"""Hugging Face checkpoint interop: local safetensors folders <-> sharded Flax NNX models.

`load_pretrained(path)` reads `config.json` and `model.safetensors` (or the shards listed in
`model.safetensors.index.json`) straight into sharded parameters: each device's shard is read
from the memory-mapped file by `jax.make_array_from_callback`, so the model is never held whole on
one device nor twice in host memory, and on a multi-host mesh each process reads only its shards.

`save_pretrained(model, path)` writes a folder that transformers' PyTorch
`AutoModelForCausalLM.from_pretrained` (or `AutoModelForSequenceClassification` for score models)
loads. Only process 0 writes.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rlhf_jax.models.config import HF_SCORE_ARCHS, LlamaConfig
from rlhf_jax.models.create import model_shardings
from rlhf_jax.models.llama import LlamaForCausalLM, LlamaForScore
from rlhf_jax.sharding import LOGICAL_RULES, make_mesh

# Tensors some checkpoints carry that hold no parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _norm(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1:
        raise ValueError("strided shards are not supported")
    return start, stop


# Each rule: our parameter path -> (HF name template, converter). A converter gets a lazy HF tensor
# `view` (indexable like a numpy array, reads only what is indexed), the HF shape, and our index
# (slices into our unstacked shape), and returns our layout for exactly that index.
def _same(view, shape, idx):
    return np.asarray(view[tuple(idx)])


def _transpose(view, shape, idx):  # ours [in, out] = hf [out, in].T
    return np.asarray(view[idx[1], idx[0]]).T


def _heads_in(heads: int):  # ours [D, N, H] = hf [N*H, D].T.reshape
    def conv(view, shape, idx):
        d, n, h = idx
        hd = shape[0] // heads
        n0, n1 = _norm(n, heads)
        block = np.asarray(view[n0 * hd:n1 * hd, d]).T
        return block.reshape(block.shape[0], n1 - n0, hd)[:, :, h]
    return conv


def _heads_out(heads: int):  # ours [N, H, D] = hf [D, N*H].T.reshape
    def conv(view, shape, idx):
        n, h, d = idx
        hd = shape[1] // heads
        n0, n1 = _norm(n, heads)
        block = np.asarray(view[d, n0 * hd:n1 * hd]).T
        return block.reshape(n1 - n0, hd, block.shape[1])[:, h, :]
    return conv


def _score(view, shape, idx):  # ours [D] = hf [1, D][0]
    return np.asarray(view[0:1, idx[0]])[0]


def param_rules(cfg: LlamaConfig) -> dict[str, tuple[str, Callable, Callable]]:
    """Our path -> (HF name, HF->ours converter, ours->HF full-array function)."""
    N, K = cfg.num_heads, cfg.num_kv_heads
    ident = lambda a: a  # noqa: E731
    t = lambda a: a.T  # noqa: E731
    flat_in = lambda a: a.reshape(a.shape[0], -1).T  # [D, N, H] -> [N*H, D]  # noqa: E731
    flat_out = lambda a: a.reshape(-1, a.shape[-1]).T  # [N, H, D] -> [D, N*H]  # noqa: E731
    p = "model.layers.{i}."
    return {
        "model/embed": ("model.embed_tokens.weight", _same, ident),
        "model/norm": ("model.norm.weight", _same, ident),
        "lm_head": ("lm_head.weight", _transpose, t),
        "score": ("score.weight", _score, lambda a: a[None, :]),
        "model/layers/attn_norm": (p + "input_layernorm.weight", _same, ident),
        "model/layers/mlp_norm": (p + "post_attention_layernorm.weight", _same, ident),
        "model/layers/wq": (p + "self_attn.q_proj.weight", _heads_in(N), flat_in),
        "model/layers/wk": (p + "self_attn.k_proj.weight", _heads_in(K), flat_in),
        "model/layers/wv": (p + "self_attn.v_proj.weight", _heads_in(K), flat_in),
        "model/layers/wo": (p + "self_attn.o_proj.weight", _heads_out(N), flat_out),
        "model/layers/w_gate": (p + "mlp.gate_proj.weight", _transpose, t),
        "model/layers/w_up": (p + "mlp.up_proj.weight", _transpose, t),
        "model/layers/w_down": (p + "mlp.down_proj.weight", _transpose, t),
    }


def _path_str(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def _open_checkpoint(path: str, stack: ExitStack) -> dict[str, tuple[Any, str]]:
    """Tensor name -> (open safetensors handle, file name), for single or sharded checkpoints."""
    from safetensors import safe_open

    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index}: not a safetensors index (need a 'weight_map'): {e}") from None
        files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(
            f"{path}: no model.safetensors or model.safetensors.index.json (only safetensors "
            "checkpoints are supported; convert .bin files with transformers first)")
    tensors: dict[str, tuple[Any, str]] = {}
    for name in files:
        full = os.path.join(path, name)
        if not os.path.exists(full):
            raise FileNotFoundError(f"{index}: lists shard {name!r}, which is missing in {path}")
        handle = stack.enter_context(safe_open(full, framework="numpy"))
        for key in handle.keys():
            tensors[key] = (handle, name)
    return tensors


def read_hf_config(path: str) -> dict[str, Any]:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path}: no config.json (is this a Hugging Face model folder?)")
    with open(cfg_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from None


def load_pretrained(path: str, *, mesh: Mesh | None = None, dtype: str = "float32",
                    param_dtype: str | None = None, head: str | None = None, remat: str = "none",
                    attention: str = "xla", rules: Mapping[str, Any] = LOGICAL_RULES, seed: int = 0):
    """Loads a local HF LLaMA / Mistral checkpoint folder into a sharded NNX model.

    Args:
      path: folder with config.json and safetensors weights.
      mesh: the device mesh (default: all devices on the data axis).
      dtype / param_dtype: compute and parameter dtypes (param_dtype defaults to dtype).
      remat / attention: LlamaConfig's rematerialization policy and attention kernel.
      head: "lm" (LlamaForCausalLM) or "score" (LlamaForScore); default from `architectures`.
        Loading a causal-LM checkpoint with head="score" initializes a fresh scalar head (reward
        model initialized from an SFT model) and drops lm_head.
    Returns:
      LlamaForCausalLM or LlamaForScore with parameters sharded over `mesh`.
    """
    hf = read_hf_config(path)
    cfg = LlamaConfig.from_hf_dict(hf, source=os.path.join(path, "config.json"), dtype=dtype,
                                   param_dtype=param_dtype or dtype, remat=remat, attention=attention)
    archs = hf.get("architectures") or ["LlamaForCausalLM"]
    ckpt_head = "score" if archs[0] in HF_SCORE_ARCHS else "lm"
    head = head or ckpt_head
    if head not in ("lm", "score"):
        raise ValueError(f"head={head!r}; choose 'lm' or 'score'")
    if ckpt_head == "score" and head == "lm":
        raise ValueError(f"{path}: a {archs[0]} checkpoint has no LM head to load with head='lm'")
    if ckpt_head == "score" and hf.get("num_labels", len(hf.get("id2label", {0: 0}))) != 1:
        raise ValueError(f"{path}/config.json: score models must have num_labels=1")
    model_cls = LlamaForScore if head == "score" else LlamaForCausalLM
    mesh = make_mesh() if mesh is None else mesh
    graphdef, abstract_state, shardings = model_shardings(model_cls, cfg, mesh, rules)
    rules_by_path = param_rules(cfg)
    init_key = jax.random.key(seed)

    with ExitStack() as stack:
        tensors = _open_checkpoint(path, stack)
        used: set[str] = set()

        def load(path_keys, var, sharding):
            ours = _path_str(path_keys)
            template, convert, _ = rules_by_path[ours]
            shape, dt = var.get_value().shape, var.get_value().dtype
            if ours == "score" and ckpt_head == "lm":  # fresh scalar head on a causal-LM backbone
                value = jax.jit(lambda: (cfg.initializer_range * jax.random.normal(
                    init_key, shape, jnp.float32)).astype(dt), out_shardings=sharding.get_value())()
                return var.replace(value=value)
            stacked = "{i}" in template
            names = [template.format(i=i) for i in range(shape[0])] if stacked else [template]
            views = []
            for name in names:
                if name not in tensors:
                    raise KeyError(f"{path}: checkpoint is missing tensor {name!r} (for parameter {ours})")
                handle, fname = tensors[name]
                view = handle.get_slice(name)
                hf_shape = tuple(view.get_shape())
                expected = _expected_hf_shape(ours, shape[1:] if stacked else shape)
                if hf_shape != expected:
                    raise ValueError(f"{path}/{fname}: tensor {name!r} has shape {hf_shape}, "
                                     f"expected {expected} for this config")
                views.append((view, hf_shape))
                used.add(name)

            def callback(index):
                if stacked:
                    l0, l1 = _norm(index[0], shape[0])
                    parts = [convert(v, s, index[1:]) for v, s in views[l0:l1]]
                    return np.stack(parts).astype(dt)
                return convert(*views[0], index).astype(dt)

            return var.replace(value=jax.make_array_from_callback(shape, sharding.get_value(), callback))

        state = jax.tree_util.tree_map_with_path(
            lambda p, v, s: load(p, v, s), abstract_state, shardings,
            is_leaf=lambda x: isinstance(x, nnx.Variable))
        unused = [n for n in tensors if n not in used and not n.endswith(IGNORED_SUFFIXES)]
        if cfg.tie_word_embeddings or head == "score":
            unused = [n for n in unused if n != "lm_head.weight"]
        if unused:
            raise ValueError(f"{path}: checkpoint has tensors this model does not use: {sorted(unused)[:10]}")
    return nnx.merge(graphdef, state)


def _expected_hf_shape(ours: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    leaf = ours.rsplit("/", 1)[-1]
    if leaf in ("wq", "wk", "wv"):
        return (shape[1] * shape[2], shape[0])
    if leaf == "wo":
        return (shape[2], shape[0] * shape[1])
    if leaf in ("w_gate", "w_up", "w_down", "lm_head"):
        return (shape[1], shape[0])
    if leaf == "score":
        return (1, shape[0])
    return tuple(shape)


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def save_pretrained(model, path: str, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
                    tokenizer=None) -> None:
    """Writes `model` as a transformers-loadable folder (config.json + safetensors shards).

    Args:
      dtype: dtype of the saved tensors (default: the parameters' dtype).
      max_shard_bytes: above this, weights are split into shards with an index json.
      tokenizer: optional HF tokenizer saved alongside.
    """
    from safetensors.numpy import save_file

    cfg: LlamaConfig = model.cfg
    is_score = isinstance(model, LlamaForScore)
    state = nnx.state(model, nnx.Param)
    flat = {_path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))}
    rules = param_rules(cfg)
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(path, exist_ok=True)
        _write_hf_config(cfg, path, is_score=is_score)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
    # Shards are written as soon as they fill (temporary names), so the host holds at most one
    # shard and one parameter; they are renamed to model-0000k-of-0000n once n is known.
    shard: dict[str, np.ndarray] = {}
    written: list[tuple[str, list[str], int]] = []  # (temp file, tensor names, bytes)

    def flush():
        if shard:
            tmp = os.path.join(path, f".shard-{len(written):05d}.safetensors.tmp")
            save_file(shard, tmp, metadata={"format": "pt"})
            written.append((tmp, list(shard), sum(v.nbytes for v in shard.values())))
            shard.clear()

    size = 0
    for ours, var in flat.items():
        template, _, to_hf = rules[ours]
        arr = var.get_value()
        full = _to_host(arr)  # every process joins the gather; one parameter on the host at a time
        if not writer:
            continue
        layers = range(arr.shape[0]) if "{i}" in template else [None]
        for i in layers:
            host = to_hf(full if i is None else full[i])
            host = np.ascontiguousarray(host.astype(jnp.dtype(dtype)) if dtype else host)
            if size + host.nbytes > max_shard_bytes and shard:
                flush()
                size = 0
            shard[template.format(i=i)] = host
            size += host.nbytes
    if not writer:
        return
    flush()
    if len(written) == 1:
        os.replace(written[0][0], os.path.join(path, "model.safetensors"))
        return
    weight_map, total = {}, 0
    for k, (tmp, names, nbytes) in enumerate(written):
        name = f"model-{k + 1:05d}-of-{len(written):05d}.safetensors"
        os.replace(tmp, os.path.join(path, name))
        weight_map.update({n: name for n in names})
        total += nbytes
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _write_hf_config(cfg: LlamaConfig, path: str, *, is_score: bool) -> None:
    import transformers

    kind = "Mistral" if cfg.model_type == "mistral" else "Llama"
    arch = f"{kind}For{'SequenceClassification' if is_score else 'CausalLM'}"
    hf_cfg_cls = getattr(transformers, f"{kind}Config")
    kwargs = cfg.to_hf_dict()
    if kind == "Llama":
        kwargs.pop("sliding_window", None)
    hf_cfg = hf_cfg_cls(architectures=[arch], num_labels=1 if is_score else 2,
                        dtype=cfg.param_dtype, **kwargs)
    hf_cfg.save_pretrained(path)


def load_tokenizer(path: str, *, model_config: LlamaConfig | None = None):
    """A Hugging Face tokenizer from a local folder; checks it fits the model's vocabulary."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer folder {path!r} does not exist")
    tok = AutoTokenizer.from_pretrained(path)
    if model_config is not None:
        check_vocab(tok, model_config, source=path)
    return tok


def check_vocab(tokenizer, cfg: LlamaConfig, *, source: str = "tokenizer") -> None:
    """Raises when the tokenizer can produce ids the model has no embedding for."""
    n = len(tokenizer)
    if n > cfg.vocab_size:
        raise ValueError(
            f"{source}: tokenizer has {n} tokens but the model's vocab_size is {cfg.vocab_size}; "
            "ids >= vocab_size would index past the embedding table")
