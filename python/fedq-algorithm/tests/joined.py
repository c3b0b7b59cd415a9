"""The vertically partitioned analyses' cases and their checks against the joined rows.

Registry A holds age, sex and smoking of the patients, registry B their BMI, diagnosis and
visits, under the same pseudonymous ids, listed in different orders, each with missing values;
C holds nothing. ``generate`` writes the three organizations' folders; each check compares an
analysis's output with pandas, scipy and statsmodels on the rows joined by id, selected by both
parties' filters. Used by ``test_vertical_analysis.py`` (the mock) and by
``tests/integration/vertical.rs`` (real nodes)::

    python joined.py generate DIR ROWS     # DIR/A, DIR/B, DIR/C and DIR/cases.json
    python joined.py check DIR             # DIR/results.json: {case: output}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RTOL = 1e-8

CASES = {
    "summary": {"analysis": "vertical_summary",
                "a": {"data": "ages", "where": "age > 40", "columns": ["age"]},
                "b": {"data": "diagnoses", "where": "diagnosis == 'E11'", "columns": ["bmi", "visits"]}},
    "crosstab": {"analysis": "vertical_crosstab",
                 "a": {"data": "ages", "where": "age >= 30", "column": "sex", "levels": ["F", "M"]},
                 "b": {"data": "diagnoses", "column": "diagnosis", "levels": ["E11", "I10", "J45"]}},
    "correlation": {"analysis": "vertical_correlation",
                    "a": {"data": "ages", "columns": ["age"]},
                    "b": {"data": "diagnoses", "columns": ["bmi", "visits"]}},
    "linear": {"analysis": "vertical_linear",
               "a": {"data": "ages", "covariates": ["age", "smoker"]},
               "b": {"data": "diagnoses", "covariates": ["visits"], "outcome": "bmi", "where": "visits < 9"}},
}


def patients(rows: int, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"pt-{i:06d}" for i in rng.permutation(10 * rows)[:rows]]
    age = rng.integers(18, 90, rows).astype(float)
    sex = rng.choice(["F", "M"], rows)
    smoker = rng.integers(0, 2, rows).astype(float)
    diagnosis = rng.choice(["E11", "I10", "J45"], rows, p=[0.4, 0.35, 0.25])
    bmi = np.round(18 + 0.08 * age + 2.5 * smoker + rng.normal(0, 3, rows), 1)
    visits = rng.poisson(1 + age / 30).astype(float)
    frame = pd.DataFrame({"id": ids, "age": age, "sex": sex, "smoker": smoker, "bmi": bmi,
                          "diagnosis": diagnosis, "visits": visits})
    for column, share in (("age", 0.04), ("sex", 0.03), ("bmi", 0.05), ("visits", 0.02), ("diagnosis", 0.03)):
        frame.loc[rng.random(rows) < share, column] = np.nan
    return frame


def generate(folder: Path, rows: int) -> dict[str, Path]:
    """The three organizations' folders under ``folder``, A's and B's rows in different orders."""
    frame = patients(rows)
    dirs = {side: folder / side for side in "ABC"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    frame[["id", "age", "sex", "smoker"]].to_csv(dirs["A"] / "ages", index=False)
    frame[["id", "bmi", "diagnosis", "visits"]].iloc[::-1].to_csv(dirs["B"] / "diagnoses", index=False)
    (folder / "cases.json").write_text(json.dumps(CASES))
    return dirs


def joined(folder: Path) -> pd.DataFrame:
    a = pd.read_csv(folder / "A" / "ages", skipinitialspace=True)
    b = pd.read_csv(folder / "B" / "diagnoses", skipinitialspace=True)
    return a.merge(b, on="id", validate="one_to_one")


def cohort(rows: pd.DataFrame, case: dict) -> pd.DataFrame:
    keep = pd.Series(True, index=rows.index)
    for side in ("a", "b"):
        where = case[side].get("where")
        if where:
            keep &= rows.index.isin(rows.query(where, engine="python").index)
    return rows[keep]


def _close(what: str, got, want, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=rtol,
                               err_msg=what)


def check_summary(out: dict, rows: pd.DataFrame) -> None:
    chosen = cohort(rows, CASES["summary"])
    assert out["n"] == len(chosen), (out["n"], len(chosen))
    for column in ("age", "bmi", "visits"):
        values = chosen[column]
        got = out["columns"][column]
        assert (got["count"], got["missing"]) == (int(values.count()), int(values.isna().sum())), (column, got)
        _close(f"{column}: sum, mean, variance, std", [got["sum"], got["mean"], got["variance"], got["std"]],
               [values.sum(), values.mean(), values.var(), values.std()])


def check_crosstab(out: dict, rows: pd.DataFrame) -> None:
    from scipy import stats

    chosen = cohort(rows, CASES["crosstab"])
    table = pd.crosstab(chosen["sex"], chosen["diagnosis"]).reindex(index=["F", "M"], columns=["E11", "I10", "J45"],
                                                                     fill_value=0)
    assert out["table"] == table.to_numpy().tolist(), (out["table"], table)
    assert out["n"] == len(chosen)
    assert out["missing"] == int((chosen["sex"].isna() | chosen["diagnosis"].isna()).sum())
    chi2, p, dof, expected = stats.chi2_contingency(table.to_numpy())
    _close("χ², p", [out["test"]["chi2"], out["test"]["p"]], [chi2, p])
    assert out["test"]["dof"] == dof


def check_correlation(out: dict, rows: pd.DataFrame) -> None:
    complete = rows[["age", "bmi", "visits"]].dropna()
    assert out["n"] == len(complete), (out["n"], len(complete))
    _close("Pearson", out["matrix"], complete.corr().to_numpy())


def check_linear(out: dict, rows: pd.DataFrame) -> None:
    import statsmodels.api as sm

    data = cohort(rows, CASES["linear"])[["bmi", "age", "smoker", "visits"]].dropna()
    fit = sm.OLS(data["bmi"], sm.add_constant(data[["age", "smoker", "visits"]])).fit()
    assert (out["n"], out["df_resid"]) == (int(fit.nobs), int(fit.df_resid))
    table = out["coefficients"]
    assert [c["name"] for c in table] == ["Intercept", "age", "smoker", "visits"]
    for key, want in (("coef", fit.params), ("se", fit.bse), ("t", fit.tvalues)):
        _close(key, [c[key] for c in table], want)
    _close("p", [c["p"] for c in table], fit.pvalues, rtol=1e-6)
    _close("R²", [out["r2"], out["adj_r2"]], [fit.rsquared, fit.rsquared_adj])


CHECKS = {"summary": check_summary, "crosstab": check_crosstab, "correlation": check_correlation,
          "linear": check_linear}


def main(argv: list[str]) -> int:
    if argv[:1] == ["generate"] and len(argv) == 3:
        generate(Path(argv[1]), int(argv[2]))
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        folder = Path(argv[1])
        results = json.loads((folder / "results.json").read_text())
        rows = joined(folder)
        for case, check in CHECKS.items():
            check(results[case], rows)
        print(f"all {len(CHECKS)} vertical analyses equal the joined computation")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
