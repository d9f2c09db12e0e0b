"""The uplink: sealed outbox batches go to the cloud broker at QoS 1, in order, with a bounded in-flight window.

A batch leaves the outbox only after its PUBACK. After a disconnect the unacknowledged batches are sent again
with their original sequence numbers (the cloud drops duplicates by ``(gateway, seq)``); batches that waited
longer than ``backfill_after`` go up marked as backfill. The gateway's retained status on
``fl/{gateway}/up/status`` says online on connect, and the broker publishes the last will (offline) when the
agent vanishes.

The session is persistent (``clean_start`` false, ``uplink.session_expiry``): with an ``on_command`` handler the
link subscribes to ``fl/{gateway}/down/commands`` at QoS 1, and commands the cloud sent while the gateway was
offline arrive when it reconnects. The handler acknowledges each command (manual PUBACK) when it is done with it.

``reconnect()`` swaps credentials without losing or duplicating anything (a renewed certificate, see
``renewal.py``): the link stops taking new batches, waits up to ``SWAP_DRAIN`` seconds for the acknowledgements in
flight, disconnects cleanly (no will, so no offline status) and connects again at once with the TLS files read
afresh. A batch still unacknowledged then goes up again with its sequence number, which the cloud deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.backoff import Backoff
from edge_agent.committer import Committer
from edge_agent.config import UplinkConfig
from edge_agent.errors import LinkError, LinkRefused
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_link import Message, MqttLink, Will
from edge_agent.outbox import Outbox, StoredBatch
from edge_agent.store import StoreThread
from fieldline.wire import Topics, encode_batch, uplink_topic

log = logging.getLogger(__name__)

SWAP_DRAIN = 10.0
"""Seconds a credential swap waits for the acknowledgements in flight before it disconnects anyway."""

CommandHandler = Callable[[Message, Callable[[Message], None]], None]
"""Receives a message from ``fl/{gateway}/down/commands`` and the function that acknowledges it."""


class Uplink:
    """Drains the outbox to the cloud broker for as long as it runs."""

    def __init__(
        self,
        config: UplinkConfig,
        gateway_id: str,
        thread: StoreThread,
        outbox: Outbox,
        committer: Committer,
        metrics: AgentMetrics,
        *,
        status: Callable[[], dict[str, Any]],
        on_command: CommandHandler | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.thread = thread
        self.outbox = outbox
        self.committer = committer
        self.metrics = metrics
        self.status = status
        self.on_command = on_command
        self.clock = clock
        self.link: MqttLink | None = None
        self.connected = False
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._swap = asyncio.Event()
        self._acked: set[int] = set()  # acknowledged, delete not yet committed
        self._backoff = Backoff(config.backoff.initial, config.backoff.max)
        committer.on_sealed = self._wake.set

    def _new_link(self) -> MqttLink:
        offline = orjson.dumps({"state": "offline", "gateway": self.gateway_id})
        handler = self.on_command

        def command(message: Message) -> None:
            assert handler is not None
            handler(message, link.ack)

        link = MqttLink(
            self.config.endpoint(),
            client_id=self.config.client_id or f"fl-gw-{self.gateway_id}",
            clean_start=False,
            session_expiry=int(self.config.session_expiry),
            keepalive=self.config.keepalive,
            protocol=self.config.protocol,
            will=Will(Topics.up_status(self.gateway_id), offline, qos=1, retain=True),
            on_message=command if handler is not None else None,
            manual_ack=handler is not None,
        )
        return link

    def reconnect(self) -> None:
        """Reconnect with the TLS files read again (see the module docstring); nothing to do while disconnected,
        since the next connection reads them anyway."""
        if self.connected:
            self._swap.set()
            self._wake.set()

    async def run(self) -> None:
        """Connect, drain, and reconnect with jittered exponential backoff, until cancelled."""
        first = True
        while True:
            if not first:
                self.metrics.uplink_reconnects += 1
            first = False
            link = self._new_link()
            try:
                await link.connect()
            except LinkError as exc:
                self.last_error = str(exc)
                delay = (
                    self.config.backoff.max if isinstance(exc, LinkRefused) else self._backoff.next_delay()
                )
                log.warning("uplink connect failed", extra={"error": str(exc), "retry_in": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            self.link, self.connected = link, True
            connected_at = time.monotonic()
            log.info("uplink connected", extra={"endpoint": str(link.endpoint)})
            try:
                if self.on_command is not None:
                    await link.subscribe([(Topics.down_commands(self.gateway_id), 1)])
                await self._publish_status(link, "online")
                await self._drain(link)
            except LinkError as exc:
                self.last_error = str(exc)
                log.warning("uplink lost", extra={"error": str(exc)})
            finally:
                self.connected = False
                self.link = None
                self.committer.in_flight.difference_update(self.committer.in_flight - self._acked)
                await link.close()
            if self._swap.is_set():
                self._swap.clear()
                self._backoff.reset()
                log.info("uplink reconnecting with renewed credentials")
                continue
            if time.monotonic() - connected_at > 10:
                self._backoff.reset()
            await asyncio.sleep(self._backoff.next_delay())

    async def _publish_status(self, link: MqttLink, state: str) -> None:
        body = {"state": state, "gateway": self.gateway_id, "ts": self.clock(), **self.status()}
        await link.publish(Topics.up_status(self.gateway_id), orjson.dumps(body), qos=1, retain=True)

    async def _drain(self, link: MqttLink) -> None:
        assert link.closed is not None
        window: dict[int, tuple[StoredBatch, int, asyncio.Future[None]]] = {}
        last_sent = 0
        inflight = self.config.inflight
        swap_deadline: float | None = None
        while True:
            self._wake.clear()  # before fetching: a seal during the fetch must wake the wait below
            self._forget_deleted()
            if self._swap.is_set() and swap_deadline is None:
                swap_deadline = time.monotonic() + SWAP_DRAIN
            if swap_deadline is not None and (not window or time.monotonic() >= swap_deadline):
                return  # a credential swap: run() disconnects and connects again at once
            if len(window) < inflight and swap_deadline is None:
                limit = inflight - len(window) + len(self._acked)
                for batch in await self.thread.run(self.outbox.fetch, last_sent, limit):
                    if batch.seq in self._acked:
                        last_sent = batch.seq
                        continue
                    if len(window) >= inflight:
                        break
                    window[batch.seq] = self._send(link, batch)
                    last_sent = batch.seq
            waiter = asyncio.ensure_future(self._wake.wait())
            waits: set[asyncio.Future[Any]] = {waiter, link.closed}
            if window:
                waits.add(window[min(window)][2])
            timeout = None if swap_deadline is None else max(0.0, swap_deadline - time.monotonic())
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()  # also when this task is cancelled: no orphan waiter left pending
            # Acknowledgements arrive in order; collect every one that is in.
            while window and window[min(window)][2].done():
                batch, size, fut = window.pop(min(window))
                fut.result()  # raises LinkError when the connection dropped
                self._acked.add(batch.seq)
                self.committer.batch_acked(batch.seq)
                self.metrics.uplink_batches += 1
                self.metrics.uplink_records += batch.count
                self.metrics.uplink_bytes += size
            self._forget_deleted()
            if link.closed.done():
                raise link.closed.result() or LinkError("connection closed", endpoint=str(link.endpoint))

    def _send(self, link: MqttLink, batch: StoredBatch) -> tuple[StoredBatch, int, asyncio.Future[None]]:
        now = self.clock()
        backfill = now - batch.created > self.config.backfill_after
        payload = encode_batch(
            self.gateway_id, batch.seq, batch.kind, batch.count, batch.body, backfill=backfill, sent_at=now
        )
        if backfill:
            self.metrics.uplink_backfill_batches += 1
        self.committer.in_flight.add(batch.seq)
        return batch, len(payload), link.publish(uplink_topic(self.gateway_id, batch.kind), payload, qos=1)

    def _forget_deleted(self) -> None:
        # Once the committer removed a seq from in_flight its delete is durable: stop filtering it.
        self._acked.intersection_update(self.committer.in_flight)

    async def shutdown(self, drain_for: float) -> None:
        """On agent shutdown: give the backlog ``drain_for`` seconds to go up, then say offline and disconnect."""
        link = self.link
        if link is None or not link.is_connected:
            return
        deadline = time.monotonic() + drain_for
        while time.monotonic() < deadline and link.is_connected:
            self._forget_deleted()
            if self.outbox.stats.batches <= len(self._acked):
                break
            await asyncio.sleep(0.05)
        if link.is_connected:
            with contextlib.suppress(LinkError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._publish_status(link, "offline")
