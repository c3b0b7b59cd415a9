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
from fedq_algorithm.node import Job, Node, NodeError


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

    def sum(self, name: str, values: list, *, exact: bool = False, noise: int = 0) -> list | None:
        """Contributes reals (wide fixed point) to round ``name``; the aggregator gets their sums
        over every organization (exact rationals with ``exact``), the others ``None``. With
        ``noise``, the first ``noise`` values are replaced by uniformly random words: what a
        registry that cannot go on sends, so that the round's sum hides the others' parts (zeros
        would hand the aggregator the sum of the rest, one registry's own with three)."""
        import secrets

        words = fixed.encode_wide(values, len(self.participants))
        words[:2 * noise] = [secrets.randbits(64) for _ in range(2 * noise)]
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
        """Sends ``value`` (JSON) from the aggregator to every other organization, to all at
        once: each send waits for the broker's confirm, and an iteration of a GLM waits for the
        last one."""
        from concurrent.futures import ThreadPoolExecutor

        body = json.dumps(value).encode()
        others = [org for org in self.participants if org != self.me]
        # Fewer at once than the node's limits.job_concurrent_requests could be.
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(others)))) as pool:
            for sent in [pool.submit(self.node.send, org, topic, body) for org in others]:
                sent.result()

    def hear(self, topic: str) -> Any:
        """What the aggregator told on ``topic``, within twice the rounds' timeout (the
        aggregator itself may wait that long for the slowest part)."""
        try:
            message = self.node.receive_one(topic, sender=self.aggregator, timeout=2 * self.timeout)
        except TimeoutError:
            raise AnalysisError("no_answer", f"the aggregator told nothing on {topic} within {2 * self.timeout:g} "
                                             "s; its result says why") from None
        return json.loads(message.body)


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
            # The kind alone: pandas' message may quote a value of the data.
            raise AnalysisError("bad_filter", f"the filter {where!r} does not apply here "
                                              f"({type(e).__name__})") from None
    return frame


def numeric(frame, column: str):
    """Column ``column`` as floats, missing values as NaN; refused if absent or not numeric."""
    import pandas as pd

    if column not in frame.columns:
        raise AnalysisError("column_missing", f"the data has no column {column!r}")
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    # An infinity is no number a sum can carry: refused like text, before any round.
    bad = (values.isna() & frame[column].notna()) | values.isin([math.inf, -math.inf])
    if bad.any():
        raise AnalysisError("not_numeric", f"column {column!r} has values that are not numbers")
    return values


def enough(rows: int, what: str, minimum: int) -> None:
    if rows < minimum:
        raise AnalysisError("too_few_rows", f"fewer than {minimum} rows with {what} here (the node's "
                                            "policy.min_cell_count)")


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


def summary_local(frame, spec: dict, minimum: int) -> list:
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
    enough(len(frame), "the filter", minimum)
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


