"""The vertically partitioned analyses (``fedq_algorithm.vertical_analysis``) in the mock
federation, against pandas, scipy and statsmodels on the rows joined by id (``joined.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from fedq_algorithm import mock
from fedq_algorithm.analysis import run as analysis

sys.path.insert(0, str(Path(__file__).parent))
import joined  # noqa: E402


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vertical")
    return folder, joined.generate(folder, 700)


@pytest.mark.parametrize("case", list(joined.CASES))
def test_each_vertical_analysis_equals_the_joined_computation(registries, case):
    folder, dirs = registries
    results = mock.run(analysis, dirs, joined.CASES[case], timeout=120)
    for org in "AB":
        assert results[org].status == "completed", results[org].output
        assert results[org].json() == {"analysis": joined.CASES[case]["analysis"], "contributed": True}
    assert results["C"].status == "completed", results["C"].output
    joined.CHECKS[case](results["C"].json(), joined.joined(folder))


def test_a_party_without_the_column_fails_with_its_reason_and_no_one_waits(registries):
    folder, dirs = registries
    spec = {**joined.CASES["summary"], "b": {"data": "diagnoses", "columns": ["weight"]}, "timeout": 30}
    results = mock.run(analysis, dirs, spec, timeout=60)
    assert results["B"].json()["error"] == {"code": "column_missing", "message": "the data has no column 'weight'"}
    assert results["A"].json()["error"]["code"] == "not_everyone"
    assert results["C"].json()["error"]["code"] == "not_everyone"


def test_parties_holding_other_patients_are_refused(tmp_path):
    dirs = joined.generate(tmp_path, 200)
    frame = pd.read_csv(dirs["B"] / "diagnoses")
    frame.iloc[1:].to_csv(dirs["B"] / "diagnoses", index=False)
    results = mock.run(analysis, dirs, {**joined.CASES["correlation"], "timeout": 30}, timeout=60)
    for org in "AB":
        assert results[org].json()["error"]["code"] == "different_ids", results[org].output
    assert results["C"].json()["error"]["code"] == "not_everyone"


def test_the_dealer_refuses_a_cohort_below_its_minimum(registries):
    folder, dirs = registries
    spec = {**joined.CASES["summary"], "a": {"data": "ages", "where": "age > 88", "columns": ["age"]}}
    results = mock.run(analysis, dirs, spec, timeout=60, min_cell_count={"A": 1, "B": 3, "C": 50})
    assert results["C"].json()["error"]["code"] == "too_few_rows", results["C"].output
    assert "fewer than 50 patients" in results["C"].json()["error"]["message"]


def test_a_request_naming_a_column_twice_fails_everywhere_before_any_message(registries):
    folder, dirs = registries
    spec = {**joined.CASES["correlation"], "b": {"data": "diagnoses", "columns": ["age"]}}
    results = mock.run(analysis, dirs, spec, timeout=60)
    assert {results[org].json()["error"]["code"] for org in "ABC"} == {"bad_input"}


def test_a_data_party_lying_about_its_shape_is_stopped_by_the_dealer(registries, monkeypatch):
    """A party that tells C more rows than it holds (so that C's randomness would not fit) is
    refused by C, which tells both parties to stop: no one waits for its timeout."""
    from fedq_algorithm import vertical_analysis

    folder, dirs = registries
    real = vertical_analysis.Channel.send_json

    def lying(self, to, what, value):
        if what == "shape" and self.node.job().organization == "B":
            value = {**value, "rows": value["rows"] + 1}
        return real(self, to, what, value)

    monkeypatch.setattr(vertical_analysis.Channel, "send_json", lying)
    results = mock.run(analysis, dirs, {**joined.CASES["correlation"], "timeout": 20}, timeout=60)
    assert results["C"].json()["error"]["code"] == "protocol", results["C"].output
    for org in "AB":
        assert results[org].json()["error"]["code"] == "not_everyone", results[org].output
