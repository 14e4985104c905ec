"""otelprobe.attribution.splits: incidents stay whole, splits repeat, and leaks are caught."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from otelprobe.attribution.splits import LeakError, SplitError, check_no_leak, split_by_incident

# No example database: the shared working tree gets no .hypothesis/ directory.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, database=None)


def windows(incidents: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "incident": incidents,
            "window": range(len(incidents)),
            "target": [f"t{incident % 4}" for incident in incidents],
        }
    )


split_cases = st.tuples(
    st.lists(st.integers(min_value=0, max_value=30), min_size=2, max_size=120),
    st.floats(min_value=0.05, max_value=0.6),
    st.integers(min_value=0, max_value=2**32 - 1),
)


@PROPERTY_SETTINGS
@given(split_cases)
def test_no_incident_is_split_and_every_row_lands_once(case: tuple[list[int], float, int]) -> None:
    incidents, test_fraction, seed = case
    n_incidents = len(set(incidents))
    assume(math.ceil(test_fraction * n_incidents) < n_incidents)
    frame = windows(incidents)
    train, test = split_by_incident(frame, "incident", test_fraction, seed)
    assert set(train["incident"]).isdisjoint(set(test["incident"]))
    assert sorted([*train["window"], *test["window"]]) == list(range(len(frame)))
    assert test["incident"].nunique() == math.ceil(test_fraction * n_incidents)
    assert train["incident"].nunique() >= 1
    check_no_leak(train, test, ["incident"])


@PROPERTY_SETTINGS
@given(split_cases, st.randoms(use_true_random=False))
def test_the_split_depends_on_incidents_and_seed_only(
    case: tuple[list[int], float, int], rng: random.Random
) -> None:
    incidents, test_fraction, seed = case
    assume(math.ceil(test_fraction * len(set(incidents))) < len(set(incidents)))
    frame = windows(incidents)
    first = split_by_incident(frame, "incident", test_fraction, seed)
    again = split_by_incident(frame, "incident", test_fraction, seed)
    pd.testing.assert_frame_equal(first[1], again[1])
    shuffled = frame.sample(frac=1.0, random_state=rng.randrange(2**32))
    _, shuffled_test = split_by_incident(shuffled, "incident", test_fraction, seed)
    assert set(shuffled_test["incident"]) == set(first[1]["incident"])


def test_each_side_keeps_the_frame_order_and_index() -> None:
    frame = windows([5, 1, 5, 2, 1, 3, 2, 4]).set_index(pd.Index(list("abcdefgh")))
    train, test = split_by_incident(frame, "incident", 0.4, seed=7)
    for side in (train, test):
        assert list(side.index) == sorted(side.index)
        pd.testing.assert_frame_equal(side, frame.loc[side.index])


def test_string_incident_ids_split_as_well() -> None:
    frame = pd.DataFrame({"incident": ["a", "b", "c", "a", "d"], "value": range(5)})
    train, test = split_by_incident(frame, "incident", 0.25, seed=1)
    assert set(train["incident"]).isdisjoint(test["incident"])
    assert test["incident"].nunique() == 1


@pytest.mark.parametrize(
    ("frame", "column", "fraction", "message"),
    [
        (windows([1, 2]), "lab_incident", 0.5, "no column 'lab_incident'"),
        (pd.DataFrame({"incident": [1.0, math.nan, 2.0]}), "incident", 0.5, "1 rows have no 'incident'"),
        (windows([1, 2, 3]), "incident", 0.0, "between 0 and 1"),
        (windows([1, 2]), "incident", 0.6, "2 incidents with test_fraction 0.6 leave no incident"),
        (windows([1, 1, 1]), "incident", 0.2, "1 incidents"),
    ],
)
def test_bad_split_requests_are_clear_errors(
    frame: pd.DataFrame, column: str, fraction: float, message: str
) -> None:
    with pytest.raises(SplitError, match=message):
        split_by_incident(frame, column, fraction, seed=0)


def test_check_no_leak_names_the_shared_values_and_ignores_missing_ones() -> None:
    train = pd.DataFrame({"incident": [1.0, 2.0, math.nan], "target": ["api", "web", "db"]})
    test = pd.DataFrame({"incident": [3.0, math.nan], "target": ["api", "cdn"]})
    check_no_leak(train, test, ["incident"])
    with pytest.raises(LeakError, match=r"target: 1 values in both train and test \('api'\)"):
        check_no_leak(train, test, ["incident", "target"])
    with pytest.raises(SplitError, match="test has no column 'vantage'"):
        check_no_leak(train.assign(vantage="eu"), test, ["vantage"])


def test_check_no_leak_shows_a_few_values_of_a_big_leak() -> None:
    shared = pd.DataFrame({"vantage": [f"v{index}" for index in range(8)]})
    with pytest.raises(LeakError, match=r"vantage: 8 values .*'v4' and 3 more"):
        check_no_leak(shared, shared, ["vantage"])
