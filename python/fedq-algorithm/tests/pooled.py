"""The analyses' cases and their answers on the pooled rows (pandas, scipy, statsmodels,
lifelines), shared by the mock federation's tests (``test_analysis.py``) and the test through
real nodes (``tests/integration/analyses.rs``), which runs this file:

    python pooled.py generate DIR SIZE...   registries' data in DIR/registry-<i>/patients, the
                                            cases in DIR/cases.json
    python pooled.py check DIR              DIR/results.json (each case's output) against the
                                            pooled rows; exits 1 naming what differs
    python pooled.py local DIR CASE         each registry's own sums for CASE (a one-round
                                            analysis), as reals and as the words its node
                                            contributes: what no one else may learn
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

RTOL = 1e-8

CASES = {
    "summary": {"analysis": "summary", "columns": ["age", "bmi"], "where": "sex == 'F'",
                "histogram": {"age": {"min": 18, "max": 91, "bins": 73}}, "quantiles": [0.25, 0.5, 0.75]},
    "crosstab": {"analysis": "crosstab", "rows": "smoker", "columns": "diagnosis",
                 "levels": {"smoker": ["no", "yes"], "diagnosis": ["0", "1"]}},
    "correlation": {"analysis": "correlation", "columns": ["age", "bmi", "visits"]},
    "linear": {"analysis": "linear", "outcome": "bmi", "covariates": ["age", "visits"]},
    "logistic": {"analysis": "glm", "family": "logistic", "outcome": "diagnosis", "covariates": ["age", "bmi"]},
    "poisson": {"analysis": "glm", "family": "poisson", "outcome": "visits", "covariates": ["age", "bmi"]},
    "kaplan_meier": {"analysis": "kaplan_meier", "time": "time", "event": "event", "group": "sex",
                     "levels": {"sex": ["F", "M"]}, "max_time": 3650},
    "cox": {"analysis": "cox", "time": "time", "event": "event", "covariates": ["age", "bmi"], "max_time": 3650,
            "unit": 60},
}


def generate(folder: Path, sizes: list[int], seed: int = 7) -> list[Path]:
    """Each registry's patients (age, sex, bmi, smoker, diagnosis, visits, time, event), some
    values missing, as CSV in ``folder/registry-<i>/patients``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, n in enumerate(sizes):
        age = rng.integers(18, 91, n).astype(float)
        sex = rng.choice(["F", "M"], n)
        bmi = np.round(rng.normal(26 + i, 4, n), 2)
        smoker = rng.choice(["no", "yes"], n, p=[0.7, 0.3]).astype(object)
        eta = -6 + 0.06 * age + 0.08 * bmi + 0.5 * (smoker == "yes")
        diagnosis = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
        visits = rng.poisson(np.exp(-1 + 0.02 * age + 0.3 * diagnosis))
        time = rng.integers(1, 3651, n)
        event = (rng.random(n) < 0.6).astype(int)
        frame = pd.DataFrame({"age": age, "sex": sex, "bmi": bmi, "smoker": smoker, "diagnosis": diagnosis,
                              "visits": visits, "time": time, "event": event})
        for column, share in (("age", 0.04), ("bmi", 0.06), ("smoker", 0.03)):
            frame.loc[rng.random(n) < share, column] = None
        path = folder / f"registry-{i}" / "patients"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def pooled(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def _close(what: str, got, want, rtol: float = RTOL, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=rtol, atol=atol,
                               err_msg=what)


def _equal(what: str, got, want) -> None:
    assert got == want, f"{what}: {got!r} != {want!r}"


def check_summary(out: dict, rows: pd.DataFrame) -> None:
    women = rows.query("sex == 'F'")
    for column in ("age", "bmi"):
        got, x = out["columns"][column], women[column]
        _equal(f"{column}'s count and missing", (got["count"], got["missing"]), (int(x.count()), int(x.isna().sum())))
        _close(f"{column}'s mean, variance, sd", [got["mean"], got["variance"], got["std"]], [x.mean(), x.var(), x.std()])
    for p, q in out["columns"]["age"]["quantiles"].items():
        assert abs(q - women["age"].quantile(float(p))) <= 1.0, f"age's {p} quantile {q} is more than a bin off"


def check_crosstab(out: dict, rows: pd.DataFrame) -> None:
    table = pd.crosstab(rows["smoker"], rows["diagnosis"])
    _equal("the table", out["table"], table.to_numpy().tolist())
    _equal("missing and excluded", (out["missing"], out["excluded"]), (int(rows["smoker"].isna().sum()), 0))
    chi2, p, dof, expected = stats.chi2_contingency(table.to_numpy())
    _close("chi2 and p", [out["test"]["chi2"], out["test"]["p"]], [chi2, p])
    _close("expected", out["test"]["expected"], expected)
    _equal("dof", out["test"]["dof"], dof)


def check_correlation(out: dict, rows: pd.DataFrame) -> None:
    complete = rows[["age", "bmi", "visits"]].dropna()
    _equal("n", out["n"], len(complete))
    _close("the matrix", out["matrix"], complete.corr().to_numpy())


def check_linear(out: dict, rows: pd.DataFrame) -> None:
    import statsmodels.api as sm

    data = rows[["bmi", "age", "visits"]].dropna()
    fit = sm.OLS(data["bmi"], sm.add_constant(data[["age", "visits"]])).fit()
    _equal("n and df", (out["n"], out["df_resid"]), (int(fit.nobs), int(fit.df_resid)))
    table = out["coefficients"]
    for key, want in (("coef", fit.params), ("se", fit.bse), ("t", fit.tvalues)):
        _close(key, [c[key] for c in table], want)
    _close("p", [c["p"] for c in table], fit.pvalues, rtol=1e-6)
    _close("R²", [out["r2"], out["adj_r2"]], [fit.rsquared, fit.rsquared_adj])


def _check_glm(out: dict, rows: pd.DataFrame, family: str) -> None:
    import statsmodels.api as sm

    outcome = "diagnosis" if family == "logistic" else "visits"
    data = rows[[outcome, "age", "bmi"]].dropna()
    link = sm.families.Binomial() if family == "logistic" else sm.families.Poisson()
    fit = sm.GLM(data[outcome], sm.add_constant(data[["age", "bmi"]]), family=link).fit(tol=1e-12)
    _equal("n and convergence", (out["n"], out["converged"]), (len(data), True))
    table = out["coefficients"]
    _close("coef", [c["coef"] for c in table], fit.params)
    _close("se and z", [c["se"] for c in table] + [c["z"] for c in table], list(fit.bse) + list(fit.tvalues), rtol=1e-7)
    _close("deviance, null deviance, llf, aic", [out["deviance"], out["null_deviance"], out["llf"], out["aic"]],
           [fit.deviance, fit.null_deviance, fit.llf, fit.aic])


def check_logistic(out: dict, rows: pd.DataFrame) -> None:
    _check_glm(out, rows, "logistic")


def check_poisson(out: dict, rows: pd.DataFrame) -> None:
    _check_glm(out, rows, "poisson")


def check_kaplan_meier(out: dict, rows: pd.DataFrame) -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    for group in ("F", "M"):
        chosen = rows[rows["sex"] == group]
        fit = KaplanMeierFitter().fit(chosen["time"], chosen["event"])
        curve = out["curves"][group]
        times = np.array(curve["time"])
        _equal(f"{group}'s n and events", (curve["n"], curve["events"]), (len(chosen), int(chosen["event"].sum())))
        _close(f"{group}'s survival", curve["survival"], fit.survival_function_at_times(times).to_numpy())
        bands = fit.confidence_interval_.loc[times]
        _close(f"{group}'s lower band", curve["ci_lower"], bands.iloc[:, 0].to_numpy(), rtol=1e-7)
        _close(f"{group}'s upper band", curve["ci_upper"], bands.iloc[:, 1].to_numpy(), rtol=1e-7)
    test = multivariate_logrank_test(rows["time"], rows["sex"], rows["event"])
    _close("the log-rank test", [out["logrank"]["chi2"], out["logrank"]["p"]], [test.test_statistic, test.p_value])


def check_cox(out: dict, rows: pd.DataFrame) -> None:
    from lifelines import CoxPHFitter

    # The times in units of 60 days, as the analysis counts them (``unit``, coarse enough that
    # every unit holds several patients): ties, which lifelines handles as Efron did.
    data = rows[["time", "event", "age", "bmi"]].dropna().assign(time=lambda f: np.floor(f["time"] / 60))
    fit = CoxPHFitter().fit(data, "time", "event", fit_options={"precision": 1e-12})
    _equal("n, events and convergence", (out["n"], out["events"], out["converged"]),
           (len(data), int(data["event"].sum()), True))
    table = out["coefficients"]
    # The data's times do not depend on the covariates: coefficients near 0, compared to 1e-10
    # absolute as well (lifelines' own convergence), z with them.
    _close("coef", [c["coef"] for c in table], fit.params_.to_numpy(), atol=1e-10)
    _close("se", [c["se"] for c in table], fit.standard_errors_.to_numpy(), rtol=1e-7)
    _close("z", [c["z"] for c in table], fit.summary["z"].to_numpy(), rtol=1e-7, atol=1e-7)
    _close("log-likelihood", out["log_likelihood"], fit.log_likelihood_)


CHECKS = {name: globals()[f"check_{name}"] for name in CASES}


def local_sums(folder: Path, case: str) -> list:
    """Per registry, in order: ``[reals, words]``, the sums its job contributes for ``case``."""
    from fedq_algorithm import analysis, fixed

    spec = CASES[case]
    paths = sorted(folder.glob("registry-*/patients"))
    out = []
    for path in paths:
        frame = pd.read_csv(path)
        if spec.get("where"):
            frame = frame.query(spec["where"], engine="python")
        reals = [float(v) for v in analysis.ONE_ROUND[spec["analysis"]][0](frame, spec, 3)]
        out.append([reals, fixed.encode_wide(reals, len(paths))])
    return out


def main(argv: list[str]) -> int:
    command, folder = argv[1], Path(argv[2])
    if command == "generate":
        generate(folder, [int(n) for n in argv[3:]])
        (folder / "cases.json").write_text(json.dumps(CASES))
        return 0
    if command == "local":
        print(json.dumps(local_sums(folder, argv[3])))
        return 0
    rows = pooled(sorted(folder.glob("registry-*/patients")))
    results = json.loads((folder / "results.json").read_text())
    failed = []
    for name, check in CHECKS.items():
        try:
            check(results[name], rows)
        except (AssertionError, KeyError, TypeError) as e:
            failed.append(f"{name}: {e}")
    print("\n".join(failed) or f"all {len(CHECKS)} analyses equal the pooled computation")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
