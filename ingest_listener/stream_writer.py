"""Buffered, pipelined XADD of MQTT messages into Redis streams, independent of MQTT.

Why it is separate from the MQTT side: the listener's guarantee is "acknowledge a
message only after its stream entry is written". This module decides *when* an entry counts as
written and reports exactly those entries through `on_written`; the listener acknowledges them. Kept
apart, the buffering, batching and retry rules can be tested against a real Redis without a broker.

- One entry per message, payload bytes untouched (no decoding anywhere), fields `topic`, `payload`,
  `qos`, `retain`, `rx_us`, and `dup` = 1 on a message the broker sent again. No MAXLEN: entries are
  trimmed only after they are landed in the database.
- Entries are buffered and written with one pipelined round trip (the XADDs sent at once, then each
  reply read) when `flush_count` are waiting or the oldest has waited `flush_ms`.
- With `IOT_REDIS_WAIT_REPLICAS` > 0 (the default in cluster mode) an entry counts as written only once
  that many replicas confirmed it (`WAIT`), so a failover cannot lose what was acknowledged.
- When Redis is unreachable nothing is dropped and nothing is reported written: the batch is kept
  and retried with exponential backoff, logged once per outage. A single entry Redis refuses (e.g. a
  WRONGTYPE key) is kept and retried too, without holding back the others.
- A retried batch may have been partly applied before the connection broke, so an entry can be
  written twice: at-least-once, as designed; duplicates are removed downstream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain

import redis
from hiredis import pack_command
from redis.cluster import RedisCluster
from redis.connection import ConnectionPool

from ingest_listener.cluster_writes import write_by_master
from ingest_listener.metrics import ListenerMetrics
from ingest_listener.redis_replies import read_reply
from ingest_listener.replica_wait import ReplicaWait
from iot_core.redis_client import RedisClient
from iot_core.streams import stream_for_topic

log = logging.getLogger(__name__)

Fields = dict[str, str | bytes]
#: Errors that mean "Redis is not reachable right now" (as opposed to a refused command).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)


@dataclass(slots=True)
class Entry:
    """One message on its way into a stream, plus what the listener needs to acknowledge it later."""

    stream: str
    fields: Fields
    qos: int = 0
    mid: int = 0
    #: MQTT connection the message arrived on (an ack is only valid on that connection).
    generation: int = 0
    #: Broker session the message belongs to (QoS 2 completion is valid for the whole session).
    session: int = 0
    #: Position in arrival order, assigned by `BufferedStreamWriter.add`.
    seq: int = 0
    buffered_at: float = field(default_factory=time.monotonic)


def rx_now_us() -> int:
    """Receive time as integer microseconds since the epoch."""
    return time.time_ns() // 1000


def entry_for_message(
    topic: str | bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    *,
    prefix: str,
    shards: int,
    cluster: bool = False,
    rx_us: int | None = None,
    mid: int = 0,
    generation: int = 0,
    session: int = 0,
    redelivered: bool = False,
) -> Entry:
    """The stream entry of one MQTT message: its stream by device shard, fields as in the contract (`dup`
    only on a message the broker sent again, MQTT's DUP flag)."""
    topic_text = topic if isinstance(topic, str) else topic.decode("utf-8", "replace")
    fields: Fields = {
        "topic": topic,
        "payload": bytes(payload),
        "qos": str(qos),
        "retain": "1" if retain else "0",
        "rx_us": str(rx_now_us() if rx_us is None else rx_us),
    }
    if redelivered:
        fields["dup"] = "1"
    return Entry(
        stream=stream_for_topic(topic_text, prefix, shards, cluster=cluster),
        fields=fields,
        qos=qos,
        mid=mid,
        generation=generation,
        session=session,
    )


class StreamWriter:
    """Writes a batch of entries with one pipelined round trip (one per master in a Redis Cluster).

    With `wait_replicas` > 0 each pipeline ends in `WAIT` (`ingest_listener.replica_wait`): an entry counts
    as written only once that many replicas confirmed it, so a master's failover cannot lose it after it was
    acknowledged to the broker.
    """

    def __init__(self, client: RedisClient, *, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.wait = ReplicaWait(wait_replicas, wait_timeout_ms)

    def write(self, entries: Sequence[Entry]) -> list[bytes | str | Exception]:
        """XADD every entry; per entry the new ID, or the error Redis answered for that entry.

        Raises a connection error (see `CONNECTION_ERRORS`) when Redis cannot be reached; then it is
        unknown which entries were applied, and the caller must retry all of them. (In a cluster a node
        that cannot be reached answers its entries with that error instead; see `write_by_master`.)
        """
        if not entries:
            return []
        if isinstance(self.client, RedisCluster):
            return write_by_master(self.client, entries, self.send)
        return self.send(self.client.connection_pool, entries)

    def send(self, pool: ConnectionPool, entries: Sequence[Entry]) -> list[bytes | str | Exception]:
        """The entries' XADDs (and WAIT) on one connection of `pool`."""
        # what a pipeline sends, packed by hiredis straight from the fields: redis-py's pipeline spends
        # about as long again per entry building and checking each command (measured: 4.8-5.3 against
        # 2.6 µs per entry)
        packed = b"".join(
            pack_command(("XADD", entry.stream, "*", *chain.from_iterable(entry.fields.items())))
            for entry in entries
        )  # no MAXLEN, ever
        conn = pool.get_connection()
        try:
            address = f"{conn.host}:{conn.port}"
            wait = self.wait.command(address)
            conn.send_packed_command([packed + wait])
            replies = [read_reply(conn) for _ in entries]
            return self.wait.confirm(conn, address, replies) if wait else replies
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand this connection out again
            raise
        finally:
            pool.release(conn)


class BufferedStreamWriter:
    """The listener's buffer: `add()` from any thread, a background thread flushes and retries.

    `on_written(entries)` is called (from the writer thread) with exactly the entries whose XADD
    succeeded, in arrival order per batch; it is never called for an entry that was not written.
    """

    def __init__(
        self,
        writer: StreamWriter,
        *,
        flush_count: int,
        flush_ms: int,
        on_written: Callable[[list[Entry]], None] | None = None,
        metrics: ListenerMetrics | None = None,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        self._writer = writer
        self._flush_count = max(1, flush_count)
        self._flush_s = max(0.001, flush_ms / 1000)
        self._on_written = on_written
        self.metrics = metrics if metrics is not None else ListenerMetrics()
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s

        self._lock = threading.RLock()  # the condition's; `add` enters it directly (cheaper, per message)
        self._cond = threading.Condition(self._lock)
        self._buffer: list[Entry] = []  # added, not yet taken by the writer thread
        self._pending: list[Entry] = []  # taken, not yet written (a batch being written or retried)
        self._outstanding: dict[int, None] = {}  # seqs not yet written, in arrival order
        self._next_seq = 0
        self._urgent = False  # flush whatever is there without waiting for count or age
        self._closing = False
        self._deadline: float | None = None  # close(): give up retrying after this
        self._thread: threading.Thread | None = None

        self._outage_since: float | None = None  # set while writes fail
        # read when scraped: a gauge kept up to date per message costs the network thread a lock each time
        self.metrics.buffered.set_function(lambda: self.unwritten)

    # --- producer side ----------------------------------------------------------------------------
    def add(self, entry: Entry) -> None:
        """Buffer one entry (thread-safe, cheap: called from the MQTT network thread)."""
        with self._lock:
            entry.seq = self._next_seq
            self._next_seq += 1
            self._outstanding[entry.seq] = None
            self._buffer.append(entry)
            n = len(self._buffer)
            # the writer waits only while fewer than flush_count are buffered: wake it when that changes
            if n == 1 or n == self._flush_count:
                self._cond.notify_all()

    @property
    def unwritten(self) -> int:
        """Entries added but not yet written."""
        with self._cond:
            return len(self._outstanding)

    @property
    def redis_ok(self) -> bool:
        """False while writes are failing (an outage is in progress)."""
        return self._outage_since is None

    def mark(self) -> int:
        """A position in arrival order: `drain(mark)` waits for everything added before it."""
        with self._cond:
            return self._next_seq

    def drain(self, until: int | None = None, timeout: float = 5.0) -> bool:
        """Flush now and wait until every entry added before `until` (default: now) is written.

        Returns False if that did not happen within `timeout` (Redis down): nothing is dropped.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._next_seq if until is None else until
            self._urgent = True
            self._cond.notify_all()
            try:
                while True:
                    oldest = next(iter(self._outstanding), None)
                    if oldest is None or oldest >= target:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._urgent = False

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="stream-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> int:
        """Write everything still buffered (retrying until `timeout`), stop the thread.

        Returns how many entries could not be written (0 unless Redis stayed unreachable).
        """
        thread = self._thread
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout + 10)  # a write in progress may take up to the socket timeout
        self._thread = None
        left = self.unwritten
        if left:
            log.error(
                "stopping with %d entries NOT written to Redis (QoS 1/2 ones were not acknowledged: "
                "the broker redelivers them; QoS 0 ones are lost)",
                left,
            )
        return left

    # --- writer thread ----------------------------------------------------------------------------
    def _due(self, now: float) -> float | None:
        """None if a flush is due now, else seconds until the oldest buffered entry is due."""
        if self._pending or self._urgent or self._closing:
            return None if (self._pending or self._buffer) else 3600.0
        if not self._buffer:
            return 3600.0
        if len(self._buffer) >= self._flush_count:
            return None
        wait = self._buffer[0].buffered_at + self._flush_s - now
        return None if wait <= 0 else wait

    def _run(self) -> None:
        backoff = self._backoff_initial
        while True:
            with self._cond:
                while True:
                    if self._closing and not self._buffer and not self._pending:
                        return
                    if self._closing and self._deadline is not None and time.monotonic() > self._deadline:
                        return
                    wait = self._due(time.monotonic())
                    if wait is None:
                        break
                    self._cond.wait(wait)
                room = self._flush_count - len(self._pending)
                if room > 0 and self._buffer:
                    self._pending.extend(self._buffer[:room])
                    del self._buffer[:room]
                batch = list(self._pending)
            if self._write(batch):
                backoff = self._backoff_initial
                continue
            self._sleep_backoff(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    def _sleep_backoff(self, delay: float) -> None:
        """Wait before a retry; cut short only when close() begins (its deadline bounds retries)."""
        end = time.monotonic() + delay
        with self._cond:
            was_closing = self._closing
            while self._closing == was_closing:
                remaining = end - time.monotonic()
                if self._deadline is not None:
                    remaining = min(remaining, self._deadline - time.monotonic())
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _write(self, batch: list[Entry]) -> bool:
        """Write one batch; True if every entry of it was written."""
        started = time.perf_counter()
        try:
            results = self._writer.write(batch)
        except CONNECTION_ERRORS as exc:
            self._failed(f"Redis unreachable: {exc}", len(batch))
            return False
        except redis.RedisError as exc:  # e.g. an authentication error
            self._failed(f"Redis write failed: {exc!r}", len(batch))
            return False
        except Exception as exc:  # a bug must not kill the writer thread silently; keep the entries
            log.exception("unexpected error writing %d entries", len(batch))
            self._failed(f"unexpected error: {exc!r}", len(batch))
            return False
        elapsed = time.perf_counter() - started
        refused = [(e, r) for e, r in zip(batch, results, strict=True) if isinstance(r, Exception)]
        written = batch  # the usual case: Redis took every entry
        if refused:
            written = [e for e, r in zip(batch, results, strict=True) if not isinstance(r, Exception)]
        # Report before releasing drain() waiters: the listener disconnects right after a drain, and
        # the acks on_written queues must already be ahead of that DISCONNECT.
        if written and self._on_written is not None:
            try:
                self._on_written(written)
            except Exception:  # never let an ack problem kill the writer; entries are written
                log.exception("on_written callback failed")
        with self._cond:
            for entry in written:
                del self._outstanding[entry.seq]
            self._pending = [e for e, _ in refused]
            self._cond.notify_all()  # drain() waiters
        m = self.metrics
        m.entries_written.inc(len(written))
        if refused:
            entry, error = refused[0]
            reason = f"Redis refused {len(refused)} of {len(batch)} entries ({entry.stream!r}: {error})"
            self._failed(reason, len(refused))
            return False
        m.flushes.inc()
        m.flush_duration.observe(elapsed)
        if self._outage_since is not None:
            log.warning(
                "Redis writes work again after %.1f s; backlog written, %d entries still buffered",
                time.monotonic() - self._outage_since,
                self.unwritten,
            )
            self._outage_since = None
            m.redis_up.set(1)
        return True

    def _failed(self, reason: str, count: int) -> None:
        self.metrics.redis_errors.inc()
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.metrics.redis_up.set(0)
            log.error(
                "%s -- keeping %d buffered entries (%d in this batch), retrying with backoff; "
                "nothing is acknowledged to the broker until it is written",
                reason,
                self.unwritten,
                count,
            )
        else:
            log.debug("still failing: %s", reason)
