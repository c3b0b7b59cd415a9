"""Progress of a task's jobs: a tqdm bar (a widget in Jupyter, a line in a terminal)."""

from __future__ import annotations

import sys
from typing import Any

from ._native import TERMINAL_STATUSES


class Progress:
    """Jobs finished out of all, with each organization's status beside the bar."""

    def __init__(self, task: str, total: int, enabled: bool | None) -> None:
        if enabled is None:
            enabled = _interactive()
        self._bar = None
        if enabled:
            self._bar = bar_class()(total=total, desc=f"task {task[:8]}", unit="job", leave=True)

    def update(self, jobs: list[dict[str, Any]], names: dict[str, str]) -> None:
        if self._bar is None:
            return
        done = sum(1 for j in jobs if j["status"] in TERMINAL)
        self._bar.total = len(jobs)
        self._bar.n = done
        statuses = ", ".join(
            f"{names.get(j['organization'], j['organization'][:8])}: {j['status']}" for j in jobs
        )
        self._bar.set_postfix_str(statuses, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


TERMINAL = frozenset(TERMINAL_STATUSES)


def bar_class() -> type:
    """tqdm's widget in Jupyter when ipywidgets is installed (``pip install 'fedq[notebook]'``),
    else its text bar: ``tqdm.auto`` without ipywidgets warns "IProgress not found" at every
    task and falls back to text anyway."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            from tqdm.std import tqdm as text

            return text
    from tqdm.auto import tqdm

    return tqdm


def _interactive() -> bool:
    """A bar where someone watches: a terminal, or a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()
