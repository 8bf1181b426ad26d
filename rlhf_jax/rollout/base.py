"""The rollout interface: what a policy-gradient trainer needs from a generation engine.

    rollout = JaxSampler(model)                             # the default engine (jax_sampler.py)
    prompts = PromptBatch(prompt_ids_BxP, prompt_mask_BxP)  # padding anywhere; rows of this process
    out = rollout.generate(None, prompts, RolloutConfig(max_new_tokens=256, top_k=200,
                                                        eos_token_id=2), key=key)
    out.logps_BxN                                           # PPO's old log-probs
    rollout.update_params(nnx.state(policy))                # after each optimizer step

Another engine (e.g. a server) plugs in by subclassing `Rollout`; trainers only see this file.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.rollout.sampling import check_sampling_args


class FinishReason(enum.IntEnum):
    """Why a row stopped; `RolloutOutput.finish_reason_B` holds these values."""

    LENGTH = 0  # max_new_tokens reached without an end token
    EOS = 1  # sampled config.eos_token_id (kept in the response, mask 1)
    STOP = 2  # sampled one of config.stop_token_ids (kept in the response, mask 1)


def _check_token_id(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"RolloutConfig.{name} must be a token id (int >= 0), got {value!r}")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How to decode. Frozen and hashable: the jitted program is specialized to it.

    Each row stops on its own at its first `eos_token_id` or `stop_token_ids` token (included in
    the response) or after `max_new_tokens`; a finished row is frozen and its later slots hold
    `pad_token_id` with mask 0. `greedy` takes the argmax and ignores temperature / top_k / top_p.
    """

    max_new_tokens: int = 256
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    eos_token_id: int | None = None  # None: never stop on EOS
    stop_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0

    def __post_init__(self):
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"RolloutConfig.max_new_tokens must be an int >= 1, got {n!r}")
        if not isinstance(self.greedy, bool):
            raise ValueError(f"RolloutConfig.greedy must be a bool, got {self.greedy!r}")
        try:
            check_sampling_args(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        except ValueError as e:
            raise ValueError(f"RolloutConfig.{e}") from None
        if not isinstance(self.stop_token_ids, tuple):
            raise ValueError(f"RolloutConfig.stop_token_ids must be a tuple, got {self.stop_token_ids!r}")
        for t in self.stop_token_ids:
            _check_token_id("stop_token_ids", t)
        if self.eos_token_id is not None:
            _check_token_id("eos_token_id", self.eos_token_id)
        _check_token_id("pad_token_id", self.pad_token_id)

    def check_vocab(self, vocab_size: int) -> None:
        """Raises naming the field when a configured token id is outside [0, vocab_size)."""
        named = [("eos_token_id", self.eos_token_id), ("pad_token_id", self.pad_token_id)]
        named += [("stop_token_ids", t) for t in self.stop_token_ids]
        for name, t in named:
            if t is not None and t >= vocab_size:
                raise ValueError(f"RolloutConfig.{name}={t} is outside the vocabulary [0, {vocab_size})")


class PromptBatch(NamedTuple):
    """Prompt token ids and mask (1 = real token), host arrays [B, P].

    Padding may be anywhere: each row's prompt is its masked-in tokens, in order. The engine
    re-pads to its own layout.
    """

    ids_BxP: np.ndarray
    mask_BxP: np.ndarray

    @classmethod
    def from_lists(cls, prompts: Sequence[Sequence[int]], pad_token_id: int = 0) -> "PromptBatch":
        """Left-pads token-id lists of different lengths to the longest."""
        if len(prompts) == 0:
            raise ValueError("prompts: need at least one prompt")
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), pad_token_id, np.int32)
        mask = np.zeros((len(prompts), width), np.int32)
        for i, p in enumerate(prompts):
            if len(p):
                ids[i, width - len(p):] = np.asarray(p, np.int32)
                mask[i, width - len(p):] = 1
        return cls(ids, mask)


class RolloutOutput(NamedTuple):
    """A generated batch. P: prompt bucket (left-padded), N: max_new_tokens (right-padded).

    Response slots after a row's end hold the pad id with mask 0; `logps_BxN` and
    `sampling_logps_BxN` are 0 there. The log-probs are float32 whatever the compute dtype.
    """

    prompt_ids_BxP: jax.Array
    prompt_mask_BxP: jax.Array  # bool
    response_ids_BxN: jax.Array
    response_mask_BxN: jax.Array  # bool, = arange(N) < lengths_B
    logps_BxN: jax.Array  # log pi(token) at temperature 1: PPO's old log-probs
    sampling_logps_BxN: jax.Array  # log-prob under the distribution sampled from (0 when greedy)
    lengths_B: jax.Array  # int32 response lengths, the end token included
    finish_reason_B: jax.Array  # int32 FinishReason

    def sequences(self) -> tuple[jax.Array, jax.Array]:
        """(tokens_BxT, mask_BxT) of prompt and response side by side, T = P + N: what a training
        forward reads; its log-probs at columns P: are `logps_BxN`."""
        tokens = jnp.concatenate([self.prompt_ids_BxP, self.response_ids_BxN], axis=1)
        mask = jnp.concatenate([self.prompt_mask_BxP, self.response_mask_BxN], axis=1)
        return tokens, mask


class Rollout(abc.ABC):
    """A generation engine for RL: sample responses, score tokens, take new weights."""

    @abc.abstractmethod
    def generate(self, params: Any, prompts: PromptBatch, config: RolloutConfig, *,
                 key: jax.Array | None = None) -> RolloutOutput:
        """Samples responses to `prompts` with `params` (None: the engine's current params).
        `key` is required unless `config.greedy`."""

    @abc.abstractmethod
    def logps(self, params: Any, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
        """[B, T] float32: log p(tokens[:, t] | the valid tokens before t); 0 where mask is 0 or
        no valid token precedes t (params None: the engine's current params)."""

    @abc.abstractmethod
    def update_params(self, params: Any) -> None:
        """Replaces the engine's current params (same structure and shapes; no recompilation)."""
