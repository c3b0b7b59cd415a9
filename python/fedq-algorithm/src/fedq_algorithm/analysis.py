"""Federated statistics on secure aggregation: the analyses of ``docs/algorithms.md``
("Analyses"), each equal to the same computation on the pooled rows, each built only from sums
that the node aggregates securely (``Node.contribute``), so that no organization's own counts,
sums or cross-products reach anyone; the aggregating job learns the sums over all organizations.

Run as ``python3 -m fedq_algorithm.analysis`` (the image ``fedq/analysis``). The input names
the analysis and its arguments::

    {"analysis": "summary", "data": "patients", "columns": ["age", "bmi"], "where": "age > 50"}

Every job of the task takes part; the job at ``aggregator`` (the first organization of the task
by default) posts the statistics, the others post ``{"contributed": …}``. A node whose data
cannot be analysed (a column missing or not numeric, too few rows) fails its job with a reason,
and the aggregator's job fails saying how many could not take part.
"""

from __future__ import annotations

import json
import math
import sys
from fractions import Fraction
from typing import Any, Callable

from fedq_algorithm import fixed
from fedq_algorithm.node import Job, Node

#: Fewer rows than this at an organization and it does not take part.
MIN_ROWS = 3


class AnalysisError(Exception):
    """Why an analysis cannot run, for the researcher: a stable ``code`` and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Rounds:
    """The analysis's rounds of secure aggregation over the task's organizations."""

    def __init__(self, node: Node, job: Job, spec: dict) -> None:
        self.node = node
        self.participants = list(dict.fromkeys(job.organizations))
        self.aggregator = spec.get("aggregator") or self.participants[0]
        if self.aggregator not in self.participants:
            raise AnalysisError("bad_input", "the aggregator must be one of the task's organizations")
        self.me = job.organization
        self.timeout = float(spec.get("timeout", 600))

    @property
    def aggregating(self) -> bool:
        return self.me == self.aggregator

    def sum(self, name: str, values: list, *, exact: bool = False) -> list | None:
        """Contributes reals (wide fixed point) to round ``name``; the aggregator gets their sums
        over every organization (exact rationals with ``exact``), the others ``None``."""
        words = fixed.encode_wide(values, len(self.participants))
        self.node.contribute_words(name, words, participants=self.participants, aggregator=self.aggregator,
                                   timeout=self.timeout)
        if not self.aggregating:
            return None
        total = self.node.secure_sum_words(name, participants=self.participants, timeout=self.timeout)
        return fixed.decode_wide(total, exact=exact)

    def count(self, name: str, counts: list[int]) -> list[int] | None:
        """Contributes counts (one word each) to round ``name``."""
        self.node.contribute(name, counts, participants=self.participants, aggregator=self.aggregator,
                             timeout=self.timeout)
        if not self.aggregating:
            return None
        return self.node.secure_sum(name, participants=self.participants, timeout=self.timeout)

    def tell(self, topic: str, value: Any) -> None:
        """Sends ``value`` (JSON) from the aggregator to every other organization."""
        for org in self.participants:
            if org != self.me:
                self.node.send(org, topic, json.dumps(value).encode())

    def hear(self, topic: str) -> Any:
        """What the aggregator told on ``topic``."""
        return json.loads(self.node.receive_one(topic, sender=self.aggregator).body)


# -- the data ------------------------------------------------------------------------------------


def load(node: Node, spec: dict):
    """The data source ``spec["data"]``, filtered by ``spec["where"]`` (a pandas query)."""
    label = spec.get("data")
    if not isinstance(label, str) or not label:
        raise AnalysisError("bad_input", 'name the data source: "data": "<label>"')
    try:
        frame = node.read_dataframe(label)
    except FileNotFoundError:
        raise AnalysisError("no_data", f"this node grants no data source {label!r} to the analysis") from None
    where = spec.get("where")
    if where:
        try:
            frame = frame.query(where, engine="python")
        except Exception as e:  # a query is the researcher's text; any failure is theirs to fix
            raise AnalysisError("bad_filter", f"the filter {where!r} does not apply here: {e}") from None
    return frame


def numeric(frame, column: str):
    """Column ``column`` as floats, missing values as NaN; refused if absent or not numeric."""
    import pandas as pd

    if column not in frame.columns:
        raise AnalysisError("column_missing", f"the data has no column {column!r}")
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        raise AnalysisError("not_numeric", f"column {column!r} has {int(bad.sum())} value(s) that are not numbers")
    return values.astype(float)


def enough(rows: int, what: str) -> None:
    if rows < MIN_ROWS:
        raise AnalysisError("too_few_rows", f"{rows} row(s) with {what} here, fewer than {MIN_ROWS}")


def columns_of(spec: dict, key: str = "columns") -> list[str]:
    columns = spec.get(key)
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise AnalysisError("bad_input", f'name the columns: "{key}": ["…"]')
    return columns


# -- summary -------------------------------------------------------------------------------------


def _edges(histogram: dict) -> tuple[float, float, int]:
    low, high, bins = float(histogram["min"]), float(histogram["max"]), int(histogram.get("bins", 100))
    if not (high > low and 0 < bins <= 10_000):
        raise AnalysisError("bad_input", "a histogram is {\"min\": a, \"max\": b > a, \"bins\": 1 to 10000}")
    return low, high, bins


def summary_local(frame, spec: dict) -> list:
    import numpy as np

    values: list = []
    for column in columns_of(spec):
        x = numeric(frame, column)
        present = x.dropna().to_numpy()
        values += [len(present), len(x) - len(present), float(present.sum()), float((present * present).sum())]
        histogram = spec.get("histogram", {}).get(column)
        if histogram:
            low, high, bins = _edges(histogram)
            counts, _ = np.histogram(present.clip(low, high), bins=bins, range=(low, high))
            values += [int(c) for c in counts]
    enough(len(frame), "the filter")
    return values


def summary_combine(total: list, spec: dict, organizations: int) -> dict:
    out: dict = {}
    at = 0
    for column in columns_of(spec):
        n, missing, s, q = total[at:at + 4]
        at += 4
        n, missing = int(n), int(missing)
        stats: dict = {"count": n, "missing": missing}
        stats["mean"] = float(s / n) if n else None
        variance = (q - s * s / n) / (n - 1) if n > 1 else None
        stats["variance"] = float(variance) if variance is not None else None
        stats["std"] = math.sqrt(stats["variance"]) if variance is not None else None
        histogram = spec.get("histogram", {}).get(column)
        if histogram:
            low, high, bins = _edges(histogram)
            counts = [int(c) for c in total[at:at + bins]]
            at += bins
            stats["histogram"] = {"min": low, "max": high, "counts": counts}
            stats["quantiles"] = {str(p): _quantile(counts, low, high, p) for p in spec.get("quantiles", [0.25, 0.5, 0.75])}
        out[column] = stats
    return {"columns": out}


def _quantile(counts: list[int], low: float, high: float, p: float) -> float | None:
    """The ``p`` quantile read from a histogram, interpolated within its bin (off by at most one
    bin's width from the quantile of the rows)."""
    total = sum(counts)
    if not total:
        return None
    width = (high - low) / len(counts)
    target = p * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= target:
            return low + (i + (target - seen) / c) * width
        seen += c
    return high


# -- crosstab ------------------------------------------------------------------------------------


def _levels(spec: dict, column: str) -> list[str]:
    levels = spec.get("levels", {}).get(column)
    if not isinstance(levels, list) or not levels:
        raise AnalysisError("bad_input", f'give the levels of {column!r}: "levels": {{"{column}": ["…"]}}')
    return [str(v) for v in levels]


def _as_text(frame, column: str):
    if column not in frame.columns:
        raise AnalysisError("column_missing", f"the data has no column {column!r}")
    series = frame[column]
    return series.where(series.isna(), series.astype(str))


def crosstab_local(frame, spec: dict) -> list:
    row, col = spec.get("rows"), spec.get("columns")
    if not isinstance(row, str) or not isinstance(col, str):
        raise AnalysisError("bad_input", 'name the two columns: "rows": "…", "columns": "…"')
    rows, cols = _levels(spec, row), _levels(spec, col)
    a, b = _as_text(frame, row), _as_text(frame, col)
    missing = int((a.isna() | b.isna()).sum())
    counts = [[int(((a == r) & (b == c)).sum()) for c in cols] for r in rows]
    placed = sum(map(sum, counts))
    enough(len(frame), "the filter")
    return [v for line in counts for v in line] + [missing, len(frame) - missing - placed]


def crosstab_combine(total: list, spec: dict, organizations: int) -> dict:
    import numpy as np
    from scipy import stats

    rows, cols = _levels(spec, spec["rows"]), _levels(spec, spec["columns"])
    table = np.array(total[: len(rows) * len(cols)], dtype=np.int64).reshape(len(rows), len(cols))
    missing, excluded = total[-2:]
    out = {"row_levels": rows, "column_levels": cols, "table": table.tolist(), "missing": int(missing),
           "excluded": int(excluded)}
    keep_r, keep_c = table.sum(axis=1) > 0, table.sum(axis=0) > 0
    tested = table[keep_r][:, keep_c]
    if tested.shape[0] >= 2 and tested.shape[1] >= 2:
        chi2, p, dof, expected = stats.chi2_contingency(tested)
        out["test"] = {"chi2": float(chi2), "p": float(p), "dof": int(dof), "correction": bool(dof == 1),
                       "expected": expected.tolist(), "empty_levels_left_out": int((~keep_r).sum() + (~keep_c).sum())}
    return out


# -- correlation ---------------------------------------------------------------------------------


def _complete(frame, columns: list[str]):
    import numpy as np

    data = np.column_stack([numeric(frame, c).to_numpy() for c in columns])
    return data[~np.isnan(data).any(axis=1)]


def _cross(data) -> list:
    """N, the column sums and the upper triangle of the cross-products (i ≤ j)."""
    p = data.shape[1]
    products = data.T @ data
    return [len(data)] + [float(v) for v in data.sum(axis=0)] + [float(products[i, j]) for i in range(p) for j in range(i, p)]


def _uncross(total: list, p: int):
    n = total[0]
    sums = total[1:1 + p]
    products = [[Fraction(0)] * p for _ in range(p)]
    at = 1 + p
    for i in range(p):
        for j in range(i, p):
            products[i][j] = products[j][i] = total[at]
            at += 1
    return n, sums, products


def correlation_local(frame, spec: dict) -> list:
    data = _complete(frame, columns_of(spec))
    enough(len(data), "every column present")
    return _cross(data)


def correlation_combine(total: list, spec: dict, organizations: int) -> dict:
    columns = columns_of(spec)
    p = len(columns)
    n, sums, products = _uncross(total, p)
    cov = [[products[i][j] - sums[i] * sums[j] / n for j in range(p)] for i in range(p)]
    matrix = [[float(cov[i][j] / Fraction(math.sqrt(cov[i][i] * cov[j][j]))) if cov[i][i] and cov[j][j] else None
               for j in range(p)] for i in range(p)]
    return {"columns": columns, "n": int(n), "matrix": matrix}


# -- linear regression ---------------------------------------------------------------------------


def _model_columns(spec: dict) -> tuple[str, list[str]]:
    outcome = spec.get("outcome")
    if not isinstance(outcome, str):
        raise AnalysisError("bad_input", 'name the outcome: "outcome": "…"')
    return outcome, columns_of(spec, "covariates")


def _design(frame, spec: dict):
    import numpy as np

    outcome, covariates = _model_columns(spec)
    data = _complete(frame, [outcome] + covariates)
    enough(len(data), "the outcome and every covariate present")
    y = data[:, 0]
    x = np.column_stack([np.ones(len(data)), data[:, 1:]])
    return x, y


def linear_local(frame, spec: dict) -> list:
    x, y = _design(frame, spec)
    p = x.shape[1]
    xtx = x.T @ x
    return ([len(y)] + [float(xtx[i, j]) for i in range(p) for j in range(i, p)]
            + [float(v) for v in x.T @ y] + [float(y @ y), float(y.sum())])


def _symmetric(values: list, p: int):
    import numpy as np

    m = np.zeros((p, p))
    at = 0
    for i in range(p):
        for j in range(i, p):
            m[i, j] = m[j, i] = float(values[at])
            at += 1
    return m


def _names(spec: dict) -> list[str]:
    return ["Intercept"] + _model_columns(spec)[1]


def linear_combine(total: list, spec: dict, organizations: int) -> dict:
    import numpy as np
    from scipy import stats

    p = len(_names(spec))
    n = int(total[0])
    k = p * (p + 1) // 2
    xtx = _symmetric(total[1:1 + k], p)
    xty = np.array([float(v) for v in total[1 + k:1 + k + p]])
    yty, ysum = total[1 + k + p:]
    beta = np.linalg.solve(xtx, xty)
    rss = float(yty) - 2 * beta @ xty + beta @ xtx @ beta
    df = n - p
    if df <= 0:
        raise AnalysisError("too_few_rows", f"{n} rows for {p} coefficients")
    sigma2 = rss / df
    se = np.sqrt(np.diag(np.linalg.inv(xtx)) * sigma2)
    t = beta / se
    tss = float(yty - ysum * ysum / n)
    return {"n": n, "df_resid": df, "rss": rss, "r2": 1 - rss / tss, "adj_r2": 1 - (rss / df) / (tss / (n - 1)),
            "coefficients": _table(_names(spec), beta, se, t, 2 * stats.t.sf(np.abs(t), df), "t")}


def _table(names, beta, se, statistic, p, label: str) -> list[dict]:
    return [{"name": name, "coef": float(b), "se": float(s), label: float(z), "p": float(q)}
            for name, b, s, z, q in zip(names, beta, se, statistic, p)]


# -- GLM by IRLS ---------------------------------------------------------------------------------

FAMILIES = ("logistic", "poisson")


def glm_design(frame, spec: dict):
    """The design matrix and outcome of a GLM, checked: a known family, and an outcome it takes."""
    import numpy as np

    family = spec.get("family")
    if family not in FAMILIES:
        raise AnalysisError("bad_input", f'"family" is one of {", ".join(FAMILIES)}')
    x, y = _design(frame, spec)
    if family == "logistic" and not np.isin(y, (0.0, 1.0)).all():
        raise AnalysisError("not_binary", "a logistic regression's outcome is 0 or 1")
    if family == "poisson" and ((y < 0).any() or (y != np.floor(y)).any()):
        raise AnalysisError("not_counts", "a Poisson regression's outcome is a count (0, 1, 2, …)")
    return x, y


def glm(rounds: Rounds, frame, spec: dict) -> dict | None:
    """Logistic or Poisson regression by iteratively reweighted least squares: each iteration
    one round of X'WX, X'Wz and the deviance at the current coefficients, which the aggregator
    solves and tells the others; the containers stay up for the whole fit."""
    import numpy as np
    from scipy import special, stats

    family = spec["family"]
    x, y = glm_design(frame, spec)
    max_iter, tol = int(spec.get("max_iter", 100)), float(spec.get("tol", 1e-10))
    p = len(_names(spec))
    beta = np.zeros(p)
    iteration = 0
    history: list[float] = []
    while True:
        eta = x @ beta
        if family == "logistic":
            mu = special.expit(eta)
            w = mu * (1 - mu)
            with np.errstate(divide="ignore", invalid="ignore"):
                deviance = -2 * float(np.sum(special.xlogy(y, mu) + special.xlog1py(1 - y, -mu)))
        else:
            mu = np.exp(eta)
            w = mu
            deviance = 2 * float(np.sum(special.xlogy(y, y) - special.xlogy(y, mu) - (y - mu)))
        z = eta + (y - mu) / w
        xtwx = (x * w[:, None]).T @ x
        local = [float(xtwx[i, j]) for i in range(p) for j in range(i, p)] + [float(v) for v in x.T @ (w * z)]
        local.append(deviance)
        total = rounds.sum(f"glm-{iteration}", local)
        if rounds.aggregating:
            k = p * (p + 1) // 2
            information = _symmetric(total[:k], p)
            history.append(float(total[-1]))
            try:
                new = np.linalg.solve(information, np.array(total[k:k + p], dtype=float))
            except np.linalg.LinAlgError:
                rounds.tell(f"glm-beta-{iteration}", {"stop": "singular"})
                raise AnalysisError("singular", "X'WX is singular: a covariate is constant or collinear") from None
            step = float(np.max(np.abs(new - beta)))
            converged = step <= tol * (1 + float(np.max(np.abs(new))))
            final = converged or iteration + 1 >= max_iter
            rounds.tell(f"glm-beta-{iteration}", {"beta": new.tolist(), "final": final})
            beta = new
        else:
            told = rounds.hear(f"glm-beta-{iteration}")
            if "stop" in told:
                return None
            beta, final = np.array(told["beta"]), told["final"]
            converged = None
        iteration += 1
        if final:
            break
    # The deviance and X'WX at the final coefficients, and what the null model and the
    # likelihood need.
    eta = x @ beta
    if family == "logistic":
        mu = special.expit(eta)
        w = mu * (1 - mu)
        deviance = -2 * float(np.sum(special.xlogy(y, mu) + special.xlog1py(1 - y, -mu)))
        extra = 0.0
    else:
        mu = np.exp(eta)
        w = mu
        deviance = 2 * float(np.sum(special.xlogy(y, y) - special.xlogy(y, mu) - (y - mu)))
        extra = float(np.sum(special.gammaln(y + 1)))
    xtwx = (x * w[:, None]).T @ x
    local = [float(xtwx[i, j]) for i in range(p) for j in range(i, p)]
    local += [deviance, float(len(y)), float(y.sum()), float(np.sum(special.xlogy(y, y))), extra]
    total = rounds.sum("glm-final", local)
    if not rounds.aggregating:
        return None
    k = p * (p + 1) // 2
    information = _symmetric(total[:k], p)
    deviance, n, ysum, ylogy, lgamma = (float(v) for v in total[k:])
    se = np.sqrt(np.diag(np.linalg.inv(information)))
    zvalues = beta / se
    mean = ysum / n
    if family == "logistic":
        null = -2 * (special.xlogy(ysum, mean) + special.xlogy(n - ysum, 1 - mean))
        llf = -deviance / 2
    else:
        null = 2 * (ylogy - special.xlogy(ysum, mean))
        llf = -deviance / 2 + ylogy - ysum - lgamma
    return {"family": family, "n": int(n), "iterations": iteration, "converged": bool(converged),
            "deviance": deviance, "null_deviance": float(null), "llf": float(llf), "aic": float(-2 * llf + 2 * p),
            "coefficients": _table(_names(spec), beta, se, zvalues, 2 * stats.norm.sf(np.abs(zvalues)), "z")}


# -- Kaplan–Meier --------------------------------------------------------------------------------


def _grid(spec: dict) -> tuple[float, int]:
    unit, max_time = float(spec.get("unit", 1)), float(spec.get("max_time", 0))
    if not (unit > 0 and max_time > 0 and max_time / unit <= 100_000):
        raise AnalysisError("bad_input", 'a survival analysis needs "max_time" > 0 and a "unit" (1 by default), '
                                         "at most 100000 units")
    return unit, int(math.floor(max_time / unit)) + 1


def _groups(spec: dict) -> list[str] | None:
    group = spec.get("group")
    return _levels(spec, group) if group else None


def km_local(frame, spec: dict) -> list:
    import numpy as np

    unit, bins = _grid(spec)
    time, event = numeric(frame, spec.get("time", "time")), numeric(frame, spec.get("event", "event"))
    groups = _groups(spec)
    keep = time.notna() & event.notna()
    if spec.get("group"):
        labels = _as_text(frame, spec["group"])
        keep &= labels.notna()
    time, event = time[keep].to_numpy(), event[keep].to_numpy()
    if (time < 0).any() or (time > float(spec["max_time"])).any():
        raise AnalysisError("bad_input", f"a time outside 0 to max_time ({spec['max_time']}) here")
    if not np.isin(event, (0.0, 1.0)).all():
        raise AnalysisError("not_binary", "the event column is 0 (censored) or 1 (event)")
    enough(len(time), "a time and an event")
    index = np.floor(time / unit).astype(int)
    values: list = []
    for g in groups or [None]:
        chosen = np.ones(len(time), bool) if g is None else (labels[keep].to_numpy() == g)
        d = np.bincount(index[chosen & (event == 1)], minlength=bins)
        c = np.bincount(index[chosen & (event == 0)], minlength=bins)
        values += [int(v) for v in d] + [int(v) for v in c]
    return values


def km_combine(total: list, spec: dict, organizations: int) -> dict:
    import numpy as np
    from scipy import stats

    unit, bins = _grid(spec)
    groups = _groups(spec) or ["all"]
    z = stats.norm.ppf(1 - float(spec.get("alpha", 0.05)) / 2)
    curves = {}
    per_group = []
    for i, g in enumerate(groups):
        d = np.array(total[2 * i * bins:(2 * i + 1) * bins], dtype=float)
        c = np.array(total[(2 * i + 1) * bins:(2 * i + 2) * bins], dtype=float)
        at_risk = d.sum() + c.sum() - np.concatenate([[0], np.cumsum(d + c)[:-1]])
        per_group.append((d, at_risk))
        times = np.nonzero(d)[0]
        survival, lower, upper = [], [], []
        s, v = 1.0, 0.0
        for k in times:
            s *= 1 - d[k] / at_risk[k]
            v += d[k] / (at_risk[k] * (at_risk[k] - d[k])) if at_risk[k] > d[k] else math.inf
            survival.append(s)
            if 0 < s < 1 and math.isfinite(v):
                log_s = math.log(s)
                spread = z * math.sqrt(v) / abs(log_s)
                lower.append(math.exp(-math.exp(math.log(-log_s) + spread)))
                upper.append(math.exp(-math.exp(math.log(-log_s) - spread)))
            else:
                lower.append(0.0 if s == 0 else 1.0)
                upper.append(0.0 if s == 0 else 1.0)
        curves[g] = {"n": int(d.sum() + c.sum()), "events": int(d.sum()), "time": [float(k * unit) for k in times],
                     "at_risk": [int(at_risk[k]) for k in times], "observed": [int(d[k]) for k in times],
                     "survival": survival, "ci_lower": lower, "ci_upper": upper}
    out: dict = {"unit": unit, "curves": curves}
    if len(groups) >= 2:
        out["logrank"] = _logrank(per_group)
    return out


def _logrank(per_group) -> dict:
    """The log-rank test of equal survival across groups: observed minus expected events, and
    their covariance, summed over the event times; χ² with groups − 1 degrees of freedom."""
    import numpy as np
    from scipy import stats

    d = np.array([g[0] for g in per_group])  # groups × times
    n = np.array([g[1] for g in per_group])
    d_all, n_all = d.sum(axis=0), n.sum(axis=0)
    live = (d_all > 0) & (n_all > 0)
    d, n, d_all, n_all = d[:, live], n[:, live], d_all[live], n_all[live]
    expected = n * d_all / n_all
    k = len(per_group)
    denominator = n_all * n_all * (n_all - 1)
    factor = np.divide(d_all * (n_all - d_all), denominator, out=np.zeros_like(denominator), where=n_all > 1)
    v = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            v[i, j] = np.sum(factor * (n[i] * ((i == j) * n_all - n[j])))
    oe = (d - expected).sum(axis=1)
    chi2 = float(oe[:-1] @ np.linalg.solve(v[:-1, :-1], oe[:-1]))
    return {"chi2": chi2, "dof": k - 1, "p": float(stats.chi2.sf(chi2, k - 1)),
            "observed": d.sum(axis=1).astype(int).tolist(), "expected": expected.sum(axis=1).tolist()}


# -- running one -----------------------------------------------------------------------------------

ONE_ROUND: dict[str, tuple[Callable, Callable, bool]] = {
    # name: (local sums, combination at the aggregator, whether the sums are counts)
    "summary": (summary_local, summary_combine, False),
    "crosstab": (crosstab_local, crosstab_combine, True),
    "correlation": (correlation_local, correlation_combine, False),
    "linear": (linear_local, linear_combine, False),
    "kaplan_meier": (km_local, km_combine, True),
}
EXACT = {"summary", "correlation"}
NAMES = sorted(ONE_ROUND) + ["glm"]


def run(node: Node) -> None:
    """One job of an analysis: its organization's part, and the statistics where it aggregates."""
    job = node.job()
    try:
        spec = node.input_json()
        if not isinstance(spec, dict) or spec.get("analysis") not in NAMES:
            raise AnalysisError("bad_input", f'"analysis" is one of {", ".join(NAMES)}')
        rounds = Rounds(node, job, spec)
    except (AnalysisError, ValueError) as e:
        return _fail(node, e if isinstance(e, AnalysisError) else AnalysisError("bad_input", str(e)))
    name = spec["analysis"]
    # Every organization first says whether it can take part (1) or not (0), so that no one
    # waits for a part that will not come.
    problem, frame, local = None, None, None
    try:
        frame = load(node, spec)
        if name != "glm":
            local = ONE_ROUND[name][0](frame, spec)
        else:
            glm_design(frame, spec)
    except AnalysisError as e:
        problem = e
    ready = rounds.count("ready", [0 if problem else 1])
    if problem:
        return _fail(node, problem)
    if ready is not None and ready[0] < len(rounds.participants):
        if name == "glm":
            rounds.tell("glm-beta-0", {"stop": "not ready"})
        missing = len(rounds.participants) - ready[0]
        return _fail(node, AnalysisError("not_everyone", f"{missing} of {len(rounds.participants)} organizations "
                                                         "could not run the analysis; their results say why"))
    if ready is None and name != "glm":
        rounds_sum(rounds, name, local)
        return node.post_json({"analysis": name, "contributed": True})
    try:
        if name == "glm":
            out = glm(rounds, frame, spec)
        else:
            total = rounds_sum(rounds, name, local)
            out = ONE_ROUND[name][1](total, spec, len(rounds.participants))
    except AnalysisError as e:
        return _fail(node, e)
    if out is None:
        return node.post_json({"analysis": name, "contributed": True})
    node.post_json({"analysis": name, "organizations": len(rounds.participants), **out})


def rounds_sum(rounds: Rounds, name: str, local: list) -> list | None:
    if ONE_ROUND[name][2]:
        return rounds.count(name, local)
    return rounds.sum(name, local, exact=name in EXACT)


def _fail(node: Node, error: AnalysisError) -> None:
    node.post_json({"error": {"code": error.code, "message": error.message}})
    print(f"fedq analysis: {error.code}: {error.message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    from fedq_algorithm.node import run_in_container

    run_in_container(run, "analysis")
