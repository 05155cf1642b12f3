"""The pure rules of cluster mode: shard names and their hash tags, the window clock over several nodes, and
the ACL patterns of the tagged names."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from redis.crc import key_slot

from iot_core.redis_acl import acl_users, stream_key_patterns
from iot_core.redis_client import earliest_ms, split_nodes
from iot_core.settings import Settings
from iot_core.streams import SLOTS, stream_for_topic, stream_names

#: How `redis-cli --cluster create` splits the slots over three masters.
THREE_MASTERS = [(0, 5460), (5461, 10922), (10923, 16383)]


def master_of(slot: int, masters: list[tuple[int, int]]) -> int:
    return next(i for i, (low, high) in enumerate(masters) if low <= slot <= high)


def test_standalone_names_are_unchanged() -> None:
    assert stream_names("iot:raw", 1) == ["iot:raw"]
    assert stream_names("iot:raw", 3) == ["iot:raw:0", "iot:raw:1", "iot:raw:2"]
    assert stream_for_topic("devices/a1/t", "iot:raw", 3) in stream_names("iot:raw", 3)


def test_three_shards_land_on_three_masters_where_plain_tags_would_not() -> None:
    names = stream_names("iot:raw", 3, cluster=True)
    assert names == ["iot:raw:{0.1}", "iot:raw:{1.0}", "iot:raw:{2.0}"]
    assert sorted(master_of(key_slot(n.encode()), THREE_MASTERS) for n in names) == [0, 1, 2]
    plain = [f"iot:raw:{{{n}}}" for n in range(3)]
    assert len({master_of(key_slot(n.encode()), THREE_MASTERS) for n in plain}) == 2


@pytest.mark.parametrize("shards", [2, 3, 4, 6, 16, 100])
def test_tags_spread_shards_evenly_over_equal_slot_ranges(shards: int) -> None:
    names = stream_names("p", shards, cluster=True)
    assert len(set(names)) == shards
    for n, name in enumerate(names):
        assert n * SLOTS / shards <= key_slot(name.encode()) < (n + 1) * SLOTS / shards
    masters = [(m * SLOTS // 3, (m + 1) * SLOTS // 3 - 1) for m in range(3)]
    per_master = [0, 0, 0]
    for name in names:
        per_master[master_of(key_slot(name.encode()), masters)] += 1
    assert max(per_master) - min(per_master) <= 1


def test_a_topic_goes_to_the_tagged_name_of_its_standalone_shard() -> None:
    for device in ("a1", "b2", "esp-7", "f2-aabbccddee01"):
        topic = f"devices/{device}/t"
        plain = stream_names("iot:raw", 5).index(stream_for_topic(topic, "iot:raw", 5))
        assert (
            stream_for_topic(topic, "iot:raw", 5, cluster=True)
            == stream_names("iot:raw", 5, cluster=True)[plain]
        )


def test_acl_patterns_match_the_tagged_names_with_glob_characters_escaped() -> None:
    assert stream_key_patterns("iot:raw", 3, cluster=True) == (
        "iot:raw:{0.1}",
        "iot:raw:{1.0}",
        "iot:raw:{2.0}",
    )
    assert stream_key_patterns("a*b", 2, cluster=True) == tuple(
        n.replace("*", "\\*") for n in stream_names("a*b", 2, cluster=True)
    )


def test_cluster_acl_gives_each_user_the_slot_map_and_the_listener_wait() -> None:
    settings = Settings(
        redis_url="redis://pipe:p1@127.0.0.1:7000/0",
        listener_redis_url="redis://lis:p2@127.0.0.1:7000/0",
        redis_mode="cluster",
        stream_shards=3,
    )
    listener, pipeline = acl_users(settings).users
    assert {"xadd", "wait", "cluster|slots", "command"} <= set(listener.commands)
    assert "xrange" not in listener.commands and "wait" not in pipeline.commands
    assert {"xrange", "time", "cluster|slots", "command"} <= set(pipeline.commands)
    standalone = Settings(
        redis_url="redis://pipe:p1@127.0.0.1:7000/0", listener_redis_url="redis://lis:p2@127.0.0.1:7000/0"
    )
    assert not {"wait", "cluster|slots", "command"} & {
        c for u in acl_users(standalone).users for c in u.commands
    }


def test_wait_replicas_defaults_to_one_in_cluster_mode_only() -> None:
    assert Settings(redis_mode="cluster").wait_replicas == 1
    assert Settings().wait_replicas == 0
    assert Settings(redis_mode="cluster", redis_wait_replicas=0).wait_replicas == 0


# --- the window clock over nodes with skewed clocks ------------------------------------------------------


@dataclass
class Node:
    """A master as XADD '*' sees it: ids are max(its clock, the stream's last id), per stream."""

    skew_ms: int
    last: dict[str, int] = field(default_factory=dict)

    def clock(self, true_ms: int) -> int:
        return true_ms + self.skew_ms

    def xadd(self, stream: str, true_ms: int) -> int:
        ms = max(self.clock(true_ms), self.last.get(stream, 0))
        self.last[stream] = ms
        return ms


def late_entries(rule: str, seed: int) -> int:
    """Entries that landed in a window after the window clock (`rule` over the nodes' clocks) called it
    closed, in a random run of three skewed nodes with a shard each."""
    rng = random.Random(seed)
    nodes = [Node(rng.randint(-3000, 3000)) for _ in range(3)]
    closed_until = 0
    late = 0
    for true_ms in range(1_000_000, 1_060_000, 7):
        for n, node in enumerate(nodes):
            if rng.random() < 0.5 and node.xadd(f"s{n}", true_ms) < closed_until:
                late += 1
        clocks = [node.clock(true_ms) for node in nodes]
        closed_until = max(closed_until, earliest_ms(clocks) if rule == "earliest" else max(clocks))
    return late


@pytest.mark.parametrize("seed", range(5))
def test_the_earliest_clock_never_calls_a_window_closed_that_can_still_get_entries(seed: int) -> None:
    assert late_entries("earliest", seed) == 0
    assert late_entries("latest", seed) > 0, "a node ahead would close windows early on the others"


def test_the_earliest_clock_of_no_node_is_an_error() -> None:
    with pytest.raises(ValueError):
        earliest_ms([])


def test_a_url_may_name_several_nodes() -> None:
    assert split_nodes("redis://u:p@h1:7000,h2:7001,[::1]:7002/0") == (
        "redis://u:p@h1:7000/0",
        [("h2", 7001), ("[::1]", 7002)],
    )
    assert split_nodes("rediss://h1:7000/0") == ("rediss://h1:7000/0", [])
    user = acl_users(Settings(redis_url="redis://pipe:p1@h1:7000,h2:7000/0", redis_mode="cluster")).users[0]
    assert (user.name, user.password) == ("pipe", "p1")
    with pytest.raises(ValueError):
        split_nodes("redis://h1:7000,h2/0")