def _label(value) -> str:
    """A category as text, the same whatever type the data or the request gave it: an integral
    number is written without a fraction, for a column of integers with a missing value is read
    as floats (1.0), while the levels say 1."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # a numpy scalar
        return _label(value.item())
    return str(value)


def _levels(spec: dict, column: str) -> list[str]:
    levels = spec.get("levels", {}).get(column)
    if not isinstance(levels, list) or not levels:
        raise AnalysisError("bad_input", f'give the levels of {column!r}: "levels": {{"{column}": ["…"]}}')
    return [_label(v) for v in levels]


def _as_text(frame, column: str):
    if column not in frame.columns:
        raise AnalysisError("column_missing", f"the data has no column {column!r}")
    series = frame[column]
    return series.map(_label).where(series.notna(), None)


def crosstab_local(frame, spec: dict, minimum: int) -> list:
    row, col = spec.get("rows"), spec.get("columns")
    if not isinstance(row, str) or not isinstance(col, str):
        raise AnalysisError("bad_input", 'name the two columns: "rows": "…", "columns": "…"')
    rows, cols = _levels(spec, row), _levels(spec, col)
    a, b = _as_text(frame, row), _as_text(frame, col)
    missing = int((a.isna() | b.isna()).sum())
    counts = [[int(((a == r) & (b == c)).sum()) for c in cols] for r in rows]
    placed = sum(map(sum, counts))
    enough(len(frame), "the filter", minimum)
    # A cell of one or two patients here is refused even though only the sums leave: the
    # data owner's minimum holds for its own rows (as DataSHIELD's nfilter.tab does).
    if any(0 < c < minimum for line in counts for c in line):
        raise AnalysisError("small_cell", f"a cell of the table has fewer than {minimum} rows here (the node's "
                                          "policy.min_cell_count); coarsen the levels or widen the filter")
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


def correlation_local(frame, spec: dict, minimum: int) -> list:
    data = _complete(frame, columns_of(spec))
    enough(len(data), "every column present", minimum)
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


def _design(frame, spec: dict, minimum: int):
    import numpy as np

    outcome, covariates = _model_columns(spec)
    data = _complete(frame, [outcome] + covariates)
    enough(len(data), "the outcome and every covariate present", minimum)
    y = data[:, 0]
    x = np.column_stack([np.ones(len(data)), data[:, 1:]])
    return x, y


def linear_local(frame, spec: dict, minimum: int) -> list:
    x, y = _design(frame, spec, minimum)
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


def glm_design(frame, spec: dict, minimum: int):
    """The design matrix and outcome of a GLM, checked: a known family, and an outcome it takes."""
    import numpy as np

    family = spec.get("family")
    if family not in FAMILIES:
        raise AnalysisError("bad_input", f'"family" is one of {", ".join(FAMILIES)}')
    x, y = _design(frame, spec, minimum)
    if family == "logistic" and not np.isin(y, (0.0, 1.0)).all():
        raise AnalysisError("not_binary", "a logistic regression's outcome is 0 or 1")
    if family == "poisson" and ((y < 0).any() or (y != np.floor(y)).any()):
        raise AnalysisError("not_counts", "a Poisson regression's outcome is a count (0, 1, 2, …)")
    return x, y


def _xlogy(a, b):
    """a·log(b), 0 where a is 0 (scipy's ``xlogy``, in numpy: the GLM's containers need not
    import scipy, which takes longer than a whole iteration)."""
    import numpy as np

    a = np.asarray(a, dtype=float)
    return np.where(a == 0, 0.0, a * np.log(np.where(a == 0, 1.0, b)))


def _two_sided_normal(z):
    """2·P(Z > |z|) for a standard normal Z, as erfc(|z| / √2)."""
    return [math.erfc(abs(float(v)) / math.sqrt(2)) if math.isfinite(v) else math.nan for v in z]


def _irls_sums(family: str, x, y, beta) -> tuple[list, float]:
    """One registry's part of an IRLS step at ``beta``: the upper triangle of X'WX, X'Wz and
    the deviance. As statsmodels does, the weights use the mean clipped to (ε, 1 − ε) and X'Wz is
    X'(W·η + y − μ), so that a fitted mean at 0 or 1 gives no division by zero; the mean is
    statsmodels' inverse logit, 1 / (1 + e^−η)."""
    import numpy as np

    eps = np.finfo(float).eps
    eta = x @ beta
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if family == "logistic":
            mu = 1.0 / (1.0 + np.exp(-eta))
            clipped = np.clip(mu, eps, 1 - eps)
            w = clipped * (1 - clipped)
            # y is 0 or 1 (checked): y·log μ + (1 − y)·log(1 − μ), term by term.
            deviance = -2 * float(np.sum(np.where(y > 0, np.log(clipped), np.log1p(-clipped))))
        else:
            mu = np.exp(eta)
            w = np.maximum(mu, eps)
            deviance = 2 * float(np.sum(_xlogy(y, y) - _xlogy(y, mu) - (y - mu)))
        xtwx = (x * w[:, None]).T @ x
        xtwz = x.T @ (w * eta + y - mu)
    p = x.shape[1]
    local = [float(xtwx[i, j]) for i in range(p) for j in range(i, p)] + [float(v) for v in xtwz]
    if not all(map(math.isfinite, local)) or not math.isfinite(deviance):
        raise AnalysisError("diverged", "the fit diverges here: the linear predictor overflows (a perfect "
                                        "separation, or a covariate on a huge scale); rescale or drop covariates")
    return local, deviance


