"""A task's results, opened on this machine: bytes, JSON, and DataFrames where tabular."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence


@dataclass(frozen=True)
class Result:
    """One organization's result of a task."""

    job: str
    #: The organization's name (its id when the server gave no name).
    organization: str
    organization_id: str
    #: ``completed``, ``failed``, ``killed``, ``refused``…
    status: str
    #: What the algorithm posted, exactly.
    output: bytes
    #: Why the job did not complete, if it did not.
    reason: str | None = None
    #: The container's log, if the node shares it and it was asked for.
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def text(self) -> str:
        return self.output.decode("utf-8")

    def json(self) -> Any:
        """The output as JSON (raises ``ValueError`` if it is not)."""
        return json.loads(self.output)

    def dataframe(self) -> "Any":
        """The output as a pandas DataFrame: JSON records (a list of objects), JSON columns (an
        object of equal-length lists), one JSON object (one row), or CSV text."""
        import pandas as pd

        return pd.DataFrame(_rows(self.output))


def _rows(output: bytes) -> list[dict[str, Any]]:
    """The rows of a tabular output (see :meth:`Result.dataframe`)."""
    try:
        value = json.loads(output)
    except ValueError:
        text = output.decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise ValueError("the output is neither JSON nor CSV with a header") from None
        return [dict(row) for row in reader]
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        return value
    if isinstance(value, dict):
        columns = [v for v in value.values() if isinstance(v, list)]
        if columns and len(columns) == len(value) and len({len(c) for c in columns}) == 1:
            return [dict(zip(value, row)) for row in zip(*value.values())]
        return [value]
    raise ValueError(f"a JSON {type(value).__name__} is not a table")


class Results(Sequence[Result]):
    """The results of a task, one per organization that answered, in the task's order."""

    def __init__(self, task: str, results: list[Result], complete: bool) -> None:
        self.task = task
        self.complete = complete
        self._results = results

    def __getitem__(self, index: Any) -> Any:
        return self._results[index]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    def __repr__(self) -> str:
        orgs = ", ".join(f"{r.organization}: {r.status}" for r in self._results)
        return f"<Results of task {self.task} ({'complete' if self.complete else 'partial'}): {orgs}>"

    def by_organization(self) -> dict[str, Result]:
        return {r.organization: r for r in self._results}

    def json(self) -> dict[str, Any]:
        """Each completed organization's output as JSON, by organization name."""
        return {r.organization: r.json() for r in self._results if r.ok}

    def dataframe(self) -> "Any":
        """The completed results as one DataFrame, with an ``organization`` column first."""
        import pandas as pd

        rows = []
        for r in self._results:
            if r.ok:
                rows.extend({"organization": r.organization, **row} for row in _rows(r.output))
        return pd.DataFrame(rows)
