"""`PrivateRedisCluster`: a real Redis Cluster of a test's own, three masters and a replica each.

Usage::

    with PrivateRedisCluster() as cluster:
        settings = Settings(redis_url=cluster.url, redis_mode="cluster", ...)
        client = cluster.client()                  # a RedisCluster
        node = cluster.master_of("iot:raw:{0.1}")  # the PrivateRedis serving a key's slot
        node.kill()                                # SIGKILL a master ...
        cluster.wait_failover(node)                # ... until its replica serves its slots

Six `redis-server --cluster-enabled yes` processes on loopback ports (each node's cluster bus is its
port + 10000, so ports are chosen where both are free), joined by `redis-cli --cluster create
--cluster-replicas 1 --cluster-yes`; `cluster-node-timeout` (2000 ms by default) bounds how long a dead
master's slots go unserved before its replica is promoted. With `aclfile`, every node loads it and the
`admin` user (which the file must hold, with every permission) is what `redis-cli` and replication log in
as (`masteruser`/`masterauth`): the default user is off there.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Self
from urllib.parse import quote

import redis
from redis.cluster import RedisCluster

from iot_etl.ports import free_local_port
from tests.support.private_server import StartedUntilClosed
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_until

#: Node ports are taken from here, so that port + 10000 (the cluster bus) stays below the ephemeral range.
NODE_PORTS = range(20000, 22700)
BUS_OFFSET = 10000
SLOTS = 16384


def _free_node_port(taken: set[int]) -> int:
    for _ in range(200):
        port = free_local_port(candidates=NODE_PORTS)
        bus = free_local_port(candidates=range(port + BUS_OFFSET, port + BUS_OFFSET + 1))
        if port not in taken and bus == port + BUS_OFFSET:
            return port
    raise RuntimeError("no free port pair for a cluster node")


class PrivateRedisCluster(StartedUntilClosed):
    """`masters` masters with `replicas` replicas each, as `redis-server` processes of the test."""

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        aclfile: Path | None = None,
        admin: tuple[str, str] = ("admin", "admin-password"),
    ) -> None:
        self.host = "127.0.0.1"
        self.masters = masters
        self.replicas = replicas
        self.aclfile = aclfile
        self.admin = admin
        taken: set[int] = set()
        self.nodes: list[PrivateRedis] = []
        for _ in range(masters * (1 + replicas)):
            port = _free_node_port(taken)
            taken.add(port)
            extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--appendonly", "no",
            ]  # fmt: skip
            if aclfile is not None:
                extra += ["--masteruser", admin[0], "--masterauth", admin[1]]
            self.nodes.append(PrivateRedis(port=port, aclfile=aclfile, extra_args=extra))

    # --- addresses -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """A URL naming every node (a client made while one is down finds the cluster through the others)."""
        return f"redis://{self._hosts()}/0"

    def url_for(self, user: str, password: str) -> str:
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"redis://{credentials}@{self._hosts()}/0"

    def _hosts(self) -> str:
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes)

    def env(self) -> dict[str, str]:
        """`IOT_*` variables pointing a subprocess's `Settings` at this cluster."""
        return {"IOT_REDIS_URL": self.url, "IOT_REDIS_MODE": "cluster"}

    def _auth(self) -> dict[str, str]:
        if self.aclfile is None:
            return {}
        return {"username": self.admin[0], "password": self.admin[1]}

    def client(self) -> RedisCluster:
        """A cluster client that may do anything (the admin user when the nodes load an ACL file)."""
        live = next(n for n in self.nodes if n.running)
        return RedisCluster(host=self.host, port=live.port, **self._auth())

    def node_client(self, node: PrivateRedis) -> redis.Redis:
        return redis.Redis(host=self.host, port=node.port, socket_timeout=2, **self._auth())

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Self:
        for node in self.nodes:
            node.start()
        auth = ["--user", self.admin[0], "--pass", self.admin[1]] if self.aclfile is not None else []
        addresses = [f"{self.host}:{n.port}" for n in self.nodes]
        command = ["redis-cli", *auth, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        if not wait_until(self._healthy, timeout, interval_s=0.2):
            raise TimeoutError(f"the cluster did not become healthy within {timeout} s")
        return self

    def _healthy(self) -> bool:
        """Every live node says `cluster_state:ok`, knows every node, and every replica's link is up."""
        live = [n for n in self.nodes if n.running]
        roles: list[str] = []
        try:
            for node in live:
                with self.node_client(node) as client:
                    info = client.cluster("info")
                    if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.nodes):
                        return False
                    replication = client.info("replication")
                    roles.append(replication["role"])
                    if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                        return False
        except redis.RedisError:
            return False
        return roles.count("slave") == self.masters * self.replicas

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()

    # --- topology --------------------------------------------------------------------------------
    def _node(self, port: int) -> PrivateRedis:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> PrivateRedis:
        """The node that serves `key`'s slot now, as a live node sees it."""
        with self.client() as client:
            return self._node(int(client.get_node_from_key(key).port))

    def wait_failover(self, dead: PrivateRedis, timeout: float = 60.0) -> None:
        """Until the live nodes agree the cluster is `ok` again with `dead`'s slots served elsewhere."""

        def served() -> bool:
            live = [n for n in self.nodes if n.running]
            try:
                for node in live:
                    with self.node_client(node) as client:
                        if client.cluster("info")["cluster_state"] != "ok":
                            return False
                        slots = client.cluster("slots")
                        if any(int(owner[1]) == dead.port for _lo, _hi, owner, *_ in _slot_rows(slots)):
                            return False
            except redis.RedisError:
                return False
            return True

        if not wait_until(served, timeout, interval_s=0.2):
            raise TimeoutError(f"no replica took over the slots of {dead.port} within {timeout} s")


def _slot_rows(slots: object) -> list[tuple]:
    """CLUSTER SLOTS as rows `(first, last, master, *replicas)`, whatever shape redis-py parsed it into."""
    if isinstance(slots, dict):  # redis-py: {(first, last): {"primary": (host, port), "replicas": [...]}}
        return [(lo, hi, info["primary"], *info["replicas"]) for (lo, hi), info in slots.items()]
    return [tuple(row) for row in slots]  # type: ignore[union-attr]
