"""Fault schedules: TOML in, sorted concrete events out."""

import tomllib

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.errors import ConfigError
from meshlearn.net.faults import Crash, FaultSchedule, Heal, Partition, Recover

NODES = ["a", "b", "c", "d"]

TOML = """
crashes = [
  { node = "b", at = 5.0, recover_at = 20.0 },
  { node = "a", at = 10.0 },
]
partitions = [ { at = 10.0, until = 30.0, groups = [["a", "b"], ["c"]] } ]
"""


def schedule(text: str = TOML) -> FaultSchedule:
    return FaultSchedule.model_validate(tomllib.loads(text))


def test_expand_sorts_by_time_then_definition_order():
    events = schedule().expand(NODES, np.random.default_rng(0), horizon_s=100)
    assert events == [
        Crash(5.0, "b"),
        Crash(10.0, "a"),  # defined before the partition, same time
        Partition(10.0, (("a", "b"), ("c",))),
        Recover(20.0, "b"),
        Heal(30.0),
    ]


def test_events_after_the_horizon_are_dropped():
    events = schedule().expand(NODES, np.random.default_rng(0), horizon_s=15)
    assert [type(e) for e in events] == [Crash, Crash, Partition]


def test_unknown_node_is_a_config_error_listing_valid_nodes():
    bad = schedule('crashes = [{ node = "zz", at = 1.0 }]')
    with pytest.raises(ConfigError) as info:
        bad.expand(NODES, np.random.default_rng(0), 10)
    assert info.value.key == "faults.crashes[0].node" and info.value.choices == NODES
    bad = schedule('partitions = [{ at = 1.0, groups = [["a"], ["q"]] }]')
    with pytest.raises(ConfigError, match="'q'"):
        bad.expand(NODES, np.random.default_rng(0), 10)


def test_churn_rate_over_a_long_horizon():
    sched = schedule("churn = { rate_per_node_per_s = 0.01, mean_downtime_s = 10.0 }")
    events = sched.expand(NODES, np.random.default_rng(2), horizon_s=100_000)
    crashes = [e for e in events if isinstance(e, Crash)]
    expected = len(NODES) * 100_000 / (100 + 10)  # one crash per up+down cycle
    assert abs(len(crashes) / expected - 1) < 0.05
    assert [e.time for e in events] == sorted(e.time for e in events)
    for node in NODES:  # per node: strictly alternating crash, recover, crash, ...
        kinds = [type(e) for e in events if e.node == node]
        assert kinds[0] is Crash and all(x is not y for x, y in zip(kinds, kinds[1:]))
    downtimes = []
    for node in NODES:
        times = [e.time for e in events if e.node == node]
        downtimes += [up - down for down, up in zip(times[0::2], times[1::2])]
    assert abs(np.mean(downtimes) / 10.0 - 1) < 0.05


def test_churn_restricted_to_listed_nodes_and_seeded():
    sched = schedule('churn = { rate_per_node_per_s = 0.1, mean_downtime_s = 1.0, nodes = ["c"] }')
    events = sched.expand(NODES, np.random.default_rng(5), horizon_s=1000)
    assert {e.node for e in events} == {"c"}
    assert events == sched.expand(NODES, np.random.default_rng(5), horizon_s=1000)
    assert events != sched.expand(NODES, np.random.default_rng(6), horizon_s=1000)


@pytest.mark.parametrize(
    "text",
    [
        'crashes = [{ node = "a", at = 1.0, oops = 2 }]',
        'crashes = [{ node = "a", at = 5.0, recover_at = 2.0 }]',
        "stragglers = 3",
        'partitions = [{ at = 1.0, groups = [["a"], ["a", "b"]] }]',
        "churn = { rate_per_node_per_s = 0.0, mean_downtime_s = 1.0 }",
    ],
)
def test_invalid_schedules_are_rejected(text):
    with pytest.raises(ValidationError):
        schedule(text)


def test_overlapping_partitions_are_rejected():
    sched = schedule(
        'partitions = [{ at = 1.0, until = 10.0, groups = [["a"]] }, { at = 5.0, groups = [["b"]] }]'
    )
    with pytest.raises(ConfigError, match="overlap"):
        sched.expand(NODES, np.random.default_rng(0), 100)