def _round_of_sums(rounds: Rounds, name: str, topic: str, compute: Callable[[], list], size: int,
                   problem: AnalysisError | None) -> tuple[Any, list | None]:
    """One round of a fit that runs over several (a GLM, a Cox model): this registry's ``size``
    sums from ``compute`` and a flag, 1 if it cannot go on (its data does not fit, or its sums
    fail): then it sends random words with the flag and fails with its reason. The aggregator
    gets the sums, or, if any flag is set, tells everyone on ``topic`` to stop and fails; the
    others hear what it tells on ``topic``. Returns (what was told, or ``None`` where the
    aggregator said stop, and the sums, at the aggregator)."""
    local = None
    if problem is None:
        try:
            local = compute()
            _encodable(local, len(rounds.participants), counts=False)
        except AnalysisError as e:
            problem = e
        except Exception as e:  # noqa: BLE001 - the others must not wait for this part
            problem = _local_failure(e)
    if problem:
        local = [0.0] * size
    try:
        total = rounds.sum(name, local + [1.0 if problem else 0.0], noise=size if problem else 0)
    except Exception:
        if rounds.aggregating:  # the others wait for what it tells: tell them to stop
            rounds.tell(topic, {"stop": "no sum"})
        raise
    if not rounds.aggregating:
        if problem:
            raise problem
        told = rounds.hear(topic)
        return (None if "stop" in told else told), None
    failed = round(float(total[-1]))
    if problem or failed:
        rounds.tell(topic, {"stop": "not everyone"})
        if problem:
            raise problem
        raise AnalysisError("not_everyone", f"{failed} of {len(rounds.participants)} organizations could not fit the "
                                            "model; their results say why")
    return None, total


def glm(rounds: Rounds, frame, problem: AnalysisError | None, spec: dict) -> dict | None:
    """Logistic or Poisson regression by iteratively reweighted least squares: each iteration
    one round of X'WX, X'Wz and the deviance at the current coefficients (the first one also
    the null model's sums), which the aggregator solves and tells the others; the containers
    stay up for the whole fit. Every round carries a flag, 1 from a registry that cannot go on
    (its data does not fit, or diverges): it contributes zeros and the flag, fails with its
    reason, and the aggregator stops everyone at once. ``problem`` is this registry's, if its
    data could not even be read."""
    import numpy as np

    family = spec["family"]
    names = _names(spec)
    p, k = len(names), len(names) * (len(names) + 1) // 2
    max_iter, tol = int(spec.get("max_iter", 100)), float(spec.get("tol", 1e-10))
    x = y = None
    if problem is None:
        try:
            x, y = glm_design(frame, spec, rounds.node.min_cell_count)
        except AnalysisError as e:
            problem = e
        except Exception as e:  # noqa: BLE001 - the others must not wait for this part
            problem = _local_failure(e)
    beta = np.zeros(p)
    iteration, converged, information, deviance = 0, False, None, 0.0
    while True:
        extra = 4 if iteration == 0 else 0

        def local_sums() -> list:
            sums, dev = _irls_sums(family, x, y, beta)
            local = sums + [dev]
            if extra:
                lgamma = 0.0
                if family == "poisson":
                    lgamma = math.fsum(math.lgamma(v + 1) for v in y.tolist())
                local += [float(len(y)), float(y.sum()), float(np.sum(_xlogy(y, y))), lgamma]
            return local

        told, total = _round_of_sums(rounds, f"glm-{iteration}", f"glm-beta-{iteration}", local_sums,
                                     k + p + 1 + extra, problem)
        if not rounds.aggregating:
            if told is None:
                return None
            beta, final = np.array(told["beta"]), told["final"]
        else:
            if extra:
                null_sums = [float(v) for v in total[k + p + 1:k + p + 5]]
            information = _symmetric(total[:k], p)
            deviance = float(total[k + p])
            try:
                new = np.linalg.solve(information, np.array(total[k:k + p], dtype=float))
            except np.linalg.LinAlgError:
                rounds.tell(f"glm-beta-{iteration}", {"stop": "singular"})
                raise AnalysisError("singular", "X'WX is singular: a covariate is constant or collinear") from None
            step = float(np.max(np.abs(new - beta)))
            converged = step <= tol * (1 + float(np.max(np.abs(new))))
            final = converged or iteration + 1 >= max_iter or not np.all(np.isfinite(new))
            rounds.tell(f"glm-beta-{iteration}", {"beta": new.tolist(), "final": bool(final)})
            beta = new
        iteration += 1
        if final:
            break
    if not rounds.aggregating:
        return None
    # As statsmodels: the covariance from the last step's X'WX (the weights before the last
    # update) and, at convergence, the deviance of the last step (its change is below tol).
    n, ysum, ylogy, lgamma = null_sums
    with np.errstate(invalid="ignore", divide="ignore"):  # a fit that did not converge: posted as null
        se = np.sqrt(np.diag(np.linalg.inv(information)))
        zvalues = beta / se
    mean = ysum / n
    if family == "logistic":
        null = -2 * (_xlogy(ysum, mean) + _xlogy(n - ysum, 1 - mean))
        llf = -deviance / 2
    else:
        null = 2 * (ylogy - _xlogy(ysum, mean))
        llf = -deviance / 2 + ylogy - ysum - lgamma
    return {"family": family, "n": int(n), "iterations": iteration, "converged": bool(converged),
            "deviance": deviance, "null_deviance": float(null), "llf": float(llf), "aic": float(-2 * llf + 2 * p),
            "coefficients": _table(names, beta, se, zvalues, _two_sided_normal(zvalues), "z")}


