"""Southbound MQTT: the agent's subscription on the gateway's local broker.

The session is persistent (``clean_start=False`` with a session expiry), and QoS 1 messages are acknowledged
manually, after the commit that made them durable. If the agent dies before that commit, the broker still holds
the unacknowledged messages and sends them again when the agent reconnects with the same client id. The
broker's in-flight window towards the agent is the MQTT 5 Receive Maximum we announce; the committer commits as
soon as half of it is waiting for acknowledgement, so the broker never stalls on us.
"""

from __future__ import annotations

import asyncio
import logging

from edge_agent.backoff import Backoff
from edge_agent.config import MqttSouthboundConfig
from edge_agent.errors import LinkError
from edge_agent.ingest import Ingest
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_subscriber import InboundMessage, MqttSubscriber
from fieldline.wire import Topics

log = logging.getLogger(__name__)


class MqttSouthbound:
    """Keeps the subscription alive and feeds every message to ``Ingest``."""

    def __init__(
        self, config: MqttSouthboundConfig, gateway_id: str, ingest: Ingest, metrics: AgentMetrics
    ) -> None:
        self.config = config
        self.client_id = config.client_id or f"fl-agent-{gateway_id}"
        self.ingest = ingest
        self.metrics = metrics
        self.link: MqttSubscriber | None = None
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self._backoff = Backoff(1.0, 30.0)

    async def run(self) -> None:
        first = True
        while True:
            if not first:
                self.metrics.southbound_reconnects += 1
            first = False
            link = self._new_link()
            try:
                await link.connect()
                qos = self.config.qos
                await link.subscribe(
                    [(Topics.DEVICE_TELEMETRY_FILTER, qos), (Topics.DEVICE_STATE_FILTER, qos)]
                )
            except LinkError as exc:
                self.last_error = str(exc)
                await link.close()
                delay = self._backoff.next_delay()
                log.warning(
                    "local broker unreachable", extra={"error": str(exc), "retry_in": round(delay, 2)}
                )
                await asyncio.sleep(delay)
                continue
            self.link = link
            self._backoff.reset()
            self.connected.set()
            log.info("subscribed to the local broker", extra={"endpoint": str(link.endpoint)})
            assert link.closed is not None
            try:
                reason = await link.closed
                self.last_error = str(reason) if reason else None
            finally:
                self.connected.clear()
                self.link = None
                await link.close()
            await asyncio.sleep(self._backoff.next_delay())

    def _new_link(self) -> MqttSubscriber:
        """A connection whose QoS 1 messages are acknowledged on that same connection, after commit."""

        def on_messages(messages: list[InboundMessage]) -> None:
            self.ingest.on_mqtt_messages(messages, link)
            committer = self.ingest.committer
            if committer.full and link.pause_reading():
                committer.hold(link.resume_reading)

        link = MqttSubscriber(
            self.config.endpoint(),
            client_id=self.client_id,
            clean_start=False,
            session_expiry=int(self.config.session_expiry),
            keepalive=self.config.keepalive,
            protocol=self.config.protocol,
            receive_maximum=self.config.receive_maximum,
            on_messages=on_messages,
        )
        return link

    async def close(self) -> None:
        """Stop receiving. Unacknowledged QoS 1 messages stay with the broker's session for the next run."""
        if self.link is not None:
            await self.link.close()
