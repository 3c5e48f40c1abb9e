"""Local data files (CSV, TSV, JSON, JSON lines), read here rather than by `datasets`, so that
a bad file is one line naming the file, the row and the field, before any compute, and
nothing of `datasets` reaches the terminal. Which file is which split follows `datasets`'
own rules (a folder's `train.tsv`, `validation.jsonl`...; `data_files={split: files}`).
Rows are numbered from 1: a CSV's first row after its header, a JSON file's first record."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

from ..errors import ConfigError, first_line

SUFFIXES = {".csv": ",", ".tsv": "\t", ".json": None, ".jsonl": None}


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` without its progress bars and its log below errors, restored after."""
    import datasets

    shown, level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if shown:
            datasets.enable_progress_bars()


def split_files(path: str, files) -> dict[str, list[Path]] | None:
    """{split: local files} of a folder `path`, or of `files` (`task.data_files`: a path, a
    list, or {split: path(s)}), as `datasets` assigns them; None when the data are not all
    local files of a kind read here (a hub name, parquet...). ConfigError for a named file
    that does not exist."""
    from datasets.data_files import DataFilesDict, get_data_patterns, sanitize_patterns

    if files is None and not os.path.isdir(path):
        return None
    try:
        with quiet_datasets():
            patterns = (get_data_patterns(path) if files is None else sanitize_patterns(files))
            resolved = DataFilesDict.from_patterns(patterns, base_path=path if files is None
                                                   else ".")
    except Exception as exc:  # noqa: BLE001 - datasets' FileNotFoundError, EmptyDatasetError
        where = f"task.path={path}" if files is None else f"task.data_files={files}"
        raise ConfigError(f"{where}: {type(exc).__name__}: {first_line(exc)}") from None
    split_paths = {str(split): [Path(f) for f in names] for split, names in resolved.items()}
    if not all(p.suffix in SUFFIXES and p.is_file() for names in split_paths.values()
               for p in names):
        return None
    return split_paths


def read_records(path: Path) -> tuple[list[str], list[dict]]:
    """A file's column names (a CSV's header, else every key in order of appearance) and its
    records; ConfigError naming the file (and the row) when it is not records."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise ConfigError(f"{path}: not UTF-8 text (a binary file?)")
    if not text.strip():
        raise ConfigError(f"{path}: empty file (allowed: records with a header row for CSV "
                          "and TSV, JSON objects for JSON)")
    if SUFFIXES[path.suffix] is not None:
        return csv_records(path, text, SUFFIXES[path.suffix])
    records = json_records(path, text)
    if not records:
        raise ConfigError(f"{path}: holds no record")
    columns = list(dict.fromkeys(k for record in records for k in record))
    return columns, records


def csv_records(path: Path, text: str, delimiter: str) -> tuple[list[str], list[dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader)
    records = []
    for row, cells in enumerate((cells for cells in reader if cells), 1):
        if len(cells) != len(header):
            raise ConfigError(f"{path}: row {row} has {len(cells)} fields, its header "
                              f"{len(header)} ({', '.join(header)})")
        records.append(dict(zip(header, cells)))
    if not records:
        raise ConfigError(f"{path}: a header and no rows")
    return header, records


def json_records(path: Path, text: str) -> list[dict]:
    """A JSON list of objects, or one object per line (JSON lines, in .json too)."""
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, list):
        lines = list(enumerate(whole, 1))
    elif isinstance(whole, dict) and text.strip().count("\n") == 0:
        lines = [(1, whole)]
    else:
        lines = []
        for row, line in enumerate((line for line in text.splitlines() if line.strip()), 1):
            try:
                lines.append((row, json.loads(line)))
            except ValueError as exc:
                raise ConfigError(f"{path}: row {row} is not JSON ({exc})") from None
    for row, record in lines:
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: row {row} is {type(record).__name__} "
                              f"{json.dumps(record)[:40]}, not a JSON object")
    return [record for _, record in lines]


def text_field(path: Path | str, records: list[dict], field: str, empty_ok: bool = True) -> list[str]:
    """The field `field` of every record, each a string (ConfigError naming the file, the
    row and the field otherwise; an empty one too, unless `empty_ok`)."""
    for row, record in enumerate(records, 1):
        value = record.get(field)
        if not isinstance(value, str) or not (empty_ok or value.strip()):
            shown = "missing" if field not in record else f"{json.dumps(value)[:40]}"
            raise ConfigError(f"{path}: {field} in row {row} is {shown}, not "
                              f"{'text' if empty_ok else 'non-empty text'}")
    return [record[field] for record in records]
