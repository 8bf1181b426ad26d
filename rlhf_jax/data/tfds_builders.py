"""tensorflow-datasets builders for the dialogue datasets, reading local files (no TensorFlow needed).

Each builder reads the files of the dataset's Hugging Face repository from a local folder given as
the *manual dir*, converts rows with the readers of this package (so bad rows fail with file and
line), and writes `array_record` files that `tfds.data_source` reads by random access:

    prepare(PkuSafeRlhf, source_dir="/data/PKU-SafeRLHF-30K", data_dir="/data/tfds",
            config="pairs_no_dual_unsafe")
    train = tfds.data_source("pku_safe_rlhf/pairs_no_dual_unsafe", split="train",
                             data_dir="/data/tfds")

Rows are stored in the flat forms of `schema.py` (preference, SFT or prompt). Filters that skip rows
on purpose record what they skipped per split in the dataset's metadata (`builder.info.metadata
["counts"]`, also in `metadata.json`) and log it.

Builders and configs:
- `pku_safe_rlhf`: pairs (the paper's merged preference), pairs_no_dual_unsafe,
  pairs_no_dual_unsafe_no_dual_safe (Table 2's cumulative filters), sft_safe (the safe responses
  behind SFT(Safe)), prompts (distinct prompts, for RL and evaluation). Splits train, test.
- `anthropic_hh_rlhf`: one config per subset (harmless_base, ...) and `all`; or any
  `HHRLHFConfig(name=..., subsets=(...))`. Splits train, test.
- `alpaca_sft`: split train.
- `preference_jsonl`: our generic format (`generic.py`); splits train, validation, test, whichever
  `{split}.jsonl[.gz|.xz]` files exist.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from rlhf_jax.data import alpaca, generic, hh_rlhf, safe_rlhf
from rlhf_jax.data.records import find_split_file
from rlhf_jax.data.schema import encode_pair, encode_prompt, encode_sft

log = logging.getLogger(__name__)

_TEXTS = tfds.features.Sequence(tfds.features.Text())
PROMPT_FEATURES = {"prompt_roles": _TEXTS, "prompt_texts": _TEXTS, "meta": tfds.features.Text()}
PAIR_FEATURES = {**PROMPT_FEATURES, "chosen": tfds.features.Text(), "rejected": tfds.features.Text()}
SFT_FEATURES = {**PROMPT_FEATURES, "response": tfds.features.Text()}
KIND_FEATURES = {"pairs": PAIR_FEATURES, "sft": SFT_FEATURES, "prompts": PROMPT_FEATURES}



class _LocalFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: find each split's file in the manual dir, read it, store the examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version, from local files."}
    SPLITS: tuple[str, ...] = ("train", "test")
    REQUIRED_SPLITS: tuple[str, ...] = ("train",)
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding the dataset's files as the manual dir."

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This module's path. tfds 4.9.10 finds it through the `importlib_resources` backport, which
        it does not install; its own fallback (`inspect.getfile`) gives the same path without it."""
        return epath.Path(inspect.getfile(cls))

    def _kind(self) -> str:
        raise NotImplementedError

    def _read_split(self, root: str, split: str) -> tuple[list[dict[str, Any]], dict[str, int]] | None:
        """Stored examples and skip counts for `split`, or None when the split has no file."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=tfds.features.FeaturesDict(KIND_FEATURES[self._kind()]),
            metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        generators, counts = {}, {}
        for split in self.SPLITS:
            result = self._read_split(root, split)
            if result is None:
                if split in self.REQUIRED_SPLITS:
                    raise FileNotFoundError(f"{self.name}: no {split!r} file under {root}")
                continue
            examples, counts[split] = result
            log.info("%s %s: %s", self.info.full_name, split, counts[split])
            generators[split] = self._generate_examples(examples)
        self.info.metadata["counts"] = counts
        return generators

    def _generate_examples(self, examples: Sequence[dict[str, Any]]) -> Iterator[tuple[int, dict]]:
        yield from enumerate(examples)


def _optional_file(root: str, split: str, patterns: tuple[str, ...]) -> str | None:
    try:
        return find_split_file(root, split, patterns)
    except FileNotFoundError:
        return None


@dataclasses.dataclass(eq=False)
class SafeRLHFConfig(tfds.core.BuilderConfig):
    """Which view of PKU-SafeRLHF to store: `kind` in pairs / sft / prompts, and the pair filters."""

    kind: str = "pairs"
    drop_dual_unsafe: bool = False
    drop_dual_safe: bool = False

    def __post_init__(self):
        if self.kind not in KIND_FEATURES:
            raise ValueError(f"SafeRLHFConfig.kind must be one of {list(KIND_FEATURES)}, got {self.kind!r}")
        if self.kind != "pairs" and (self.drop_dual_unsafe or self.drop_dual_safe):
            raise ValueError("the dual-safe / dual-unsafe filters apply to kind='pairs' only")


class PkuSafeRlhf(_LocalFilesBuilder):
    """PKU-SafeRLHF (30K) from its `train.jsonl.xz` / `test.jsonl.xz`, as in Xu et al. 2024."""

    name = "pku_safe_rlhf"
    BUILDER_CONFIGS = [
        SafeRLHFConfig(name="pairs", description="merged preference, no filter"),
        SafeRLHFConfig(name="pairs_no_dual_unsafe", drop_dual_unsafe=True,
                       description="merged preference without dual-unsafe pairs"),
        SafeRLHFConfig(name="pairs_no_dual_unsafe_no_dual_safe", drop_dual_unsafe=True,
                       drop_dual_safe=True, description="only pairs of one safe, one unsafe response"),
        SafeRLHFConfig(name="sft_safe", kind="sft", description="safe responses, for SFT(Safe)"),
        SafeRLHFConfig(name="prompts", kind="prompts", description="distinct prompts"),
    ]

    def _kind(self) -> str:
        return self.builder_config.kind

    def _read_split(self, root, split):
        path = _optional_file(root, split, safe_rlhf.SPLIT_PATTERNS)
        if path is None:
            return None
        rows, cfg = safe_rlhf.read_safe_rlhf(path), self.builder_config
        if cfg.kind == "pairs":
            pairs, counts = safe_rlhf.preference_pairs(
                rows, drop_dual_unsafe=cfg.drop_dual_unsafe, drop_dual_safe=cfg.drop_dual_safe)
            return [encode_pair(p) for p in pairs], counts
        if cfg.kind == "sft":
            examples, counts = safe_rlhf.safe_responses(rows)
            return [encode_sft(e) for e in examples], counts
        prompts, counts = safe_rlhf.unique_prompts(rows)
        return [encode_prompt(p, {"source": safe_rlhf.SOURCE}) for p in prompts], counts


@dataclasses.dataclass(eq=False)
class HHRLHFConfig(tfds.core.BuilderConfig):
    """Which HH-RLHF subsets to read (folder names, e.g. "harmless-base"), and malformed-row policy."""

    subsets: tuple[str, ...] = hh_rlhf.HH_SUBSETS
    skip_malformed: bool = False

    def __post_init__(self):
        unknown = [s for s in self.subsets if s not in hh_rlhf.HH_SUBSETS]
        if unknown or not self.subsets:
            raise ValueError(f"unknown HH-RLHF subsets {unknown}; choose from {list(hh_rlhf.HH_SUBSETS)}")


class AnthropicHhRlhf(_LocalFilesBuilder):
    """Anthropic HH-RLHF from its `<subset>/{train,test}.jsonl.gz` files, prompts split off."""

    name = "anthropic_hh_rlhf"
    REQUIRED_SPLITS = ("train", "test")
    BUILDER_CONFIGS = [HHRLHFConfig(name=s.replace("-", "_"), subsets=(s,)) for s in hh_rlhf.HH_SUBSETS]
    BUILDER_CONFIGS.append(HHRLHFConfig(name="all", subsets=hh_rlhf.HH_SUBSETS))

    def _kind(self) -> str:
        return "pairs"

    def _read_split(self, root, split):
        cfg = self.builder_config
        pairs, counts = hh_rlhf.read_hh_rlhf(root, split, cfg.subsets, skip_malformed=cfg.skip_malformed)
        return [encode_pair(p) for p in pairs], counts


class AlpacaSft(_LocalFilesBuilder):
    """Alpaca-format instruction data (`alpaca_data.json` or the Parquet conversion), for SFT."""

    name = "alpaca_sft"
    SPLITS = ("train",)

    def _kind(self) -> str:
        return "sft"

    def _read_split(self, root, split):
        examples = alpaca.read_alpaca(find_split_file(root, split, alpaca.SPLIT_PATTERNS))
        return [encode_sft(e) for e in examples], {"rows": len(examples), "kept": len(examples)}


class PreferenceJsonl(_LocalFilesBuilder):
    """Users' preference pairs in our generic JSONL format (`rlhf_jax.data.generic`)."""

    name = "preference_jsonl"
    SPLITS = ("train", "validation", "test")

    def _kind(self) -> str:
        return "pairs"

    def _read_split(self, root, split):
        path = _optional_file(root, split, generic.SPLIT_PATTERNS)
        if path is None:
            return None
        pairs = generic.read_preference_jsonl(path)
        return [encode_pair(p) for p in pairs], {"rows": len(pairs), "kept": len(pairs)}


def prepare(builder_cls: type[_LocalFilesBuilder], source_dir: str | os.PathLike,
            data_dir: str | os.PathLike, config: str | tfds.core.BuilderConfig | None = None
            ) -> tfds.core.DatasetBuilder:
    """Builds (once; a finished build is reused) `builder_cls` from `source_dir` into `data_dir`.

    Returns the builder; `builder.as_data_source()` or `tfds.data_source("<name>/<config>",
    data_dir=data_dir)` reads the splits back.
    """
    builder = builder_cls(data_dir=os.fspath(data_dir), config=config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(source_dir)))
    return builder


def skip_counts(builder: tfds.core.DatasetBuilder) -> dict[str, dict[str, int]]:
    """Per split, the counts the readers reported when the dataset was built (kept, dropped...)."""
    return {split: {k: int(np.asarray(v)) for k, v in counts.items()}
            for split, counts in builder.info.metadata["counts"].items()}