def _start(spec: dict, p: int):
    """The coefficients ``spec["beta"]`` an IRLS step starts from (zeros by default)."""
    import numpy as np

    beta = spec.get("beta", [0.0] * p)
    if (not isinstance(beta, list) or len(beta) != p
            or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in beta)):
        raise AnalysisError("bad_input", f'"beta" is {p} finite numbers: the intercept, then one per covariate')
    return np.array(beta, dtype=float)


def glm_step_local(frame, spec: dict, minimum: int) -> list:
    """One IRLS step at ``spec["beta"]``, for whoever drives the iterations from outside (one task
    per step): this registry's X'WX, X'Wz and deviance there."""
    x, y = glm_design(frame, spec, minimum)
    sums, deviance = _irls_sums(spec["family"], x, y, _start(spec, x.shape[1]))
    return sums + [deviance]


def glm_step_combine(total: list, spec: dict, organizations: int) -> dict:
    """The next coefficients from the step's sums, their standard errors from X'WX at the given
    ones, and the deviance at the given ones."""
    import numpy as np

    p = len(_names(spec))
    k = p * (p + 1) // 2
    information = _symmetric(total[:k], p)
    try:
        beta = np.linalg.solve(information, np.array(total[k:k + p], dtype=float))
    except np.linalg.LinAlgError:
        raise AnalysisError("singular", "X'WX is singular: a covariate is constant or collinear") from None
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.diag(np.linalg.inv(information)))
    return {"family": spec["family"], "beta": beta.tolist(), "se": se.tolist(), "deviance": float(total[k + p])}


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


def km_local(frame, spec: dict, minimum: int) -> list:
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
    enough(len(time), "a time and an event", minimum)
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


# -- Cox proportional hazards --------------------------------------------------------------------

TIES = ("efron", "breslow")


def cox_design(frame, spec: dict, minimum: int):
    """The complete cases of a Cox model: each time's unit on the grid, the events (0 or 1) and
    the covariates."""
    import numpy as np

    unit, bins = _grid(spec)
    time, event = spec.get("time"), spec.get("event")
    if not isinstance(time, str) or not isinstance(event, str):
        raise AnalysisError("bad_input", 'name the time and the event columns: "time": "…", "event": "…"')
    data = _complete(frame, [time, event] + columns_of(spec, "covariates"))
    enough(len(data), "a time, an event and every covariate present", minimum)
    times, events, x = data[:, 0], data[:, 1], data[:, 2:]
    if (times < 0).any() or (times > float(spec["max_time"])).any():
        raise AnalysisError("bad_input", f"a time outside 0 to max_time ({spec['max_time']}) here")
    if not np.isin(events, (0.0, 1.0)).all():
        raise AnalysisError("not_binary", "the event column is 0 (censored) or 1 (event)")
    return np.minimum(np.floor(times / unit).astype(int), bins - 1), events, x


