"""Reading the node's data sources: CSV with the standard library, CSV and Parquet with pandas."""

from __future__ import annotations

import csv
from pathlib import Path

PARQUET_MAGIC = b"PAR1"


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dictionaries (values stripped)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        if reader.fieldnames is not None:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader if any(row.values())]


def count_rows(path: str | Path, column: str | None = None, equals: str | None = None) -> int:
    """Rows of a CSV file, or those whose ``column`` equals ``equals``."""
    rows = read_csv(path)
    if column is None:
        return len(rows)
    if rows and column not in rows[0]:
        raise KeyError(f"no column {column!r} in {path}")
    return sum(1 for row in rows if row.get(column) == equals)


def read_dataframe(path: str | Path):  # -> pandas.DataFrame
    """A CSV or Parquet file (told apart by its first bytes) as a pandas DataFrame."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "read_dataframe needs pandas: pip install 'fedq-algorithm[dataframes]' "
            "(or add python3-pandas to the algorithm's image)"
        ) from None
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == PARQUET_MAGIC:
        return pandas.read_parquet(path)
    return pandas.read_csv(path, skipinitialspace=True)
