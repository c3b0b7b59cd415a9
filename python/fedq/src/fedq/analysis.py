"""The analyses of ``docs/algorithms.md`` from Python: ``client.analysis.<name>(…)`` runs the
shipped analysis image (``fedq/python-analysis``) at the registries and gives its statistics as
pandas objects.

>>> client.analysis.summary("registries", ["registry-a", "registry-b", "registry-c"],
...                         data="patients", columns=["age", "bmi"], where="age > 50")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import errors

if TYPE_CHECKING:
    from .client import Client

#: The image the analyses run in, as ``scripts/images`` builds it.
IMAGE = "fedq/python-analysis:0.1.0"


@dataclass(frozen=True)
class Model:
    """A fitted regression: ``coefficients`` (a DataFrame indexed by name: coef, se, t or z,
    p) and its other statistics (``n``, ``r2`` or ``deviance``, …) in ``stats``."""

    coefficients: Any
    stats: dict[str, Any]


@dataclass(frozen=True)
class Crosstab:
    """A contingency table (a DataFrame) and its χ² test (``chi2``, ``p``, ``dof``, …)."""

    table: Any
    test: dict[str, Any]
    missing: int
    excluded: int


@dataclass(frozen=True)
class Survival:
    """Kaplan–Meier curves, one DataFrame per group (time, at_risk, observed, survival,
    ci_lower, ci_upper), and the log-rank test where there are groups."""

    curves: dict[str, Any]
    logrank: dict[str, Any] | None


class Analyses:
    """``client.analysis``: each method runs one analysis at ``organizations`` (names or ids; the
    first aggregates, so list your own organization first if it has a node) of
    ``collaboration`` on data source ``data``, filtered by ``where`` (pandas query syntax) at
    every node, and waits up to ``timeout`` seconds. A registry whose data does not fit raises
    :class:`fedq.errors.AnalysisFailed`, with each organization's reason."""

    def __init__(self, client: Client, image: str = IMAGE) -> None:
        self._client = client
        self.image = image

    def run(self, collaboration: str, organizations: Iterable[str], spec: Mapping[str, Any], *,
            timeout: float = 600, progress: bool | None = None) -> dict[str, Any]:
        """Any analysis by its input (``docs/algorithms.md``); the aggregator's output as JSON."""
        results = self._client.run(collaboration, self.image, list(organizations), dict(spec), timeout=timeout,
                                   progress=progress)
        said = []
        for result in results:
            try:
                output = result.json()
            except ValueError:
                output = {}
            if not result.ok:
                error = output.get("error", {}) if isinstance(output, dict) else {}
                said.append(f"{result.organization}: {error.get('message') or result.reason or result.status}"
                            + (f" ({error['code']})" if error.get("code") else ""))
        if said:
            raise errors.AnalysisFailed(f"the {spec.get('analysis')} analysis failed: " + "; ".join(said), said)
        # The aggregator's output, wherever ``spec["aggregator"]`` put it: the others only say
        # that they contributed.
        outputs = [result.json() for result in results]
        return next((o for o in outputs if not (isinstance(o, dict) and o.get("contributed"))), outputs[0])

    def summary(self, collaboration: str, organizations: Iterable[str], *, data: str, columns: list[str],
                where: str | None = None, histogram: Mapping[str, Mapping[str, float]] | None = None,
                quantiles: list[float] | None = None, **options: Any):
        """Count, missing, mean, variance and standard deviation per column (a DataFrame, one row
        per column), and quantiles from a histogram where one is given."""
        import pandas as pd

        spec = _spec("summary", data, where, columns=columns, histogram=histogram, quantiles=quantiles)
        out = self.run(collaboration, organizations, spec, **options)
        rows = {}
        for column, stats in out["columns"].items():
            row = {k: stats[k] for k in ("count", "missing", "mean", "variance", "std")}
            row.update({f"q{p}": q for p, q in stats.get("quantiles", {}).items()})
            rows[column] = row
        return pd.DataFrame.from_dict(rows, orient="index")

    def crosstab(self, collaboration: str, organizations: Iterable[str], *, data: str, rows: str, columns: str,
                 levels: Mapping[str, list], where: str | None = None, **options: Any) -> Crosstab:
        """The table of two categorical columns, with the χ² test of independence."""
        import pandas as pd

        levels = {k: [str(v) for v in vs] for k, vs in levels.items()}
        spec = _spec("crosstab", data, where, rows=rows, columns=columns, levels=levels)
        out = self.run(collaboration, organizations, spec, **options)
        table = pd.DataFrame(out["table"], index=pd.Index(out["row_levels"], name=rows),
                             columns=pd.Index(out["column_levels"], name=columns))
        return Crosstab(table, out.get("test", {}), out["missing"], out["excluded"])

    def correlation(self, collaboration: str, organizations: Iterable[str], *, data: str, columns: list[str],
                    where: str | None = None, **options: Any):
        """The Pearson correlation matrix over the rows with every column present."""
        import pandas as pd

        out = self.run(collaboration, organizations, _spec("correlation", data, where, columns=columns), **options)
        return pd.DataFrame(out["matrix"], index=out["columns"], columns=out["columns"])

    def linear(self, collaboration: str, organizations: Iterable[str], *, data: str, outcome: str,
               covariates: list[str], where: str | None = None, **options: Any) -> Model:
        """Ordinary least squares with an intercept."""
        spec = _spec("linear", data, where, outcome=outcome, covariates=covariates)
        return _model(self.run(collaboration, organizations, spec, **options))

    def glm(self, collaboration: str, organizations: Iterable[str], *, data: str, family: str, outcome: str,
            covariates: list[str], where: str | None = None, max_iter: int | None = None, **options: Any) -> Model:
        """Logistic (``family="logistic"``) or Poisson regression by IRLS."""
        spec = _spec("glm", data, where, family=family, outcome=outcome, covariates=covariates, max_iter=max_iter)
        return _model(self.run(collaboration, organizations, spec, **options))

    def kaplan_meier(self, collaboration: str, organizations: Iterable[str], *, data: str, time: str, event: str,
                     max_time: float, unit: float = 1, group: str | None = None, levels: list | None = None,
                     where: str | None = None, **options: Any) -> Survival:
        """Kaplan–Meier curves (per group, with the log-rank test)."""
        import pandas as pd

        spec = _spec("kaplan_meier", data, where, time=time, event=event, max_time=max_time, unit=unit, group=group,
                     levels={group: [str(v) for v in levels]} if group and levels else None)
        out = self.run(collaboration, organizations, spec, **options)
        keys = ("time", "at_risk", "observed", "survival", "ci_lower", "ci_upper")
        curves = {g: pd.DataFrame({k: c[k] for k in keys}) for g, c in out["curves"].items()}
        return Survival(curves, out.get("logrank"))

    def cox(self, collaboration: str, organizations: Iterable[str], *, data: str, time: str, event: str,
            covariates: list[str], max_time: float, unit: float = 1, ties: str = "efron", where: str | None = None,
            max_iter: int | None = None, **options: Any) -> Model:
        """Cox proportional hazards (``ties="efron"`` as lifelines, or ``"breslow"``); times are
        counted in ``unit``s up to ``max_time``."""
        spec = _spec("cox", data, where, time=time, event=event, covariates=covariates, max_time=max_time, unit=unit,
                     ties=ties, max_iter=max_iter)
        return _model(self.run(collaboration, organizations, spec, **options))

    # -- vertically partitioned: A's and B's columns of the same patients, C deals -------------

    def vertical_summary(self, collaboration: str, parties: Iterable[str], *, a: Mapping[str, Any],
                         b: Mapping[str, Any], id: str = "id", **options: Any):
        """Count, missing, sum, mean, variance and standard deviation of each party's
        ``columns`` over the patients both parties' ``where`` select (a DataFrame, one row per
        column; the cohort's size in ``.attrs["n"]``). ``parties`` are A, B and the dealer C, in
        that order; ``a`` and ``b`` give each data party's ``data``, ``where`` and ``columns``."""
        import pandas as pd

        out = self.run(collaboration, parties, _vertical("vertical_summary", a, b, id), **options)
        keys = ("count", "missing", "sum", "mean", "variance", "std")
        frame = pd.DataFrame.from_dict({c: {k: s[k] for k in keys} for c, s in out["columns"].items()},
                                       orient="index")
        frame.attrs["n"] = out["n"]
        return frame

    def vertical_crosstab(self, collaboration: str, parties: Iterable[str], *, a: Mapping[str, Any],
                          b: Mapping[str, Any], id: str = "id", **options: Any) -> Crosstab:
        """The table of A's ``column`` against B's (each with its ``levels``), with the χ² test."""
        import pandas as pd

        a, b = ({**p, "levels": [str(v) for v in p.get("levels", [])]} for p in (a, b))
        out = self.run(collaboration, parties, _vertical("vertical_crosstab", a, b, id), **options)
        table = pd.DataFrame(out["table"], index=pd.Index(out["row_levels"], name=a.get("column")),
                             columns=pd.Index(out["column_levels"], name=b.get("column")))
        return Crosstab(table, out.get("test", {}), out["missing"], out["excluded"])

    def vertical_correlation(self, collaboration: str, parties: Iterable[str], *, a: Mapping[str, Any],
                             b: Mapping[str, Any], id: str = "id", **options: Any):
        """The Pearson correlation matrix of A's and B's ``columns`` over the patients with all
        of them present (``.attrs["n"]``)."""
        import pandas as pd

        out = self.run(collaboration, parties, _vertical("vertical_correlation", a, b, id), **options)
        frame = pd.DataFrame(out["matrix"], index=out["columns"], columns=out["columns"])
        frame.attrs["n"] = out["n"]
        return frame

    def vertical_linear(self, collaboration: str, parties: Iterable[str], *, a: Mapping[str, Any],
                        b: Mapping[str, Any], id: str = "id", **options: Any) -> Model:
        """Ordinary least squares on A's and B's ``covariates``; one of them names the
        ``outcome``."""
        return _model(self.run(collaboration, parties, _vertical("vertical_linear", a, b, id), **options))


def _vertical(analysis: str, a: Mapping[str, Any], b: Mapping[str, Any], id: str) -> dict[str, Any]:
    return {"analysis": analysis, "id": id, "a": dict(a), "b": dict(b)}


def _spec(analysis: str, data: str, where: str | None, **arguments: Any) -> dict[str, Any]:
    spec = {"analysis": analysis, "data": data, **{k: v for k, v in arguments.items() if v is not None}}
    if where:
        spec["where"] = where
    return spec


def _model(out: dict[str, Any]) -> Model:
    import pandas as pd

    coefficients = pd.DataFrame(out["coefficients"]).set_index("name")
    return Model(coefficients, {k: v for k, v in out.items() if k != "coefficients"})