def _cox_sums(at, events, xc, beta, used, tied, bins: int) -> list:
    """This registry's sums at ``beta``: for each unit of ``used`` (the units with an event
    anywhere) over the patients at risk then (their unit that one or later), and for each unit
    of ``tied`` (with two events or more, for Efron's ties only) over those with an event in it,
    Σw, Σw·x and Σw·xxᵀ (upper triangle), w = exp(x·β), x centred. A unit of one event needs
    no sums over its events, which would be that patient's own."""
    import numpy as np

    p = xc.shape[1]
    upper = np.triu_indices(p)
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp(xc @ beta)
        terms = np.column_stack([w, w[:, None] * xc, (w[:, None] * xc[:, upper[0]] * xc[:, upper[1]])])
    per_unit = np.zeros((bins, terms.shape[1]))
    np.add.at(per_unit, at, terms)
    at_risk = per_unit[::-1].cumsum(axis=0)[::-1]
    with_event = np.zeros_like(per_unit)
    np.add.at(with_event, at[events == 1], terms[events == 1])
    local = np.concatenate([at_risk[used].ravel(), with_event[tied].ravel()])
    if not np.all(np.isfinite(local)):
        raise AnalysisError("diverged", "the fit diverges here: exp(x·β) overflows (a covariate on a huge scale, "
                                        "or one that separates the events); rescale or drop covariates")
    return local.tolist()


def _cox_step(total, deaths, event_x, beta, ties: str, p: int):
    """The partial log-likelihood at ``beta``, its gradient and the information matrix, from the
    sums over every registry (Efron's or Breslow's handling of tied events)."""
    import numpy as np

    k = 1 + p + p * (p + 1) // 2
    values = np.array(total, dtype=float)
    at_risk = values[:len(deaths) * k].reshape(len(deaths), k)
    tied = iter(values[len(deaths) * k:].reshape(-1, k))
    loglik, gradient, information = float(event_x @ beta), event_x.copy(), np.zeros((p, p))
    for risk, d in zip(at_risk, deaths):
        efron = ties == "efron" and d > 1
        event = next(tied) if efron else np.zeros(k)
        share = np.arange(d) / d if efron else np.zeros(d)
        phi = risk[0] - share * event[0]
        first = (risk[1:1 + p][None, :] - share[:, None] * event[1:1 + p][None, :]) / phi[:, None]
        second = (_symmetric(risk[1 + p:], p)[None] - share[:, None, None] * _symmetric(event[1 + p:], p)[None]) \
            / phi[:, None, None]
        loglik -= float(np.sum(np.log(phi)))
        gradient -= first.sum(axis=0)
        information += second.sum(axis=0) - first.T @ first
    return loglik, gradient, information


