"""Reading raw dataset files row by row, with every row's location kept for error messages.

The Hugging Face dataset repositories this project reads ship their rows as JSON Lines (plain,
`.gz` or `.xz` compressed), as one JSON array (`alpaca_data.json`), or as Parquet (the converter's
`data/train-00000-of-00001.parquet`). `iter_records` reads all of them and yields `Record`s that know
their file and 1-based line (or Parquet row) number, so that a bad field is reported as
`path:line: field 'x': ...` and never skipped silently.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import lzma
import os
from collections.abc import Iterator, Mapping
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.xz")
JSON_SUFFIXES = (".json", ".json.gz", ".json.xz")
PARQUET_SUFFIXES = (".parquet",)


class DataFormatError(ValueError):
    """A row or file that does not have the expected layout; the message names file, line and field."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One raw row: its decoded JSON object and where it came from.

    `line` is 1-based: the line in a JSON Lines file, the element index + 1 in a JSON array file,
    or the row index + 1 in a Parquet file.
    """

    path: str
    line: int
    data: Mapping[str, Any]

    @property
    def where(self) -> str:
        """`path:line`, the prefix of every error message about this row."""
        return f"{self.path}:{self.line}"

    def error(self, field: str | None, problem: str) -> DataFormatError:
        """Builds (does not raise) a DataFormatError naming this row and `field`."""
        if field is None:
            return DataFormatError(f"{self.where}: {problem}")
        return DataFormatError(f"{self.where}: field {field!r}: {problem}")

    def str_field(self, field: str, *, allow_empty: bool = True) -> str:
        """The string value of `field`; raises DataFormatError when missing or not a string."""
        value = self._get(field)
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {type(value).__name__} {value!r:.80}")
        if not allow_empty and not value.strip():
            raise self.error(field, "is empty")
        return value

    def bool_field(self, field: str) -> bool:
        """The boolean value of `field` (JSON true/false only; 0/1 and strings are rejected)."""
        value = self._get(field)
        if not isinstance(value, bool):
            raise self.error(field, f"expected true or false, got {value!r:.80}")
        return value

    def choice_field(self, field: str, choices: tuple[int, ...]) -> int:
        """The integer value of `field`, which must be one of `choices` (booleans are rejected)."""
        value = self._get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value not in choices:
            raise self.error(field, f"expected one of {list(choices)}, got {value!r:.80}")
        return value

    def _get(self, field: str) -> Any:
        if field not in self.data:
            present = ", ".join(sorted(self.data)) or "none"
            raise self.error(field, f"missing (fields present: {present})")
        return self.data[field]


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _as_object(path: str, line: int, value: Any) -> Record:
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}:{line}: expected a JSON object, got {type(value).__name__}")
    return Record(path, line, value)


def _iter_jsonl(path: str) -> Iterator[Record]:
    with _open_text(path) as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                raise DataFormatError(f"{path}:{line_no}: empty line (JSON Lines needs one object a line)")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{line_no}: invalid JSON: {e.msg} at column {e.colno}") from e
            yield _as_object(path, line_no, value)


def _iter_json_array(path: str) -> Iterator[Record]:
    with _open_text(path) as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{e.lineno}: invalid JSON: {e.msg} at column {e.colno}") from e
    if not isinstance(value, list):
        raise DataFormatError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    for index, item in enumerate(value):
        yield _as_object(path, index + 1, item)


def _iter_parquet(path: str) -> Iterator[Record]:
    import pyarrow.parquet as pq  # installed with tensorflow-datasets; imported only for Parquet

    table = pq.read_table(path)
    for index, row in enumerate(table.to_pylist()):
        yield Record(path, index + 1, row)


def iter_records(path: str | os.PathLike) -> Iterator[Record]:
    """Yields every row of a `.jsonl[.gz|.xz]`, `.json[.gz|.xz]` (array) or `.parquet` file.

    Raises DataFormatError naming the file and line for unreadable JSON, blank lines inside JSON
    Lines, and rows that are not JSON objects; FileNotFoundError for a missing file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file not found: {path}")
    if path.endswith(JSONL_SUFFIXES):
        yield from _iter_jsonl(path)
    elif path.endswith(JSON_SUFFIXES):
        yield from _iter_json_array(path)
    elif path.endswith(PARQUET_SUFFIXES):
        yield from _iter_parquet(path)
    else:
        known = ", ".join(JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES)
        raise DataFormatError(f"{path}: unknown file type (expected one of {known})")


def find_split_file(root: str | os.PathLike, split: str, patterns: tuple[str, ...]) -> str:
    """The one file for `split` under `root`, found through `patterns` (with `{split}` filled in).

    Patterns are glob patterns relative to `root`, tried in order; the first that matches exactly one
    file wins. Raises FileNotFoundError listing everything tried, or DataFormatError when a pattern
    matches several files (which one to read would be a guess).
    """
    import glob

    root = os.fspath(root)
    tried = []
    for pattern in patterns:
        full = os.path.join(root, pattern.format(split=split))
        matches = sorted(glob.glob(full))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DataFormatError(f"split {split!r}: {full} matches several files: {matches}")
        tried.append(full)
    raise FileNotFoundError(f"no file for split {split!r}; looked for: {', '.join(tried)}")
