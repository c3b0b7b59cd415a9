"""The analyses (``fedq_algorithm.analysis``) in the mock federation, against the same
computation on the pooled rows (``pooled.py``): counts exactly, the rest to a relative 1e-8
(quantiles to one bin of their histogram). Three and five registries of different sizes, with
missing values."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from fedq_algorithm import mock
from fedq_algorithm.analysis import run as analysis

sys.path.insert(0, str(Path(__file__).parent))
import pooled  # noqa: E402


@pytest.fixture(params=[(400, 1200, 250), (300, 900, 150, 620, 75)], ids=["3 registries", "5 registries"],
                scope="module")
def federation(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("registries")
    paths = pooled.generate(folder, list(request.param))
    return {f"R{i}": p.parent for i, p in enumerate(paths)}, pooled.pooled(paths)


@pytest.mark.parametrize("case", list(pooled.CASES))
def test_each_analysis_equals_the_pooled_computation(federation, case):
    dirs, rows = federation
    spec = pooled.CASES[case]
    results = mock.run(analysis, dirs, dict(spec, data="patients"), timeout=120)
    first, *others = list(dirs)
    for org in others:
        assert results[org].status == "completed", results[org].output
        assert results[org].json() == {"analysis": spec["analysis"], "contributed": True}
    assert results[first].status == "completed", results[first].output
    out = results[first].json()
    assert out["organizations"] == len(dirs)
    pooled.CHECKS[case](out, rows)


def test_a_registry_whose_data_does_not_fit_fails_with_its_reason_and_the_aggregator_says_so(tmp_path):
    paths = pooled.generate(tmp_path, [50, 60, 70])
    pd.read_csv(paths[2]).drop(columns=["bmi"]).to_csv(paths[2], index=False)
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    results = mock.run(analysis, dirs, {"analysis": "summary", "data": "patients", "columns": ["age", "bmi"]},
                       timeout=60)
    assert results["R2"].status == "failed"
    assert results["R2"].json()["error"] == {"code": "column_missing", "message": "the data has no column 'bmi'"}
    assert results["R0"].status == "failed"
    assert results["R0"].json()["error"]["code"] == "not_everyone"
    assert "1 of 3 organizations" in results["R0"].json()["error"]["message"]


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"analysis": "summary", "columns": ["sex"]}, "not_numeric"),
        ({"analysis": "summary", "columns": ["age"], "where": "age > 200"}, "too_few_rows"),
        ({"analysis": "summary", "columns": ["age"], "where": "nonsense ((("}, "bad_filter"),
        ({"analysis": "glm", "family": "logistic", "outcome": "visits", "covariates": ["age"]}, "not_binary"),
        ({"analysis": "glm", "family": "gamma", "outcome": "visits", "covariates": ["age"]}, "bad_input"),
        ({"analysis": "crosstab", "rows": "sex", "columns": "smoker"}, "bad_input"),
        ({"analysis": "regression"}, "bad_input"),
    ],
)
def test_bad_requests_and_unfit_data_fail_with_a_reason_not_a_trace(tmp_path, spec, code):
    paths = pooled.generate(tmp_path, [40, 40, 40])
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    results = mock.run(analysis, dirs, dict(spec, data="patients"), timeout=60)
    for result in results.values():
        assert result.status == "failed"
        error = result.json()["error"]
        assert error["code"] in (code, "not_everyone"), error
    assert results["R1"].json()["error"]["code"] == code


def test_a_glm_that_a_registry_cannot_fit_ends_at_once_everywhere(tmp_path):
    # R2's outcome is not 0 or 1: it says so in the first round, whose flag stops everyone.
    paths = pooled.generate(tmp_path, [50, 60, 70])
    frame = pd.read_csv(paths[2])
    frame.loc[0, "diagnosis"] = 2
    frame.to_csv(paths[2], index=False)
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    spec = dict(pooled.CASES["logistic"], data="patients", timeout=30)
    results = mock.run(analysis, dirs, spec, timeout=60)
    assert results["R2"].json()["error"]["code"] == "not_binary", results["R2"].output
    assert results["R0"].json()["error"]["code"] == "not_everyone", results["R0"].output
    assert "1 of 3 organizations" in results["R0"].json()["error"]["message"]
    assert results["R1"].status == "completed", results["R1"].output
    assert results["R1"].json() == {"analysis": "glm", "contributed": True}


def test_a_perfectly_separated_logistic_regression_ends_everywhere_without_a_trace(tmp_path):
    # The outcome is a threshold of age: the coefficients grow without bound, the fitted means
    # reach 0 and 1 (where a weight of μ(1 − μ) is 0 and z = η + (y − μ)/w has no value).
    paths = pooled.generate(tmp_path, [50, 60, 70])
    for path in paths:
        frame = pd.read_csv(path).dropna(subset=["age"])
        frame["diagnosis"] = (frame["age"] > 50).astype(int)
        frame.to_csv(path, index=False)
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    spec = {"analysis": "glm", "family": "logistic", "outcome": "diagnosis", "covariates": ["age"],
            "data": "patients", "max_iter": 60, "timeout": 30}
    results = mock.run(analysis, dirs, spec, timeout=120)
    out = results["R0"].json()
    assert results["R0"].status == "completed", out
    assert out["converged"] is False and out["iterations"] == 60, out
    for org in ("R1", "R2"):
        assert results[org].status == "completed", results[org].output
        assert results[org].json() == {"analysis": "glm", "contributed": True}


def test_a_category_column_of_integers_with_a_missing_value_matches_its_levels(tmp_path):
    # With one value missing, pandas reads R1's diagnosis as floats (1.0), the levels say 0 and 1.
    paths = pooled.generate(tmp_path, [50, 60, 70])
    frame = pd.read_csv(paths[1])
    frame.loc[[0, 1], "diagnosis"] = None
    frame.to_csv(paths[1], index=False)
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    spec = {"analysis": "crosstab", "rows": "smoker", "columns": "diagnosis", "data": "patients",
            "levels": {"smoker": ["no", "yes"], "diagnosis": [0, 1]}}
    results = mock.run(analysis, dirs, spec, timeout=60)
    out = results["R0"].json()
    rows = pooled.pooled(paths)
    assert out["table"] == pd.crosstab(rows["smoker"], rows["diagnosis"]).to_numpy().tolist(), out
    assert out["excluded"] == 0, out


def test_data_that_cannot_be_read_fails_its_registry_with_the_kind_not_the_values(tmp_path):
    paths = pooled.generate(tmp_path, [50, 60, 70])
    paths[2].write_text("age,bmi\n41,22\n41,secret-value,3,4\n")
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    results = mock.run(analysis, dirs, {"analysis": "summary", "data": "patients", "columns": ["age"]}, timeout=60)
    error = results["R2"].json()["error"]
    assert error["code"] == "local_failure" and "ParserError" in error["message"], error
    assert "secret" not in results["R2"].output.decode(), results["R2"].output
    assert results["R0"].json()["error"]["code"] == "not_everyone", results["R0"].output


def test_a_registry_refuses_a_crosstab_with_a_cell_below_its_minimum(tmp_path):
    # R1's data owner sets policy.min_cell_count = 50; its table has smaller cells, R0's and R2's
    # the default minimum of 3 does not catch.
    paths = pooled.generate(tmp_path, [300, 300, 300])
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    spec = dict(pooled.CASES["crosstab"], data="patients")
    results = mock.run(analysis, dirs, spec, timeout=60, min_cell_count={"R1": 50})
    error = results["R1"].json()["error"]
    assert error["code"] == "small_cell" and "fewer than 50 rows" in error["message"], error
    assert results["R0"].json()["error"]["code"] == "not_everyone", results["R0"].output
    assert results["R2"].status == "completed", results["R2"].output
    # Under the default minimum, everyone takes part.
    results = mock.run(analysis, dirs, spec, timeout=60)
    assert all(r.status == "completed" for r in results.values()), {o: r.output for o, r in results.items()}
    # And a registry with fewer rows than its minimum does not take part at all.
    results = mock.run(analysis, dirs, dict(spec, where="age > 89"), timeout=60, min_cell_count={"R2": 10})
    assert results["R2"].json()["error"]["code"] == "too_few_rows", results["R2"].output


def test_a_registry_that_fails_mid_fit_hides_the_others_sums_and_stops_everyone(tmp_path, monkeypatch):
    # R2's IRLS sums fail at the third iteration: it sends random words and its flag, so that
    # the aggregator's sum is not R1's part (plus its own), and everyone stops at that round.
    from fedq_algorithm import analysis as module

    paths = pooled.generate(tmp_path, [50, 60, 70])
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    real, calls, seen = module._irls_sums, {}, {}
    # The registry that fails is told apart by its number of complete rows.
    rows = {org: len(pd.read_csv(p)[["diagnosis", "age", "bmi"]].dropna()) for org, p in zip(dirs, paths)}
    assert len(set(rows.values())) == 3, rows

    def failing(family, x, y, beta):
        calls[len(y)] = calls.get(len(y), 0) + 1
        if len(y) == rows["R2"] and calls[len(y)] == 3:
            raise module.AnalysisError("diverged", "diverges here")
        return real(family, x, y, beta)

    real_sum = module.Rounds.sum

    def recording(self, name, values, **kwargs):
        total = real_sum(self, name, values, **kwargs)
        if total is not None:
            seen[name] = total
        return total

    monkeypatch.setattr(module, "_irls_sums", failing)
    monkeypatch.setattr(module.Rounds, "sum", recording)
    results = mock.run(analysis, dirs, dict(pooled.CASES["logistic"], data="patients", timeout=30), timeout=60)
    assert results["R2"].json()["error"]["code"] == "diverged", results["R2"].output
    assert results["R0"].json()["error"]["code"] == "not_everyone", results["R0"].output
    assert results["R1"].json() == {"analysis": "glm", "contributed": True}
    assert sorted(seen) == ["glm-0", "glm-1", "glm-2"]
    # The aggregator's last sum, less its own part, is not R1's: R2's noise is in it.
    assert abs(seen["glm-2"][0]) > 1e6, seen["glm-2"][:3]


def test_glm_steps_driven_from_outside_reach_what_the_fit_in_one_task_reaches(tmp_path):
    """``glm_step`` (one task per IRLS step, as a researcher driving the iterations would)
    lands on the coefficients of ``glm`` and of statsmodels on the pooled rows."""
    import numpy as np

    paths = pooled.generate(tmp_path, [300, 500, 200])
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    case = dict(pooled.CASES["logistic"], data="patients", timeout=30)
    whole = mock.run(analysis, dirs, case, timeout=60)["R0"].json()
    beta = [0.0, 0.0, 0.0]
    for _ in range(30):
        results = mock.run(analysis, dirs, dict(case, analysis="glm_step", beta=beta), timeout=60)
        assert results["R1"].json() == {"analysis": "glm_step", "contributed": True}
        step = results["R0"].json()
        done = np.max(np.abs(np.array(step["beta"]) - beta)) <= 1e-10 * (1 + np.max(np.abs(step["beta"])))
        beta = step["beta"]
        if done:
            break
    else:
        raise AssertionError("no convergence in 30 steps")
    pooled._close("coefficients", beta, [c["coef"] for c in whole["coefficients"]])
    pooled._close("standard errors", step["se"], [c["se"] for c in whole["coefficients"]], rtol=1e-7)
    bad = mock.run(analysis, dirs, dict(case, analysis="glm_step", beta=[0.0, "x", 1.0]), timeout=60)
    assert bad["R0"].json()["error"]["code"] in ("bad_input", "not_everyone"), bad["R0"].output
    assert bad["R1"].json()["error"]["code"] == "bad_input", bad["R1"].output


def test_a_cox_model_with_breslow_ties_equals_statsmodels_and_with_efron_lifelines(tmp_path):
    """Times that depend on the covariates, counted in units of 50 (many ties): Breslow's
    handling of ties against statsmodels' PHReg, Efron's against lifelines."""
    import numpy as np
    import statsmodels.api as sm
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(3)
    dirs, frames = {}, []
    for i, n in enumerate((300, 450, 200)):
        age = rng.integers(20, 90, n).astype(float)
        dose = np.round(rng.normal(2, 1, n), 2)
        hazard = np.exp(-6 + 0.04 * age - 0.5 * dose)
        time = np.minimum(np.floor(rng.exponential(1 / hazard) / 50) * 50, 300)
        event = ((rng.random(n) < 0.8) & (time < 300)).astype(int)
        frame = pd.DataFrame({"time": time, "event": event, "age": age, "dose": dose})
        frame.loc[rng.random(n) < 0.03, "dose"] = None
        (tmp_path / f"R{i}").mkdir()
        frame.to_csv(tmp_path / f"R{i}" / "patients", index=False)
        dirs[f"R{i}"], frames = tmp_path / f"R{i}", frames + [frame]
    rows = pd.concat(frames).dropna()
    case = {"analysis": "cox", "data": "patients", "time": "time", "event": "event", "covariates": ["age", "dose"],
            "max_time": 300, "unit": 50}
    breslow = mock.run(analysis, dirs, dict(case, ties="breslow"), timeout=60)["R0"].json()
    fit = sm.PHReg(rows["time"], rows[["age", "dose"]], status=rows["event"], ties="breslow").fit()
    pooled._close("Breslow: coef", [c["coef"] for c in breslow["coefficients"]], fit.params)
    pooled._close("Breslow: se", [c["se"] for c in breslow["coefficients"]], fit.bse, rtol=1e-7)
    pooled._close("Breslow: log-likelihood", breslow["log_likelihood"], fit.llf)
    efron = mock.run(analysis, dirs, case, timeout=60)["R0"].json()
    fitted = CoxPHFitter().fit(rows, "time", "event", fit_options={"precision": 1e-12})
    pooled._close("Efron: coef", [c["coef"] for c in efron["coefficients"]], fitted.params_.to_numpy())
    pooled._close("Efron: se", [c["se"] for c in efron["coefficients"]], fitted.standard_errors_.to_numpy(), rtol=1e-7)
    assert efron["converged"] and efron["events"] == int(rows["event"].sum())
    assert abs(efron["coefficients"][0]["coef"] - 0.04) < 0.02, efron["coefficients"]


def test_a_cox_model_one_registry_cannot_fit_stops_everyone_with_its_reason(tmp_path):
    paths = pooled.generate(tmp_path, [80, 90, 70])
    frame = pd.read_csv(paths[1])
    frame.loc[0, "event"] = 2
    frame.to_csv(paths[1], index=False)
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    results = mock.run(analysis, dirs, dict(pooled.CASES["cox"], data="patients", timeout=30), timeout=60)
    assert results["R1"].json()["error"]["code"] == "not_binary", results["R1"].output
    assert results["R0"].json()["error"]["code"] == "not_everyone", results["R0"].output
    assert results["R2"].json() == {"analysis": "cox", "contributed": True}


def test_a_cox_model_whose_units_hold_single_patients_is_refused_by_the_aggregator(tmp_path):
    """Units of one day over ten years: between two days with an event there are days with one
    patient, whose own covariates the at-risk sums would tell the aggregator."""
    paths = pooled.generate(tmp_path, [120, 150, 100])
    dirs = {f"R{i}": p.parent for i, p in enumerate(paths)}
    spec = dict(pooled.CASES["cox"], data="patients", unit=1, timeout=30)
    results = mock.run(analysis, dirs, spec, timeout=60)
    assert results["R0"].json()["error"]["code"] == "small_cell", results["R0"].output
    assert "choose a larger unit" in results["R0"].json()["error"]["message"]
    for org in ("R1", "R2"):
        assert results[org].json() == {"analysis": "cox", "contributed": True}, results[org].output