def cox(rounds: Rounds, frame, problem: AnalysisError | None, spec: dict) -> dict | None:
    """Cox proportional hazards by Newton–Raphson on the partial likelihood: a first round of
    the events per unit of time, the covariates' sums and the events' (the aggregator tells the
    means, to centre on, and the units with an event), then per iteration one round of the
    sums at risk and at the events per such unit, which the aggregator turns into the next β
    (halving a step that lowers the likelihood). The containers stay up for the whole fit; a
    registry that cannot go on sends noise and its flag, and everyone stops, as for a GLM."""
    import numpy as np

    ties = spec.get("ties", "efron")
    names = columns_of(spec, "covariates")
    p = len(names)
    max_iter, tol = int(spec.get("max_iter", 100)), float(spec.get("tol", 1e-10))
    unit, bins = _grid(spec)
    at = events = x = None
    if problem is None:
        try:
            at, events, x = cox_design(frame, spec, rounds.node.min_cell_count)
        except AnalysisError as e:
            problem = e
        except Exception as e:  # noqa: BLE001 - the others must not wait for this part
            problem = _local_failure(e)

    def first_sums() -> list:
        deaths = np.bincount(at[events == 1], minlength=bins)
        patients = np.bincount(at, minlength=bins)
        return ([float(len(x))] + x.sum(axis=0).tolist() + x[events == 1].sum(axis=0).tolist()
                + [float(v) for v in deaths] + [float(v) for v in patients])

    told, total = _round_of_sums(rounds, "cox-0", "cox-told-0", first_sums, 1 + 2 * p + 2 * bins, problem)
    if rounds.aggregating:
        n = total[0]
        means = np.array(total[1:1 + p]) / n
        event_x = np.array(total[1 + p:1 + 2 * p])
        per_unit = np.rint(np.array(total[1 + 2 * p:1 + 2 * p + bins])).astype(int)
        used = np.flatnonzero(per_unit > 0)
        deaths = per_unit[used]
        event_x = event_x - deaths.sum() * means
        tied = used[deaths > 1] if ties == "efron" else used[:0]
        # What the iterations' sums tell apart: the patients whose unit lies between two units
        # with an event (the difference of their at-risk sums), and a tied unit's events. Each
        # such group holds at least the aggregator's policy.min_cell_count patients, or none.
        patients = np.rint(np.array(total[1 + 2 * p + bins:1 + 2 * p + 2 * bins])).astype(int)
        between = [int(patients[start:end].sum()) for start, end in zip(used, list(used[1:]) + [bins])]
        groups = between + [int(d) for d, unit in zip(deaths, used) if unit in set(tied.tolist())]
        minimum = rounds.node.min_cell_count
        if any(0 < g < minimum for g in groups):
            rounds.tell("cox-told-0", {"stop": "small groups"})
            raise AnalysisError("small_cell", f"fewer than {minimum} patients have their time between two units with "
                                              "an event, or an event in a tied unit (the aggregator's "
                                              "policy.min_cell_count): choose a larger unit")
        rounds.tell("cox-told-0", {"means": means.tolist(), "used": used.tolist(), "tied": tied.tolist()})
    elif told is None:
        return None
    else:
        means, used = np.array(told["means"]), np.array(told["used"], dtype=int)
        tied = np.array(told["tied"], dtype=int)
    xc = x - means if x is not None else None
    beta = np.zeros(p)
    previous = None  # (β, log-likelihood) of the last step taken
    iteration, converged, halvings = 0, False, 0
    while True:
        iteration += 1
        size = (len(used) + len(tied)) * (1 + p + p * (p + 1) // 2)
        told, total = _round_of_sums(rounds, f"cox-{iteration}", f"cox-told-{iteration}",
                                     lambda: _cox_sums(at, events, xc, beta, used, tied, bins), size, problem)
        if not rounds.aggregating:
            if told is None:
                return None
            beta, final = np.array(told["beta"]), told["final"]
        else:
            loglik, gradient, information = _cox_step(total[:size], deaths, event_x, beta, ties, p)
            if previous is not None and loglik < previous[1] - 1e-12 * abs(previous[1]) and halvings < 30:
                halvings += 1
                beta, final = (previous[0] + beta) / 2, False
            else:
                halvings = 0
                try:
                    new = beta + np.linalg.solve(information, gradient)
                except np.linalg.LinAlgError:
                    rounds.tell(f"cox-told-{iteration}", {"stop": "singular"})
                    raise AnalysisError("singular", "the information matrix is singular: a covariate is constant "
                                                    "or collinear") from None
                step = float(np.max(np.abs(new - beta)))
                converged = step <= tol * (1 + float(np.max(np.abs(new))))
                final = converged or iteration >= max_iter or not np.all(np.isfinite(new))
                previous, last = (beta, loglik), (loglik, information)
                beta = new
            rounds.tell(f"cox-told-{iteration}", {"beta": beta.tolist(), "final": bool(final)})
        if final:
            break
    if not rounds.aggregating:
        return None
    loglik, information = last
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.diag(np.linalg.inv(information)))
        z = beta / se
    table = _table(names, beta, se, z, _two_sided_normal(z), "z")
    for row, b in zip(table, beta):
        row["exp_coef"] = float(np.exp(b))
    return {"ties": ties, "n": int(round(n)), "events": int(deaths.sum()), "iterations": iteration,
            "converged": bool(converged), "log_likelihood": loglik, "coefficients": table}


# -- running one -----------------------------------------------------------------------------------

ONE_ROUND: dict[str, tuple[Callable, Callable, bool]] = {
    # name: (local sums, combination at the aggregator, whether the sums are counts)
    "summary": (summary_local, summary_combine, False),
    "crosstab": (crosstab_local, crosstab_combine, True),
    "correlation": (correlation_local, correlation_combine, False),
    "linear": (linear_local, linear_combine, False),
    "kaplan_meier": (km_local, km_combine, True),
    "glm_step": (glm_step_local, glm_step_combine, False),
}
EXACT = {"summary", "correlation"}
#: Over vertically partitioned data (``fedq_algorithm.vertical_analysis``).
VERTICAL = ("vertical_summary", "vertical_crosstab", "vertical_correlation", "vertical_linear")
#: Fits of several rounds, in containers that stay up for all of them.
FITS = ("glm", "cox")
NAMES = sorted(ONE_ROUND) + [*FITS, *VERTICAL]


