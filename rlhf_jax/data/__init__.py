"""Dialogue data: dataset readers, prompt templates, TFDS builders and grain pipelines.

Data flows one way:

    local files (HF repository layouts)
      -> readers (`safe_rlhf`, `hh_rlhf`, `alpaca`, `generic`): validated rows; a bad row raises
         DataFormatError naming file, line and field; filters return counts of what they skip
      -> examples (`schema`): PreferencePair / SFTExample with the prompt as a conversation
      -> TFDS builders (`tfds_builders`): array_record files, read with `tfds.data_source`
      -> grain pipelines (`pipeline`): shard per process, shuffle, tokenize with a template
         (`templates`, `tokenize`), pad or pack (`batching`), batch; checkpointable iterators.

The batch layouts are documented in `batching.py`; the generic preference JSONL format in `generic.py`.
"""

from rlhf_jax.data.alpaca import read_alpaca
from rlhf_jax.data.generic import read_preference_jsonl, write_preference_jsonl
from rlhf_jax.data.hh_rlhf import HH_SUBSETS, parse_dialogue, read_hh_rlhf, split_pair, split_transcript
from rlhf_jax.data.pipeline import (
    PipelineConfig,
    batch_iterator,
    count_truncated,
    preference_dataset,
    prompt_dataset,
    sft_dataset,
)
from rlhf_jax.data.records import DataFormatError
from rlhf_jax.data.safe_rlhf import (
    SafeRLHFRow,
    is_dual_safe,
    is_dual_unsafe,
    preference_pairs,
    preferred_response_id,
    read_safe_rlhf,
    safe_responses,
    unique_prompts,
)
from rlhf_jax.data.schema import Conversation, PreferencePair, SFTExample, Turn
from rlhf_jax.data.templates import DATASET_TEMPLATES, TEMPLATES, PromptTemplate, get_template
from rlhf_jax.data.tfds_builders import AlpacaSft, AnthropicHhRlhf, PkuSafeRlhf, PreferenceJsonl, prepare

__all__ = [
    "HH_SUBSETS", "DATASET_TEMPLATES", "TEMPLATES",
    "AlpacaSft", "AnthropicHhRlhf", "Conversation", "DataFormatError", "PipelineConfig",
    "PkuSafeRlhf", "PreferenceJsonl", "PreferencePair", "PromptTemplate", "SFTExample",
    "SafeRLHFRow", "Turn",
    "batch_iterator", "count_truncated", "get_template", "is_dual_safe", "is_dual_unsafe",
    "parse_dialogue", "preference_dataset", "preference_pairs", "preferred_response_id", "prepare",
    "prompt_dataset", "read_alpaca", "read_hh_rlhf", "read_preference_jsonl", "read_safe_rlhf",
    "safe_responses", "sft_dataset", "split_pair", "split_transcript", "unique_prompts",
    "write_preference_jsonl",
]