def run(node: Node) -> None:
    """One job of an analysis: its organization's part, and the statistics where it aggregates."""
    job = node.job()
    try:
        spec = node.input_json()
        if not isinstance(spec, dict) or spec.get("analysis") not in NAMES:
            raise AnalysisError("bad_input", f'"analysis" is one of {", ".join(NAMES)}')
        name = spec["analysis"]
        if name in VERTICAL:
            from fedq_algorithm import vertical_analysis

            return vertical_analysis.run(node, spec)
        rounds = Rounds(node, job, spec)
        # What the request alone decides fails everywhere alike, before any round.
        if name == "glm":
            if spec.get("family") not in FAMILIES:
                raise AnalysisError("bad_input", f'"family" is one of {", ".join(FAMILIES)}')
            _names(spec)
        if name == "cox":
            if spec.get("ties", "efron") not in TIES:
                raise AnalysisError("bad_input", f'"ties" is one of {", ".join(TIES)}')
            columns_of(spec, "covariates")
            _grid(spec)
    except (AnalysisError, ValueError) as e:
        return _fail(node, e if isinstance(e, AnalysisError) else AnalysisError("bad_input", str(e)))
    problem, frame, local = None, None, None
    try:
        frame = load(node, spec)
        if name not in FITS:
            local = ONE_ROUND[name][0](frame, spec, node.min_cell_count)
            _encodable(local, len(rounds.participants), counts=ONE_ROUND[name][2])
    except AnalysisError as e:
        problem = e
    except Exception as e:  # noqa: BLE001 - whatever it is, the others must not wait for this part
        problem = _local_failure(e)
    try:
        if name in FITS:
            out = (glm if name == "glm" else cox)(rounds, frame, problem, spec)
        else:
            out = _one_round(rounds, spec, local, problem)
    except AnalysisError as e:
        return _fail(node, e)
    except NodeError as e:  # a round that did not complete: the node's reason, typed
        return _fail(node, AnalysisError(e.code, e.message))
    if out is None:
        return node.post_json({"analysis": name, "contributed": True})
    node.post_json({"analysis": name, "organizations": len(rounds.participants), **_finite(out)})


def _one_round(rounds: Rounds, spec: dict, local: list | None, problem: AnalysisError | None) -> dict | None:
    """A one-round analysis: every organization first says whether it can take part (1) or
    not (0), so that no one waits for a part that will not come; then the sums."""
    name = spec["analysis"]
    ready = rounds.count("ready", [0 if problem else 1])
    if problem:
        raise problem
    if ready is not None and ready[0] < len(rounds.participants):
        missing = len(rounds.participants) - ready[0]
        raise AnalysisError("not_everyone", f"{missing} of {len(rounds.participants)} organizations "
                                            "could not run the analysis; their results say why")
    total = rounds_sum(rounds, name, local)
    if total is None:
        return None
    return ONE_ROUND[name][1](total, spec, len(rounds.participants))


def _encodable(local: list, participants: int, *, counts: bool) -> None:
    """Raises what encoding ``local`` for its round (as counts, or as wide reals) would, before
    anyone is told this registry takes part (without the value, which the encoding's own
    message quotes)."""
    try:
        if counts:
            fixed.encode(local, 0, participants)
        else:
            fixed.encode_wide(local, participants)
    except OverflowError:
        raise TOO_LARGE from None


TOO_LARGE = AnalysisError("too_large", "a sum of this registry's data is beyond the fixed-point encoding's range: "
                                       "scale the column down")


def _local_failure(error: Exception) -> AnalysisError:
    """An unexpected failure on this registry's data, told without the data: an exception's
    text may quote a value, so the researcher reads its kind and the node's log the rest."""
    import traceback

    # Where it failed, not what it said: the log may be shared with the requester.
    print(f"fedq analysis: {type(error).__name__} at", file=sys.stderr)
    print("".join(traceback.format_tb(error.__traceback__)), file=sys.stderr)
    return AnalysisError("local_failure", f"the data could not be analysed here ({type(error).__name__}); "
                                          "the node's log of the job says why")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
