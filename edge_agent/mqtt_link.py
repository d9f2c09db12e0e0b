"""One MQTT connection driven by the asyncio loop: paho-mqtt 2 wrapped once, at this boundary.

paho is used (not aiomqtt) because the southbound needs manual acknowledgement: a QoS 1 PUBLISH is acknowledged
only after the agent made it durable. The socket is driven by ``add_reader``/``add_writer`` on the running loop,
so there is no network thread; callbacks become futures. A ``MqttLink`` is one connection's lifetime: after it
drops, the owner builds a new one (a fresh paho client), which keeps paho's own retransmission state out of the
agent's exactly-once bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import LinkError, LinkRefused

log = logging.getLogger(__name__)

Message = paho.MQTTMessage


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class MqttLink:
    """An MQTT 5 (or 3.1.1, for brokers such as amqtt) connection. Use ``async with MqttLink(...) as link`` or ``connect``/``close``.

    ``on_message`` runs synchronously in the loop for every PUBLISH received; with ``manual_ack`` the owner must
    call ``ack(message)`` for each QoS 1 message once it is durable.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client_id: str,
        clean_start: bool = True,
        session_expiry: int = 0,
        keepalive: int = 30,
        receive_maximum: int | None = None,
        will: Will | None = None,
        on_message: Callable[[Message], None] | None = None,
        manual_ack: bool = False,
        protocol: str = "5",
    ) -> None:
        self.endpoint = endpoint
        self.v5 = protocol == "5"
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._keepalive = keepalive
        self._receive_maximum = receive_maximum
        self._will = will
        self._on_message = on_message
        self._manual_ack = manual_ack
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[bool] | None = None
        self.closed: asyncio.Future[LinkError | None] | None = None
        self._pending_pub: dict[int, asyncio.Future[None]] = {}
        self._pending_sub: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._misc_task: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self.session_present = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MqttLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self, within: float = 10.0) -> None:
        """Open the connection; raises ``LinkRefused`` on a CONNACK refusal, ``LinkError`` otherwise."""
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        self.closed = self._loop.create_future()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else self._clean_start,
            manual_ack=self._manual_ack,
        )
        client.max_inflight_messages_set(0)  # the owner bounds its own in-flight window
        client.max_queued_messages_set(0)
        if self.endpoint.username is not None:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls is not None:
            client.tls_set_context(self.endpoint.tls)
        if self._will is not None:
            client.will_set(self._will.topic, self._will.payload, self._will.qos, self._will.retain)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        if self._on_message is not None:
            client.on_message = self._handle_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_register_write
        client.on_socket_unregister_write = self._socket_unregister_write
        self._client = client

        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self._session_expiry:
                props.SessionExpiryInterval = self._session_expiry
            if self._receive_maximum:
                props.ReceiveMaximum = self._receive_maximum
            options: dict[str, Any] = {"clean_start": self._clean_start, "properties": props}
        else:
            options = {}
        try:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for loses a cancellation that arrives as the
            # awaited future completes, and a task cancelled at shutdown would then go on running
            async with asyncio.timeout(within):
                await self._loop.run_in_executor(
                    None,
                    lambda: client.connect(
                        self.endpoint.host, self.endpoint.port, self._keepalive, **options
                    ),
                )
                await asyncio.shield(self._connected)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._teardown()
            raise LinkError(
                f"cannot connect: {exc or type(exc).__name__}", endpoint=str(self.endpoint)
            ) from exc
        except LinkError:
            self._teardown()
            raise

    async def close(self) -> None:
        """Send DISCONNECT (no will) and release the socket."""
        client = self._client
        if client is None:
            return
        if self.closed is not None and not self.closed.done():
            with contextlib.suppress(OSError, ValueError):
                client.disconnect()
                client.loop_write()
        self._teardown()

    def _teardown(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        if self._misc_task is not None:
            self._misc_task.cancel()
            self._misc_task = None
        if self._client is not None:
            with contextlib.suppress(OSError, ValueError):
                sock = self._client.socket()
                if sock is not None:
                    sock.close()
        self._fail_pending(LinkError("connection closed", endpoint=str(self.endpoint)))
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._client = None

    def _fail_pending(self, exc: LinkError) -> None:
        for fut in [*self._pending_pub.values(), *self._pending_sub.values()]:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: the owner may not be awaiting every future
        self._pending_pub.clear()
        self._pending_sub.clear()

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self.closed is not None and not self.closed.done()

    # ------------------------------------------------------------------ operations

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the future resolves on PUBACK (QoS 1) or once written (QoS 0)."""
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._client is None or not self.is_connected:
            fut.set_exception(LinkError("not connected", endpoint=str(self.endpoint)))
            return fut
        info = self._client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            fut.set_exception(
                LinkError(f"publish failed: {paho.error_string(info.rc)}", endpoint=str(self.endpoint))
            )
            return fut
        if qos == 0 or info.is_published():
            fut.set_result(None)
        else:
            self._pending_pub[info.mid] = fut
        return fut

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe and return the granted QoS per filter; a refused filter raises ``LinkError``."""
        assert self._client is not None
        assert self._loop is not None
        rc, mid = self._client.subscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"subscribe failed: {paho.error_string(rc)}", endpoint=str(self.endpoint))
        fut: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._pending_sub[mid] = fut
        codes = await fut
        granted = []
        for (topic, _), code in zip(filters, codes, strict=False):
            if code.is_failure:
                raise LinkError(f"subscription to {topic} refused: {code}", endpoint=str(self.endpoint))
            granted.append(code.value)
        return granted

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message received with ``manual_ack``."""
        if self._client is not None and message.qos > 0:
            self._client.ack(message.mid, message.qos)

    # ------------------------------------------------------------------ paho callbacks (loop thread)

    def _handle_connect(
        self, client: paho.Client, _ud: Any, flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        assert self._connected is not None
        if self._connected.done():
            return
        if reason.is_failure:
            self._connected.set_exception(
                LinkRefused(f"connection refused: {reason}", endpoint=str(self.endpoint))
            )
        else:
            self.session_present = bool(flags.session_present)
            self._connected.set_result(True)

    def _handle_disconnect(self, _c: paho.Client, _ud: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        err = LinkError(f"disconnected: {reason}", endpoint=str(self.endpoint))
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(err)
        self._fail_pending(err)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(err)

    def _handle_publish(self, _c: paho.Client, _ud: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        fut = self._pending_pub.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(LinkError(f"publish refused: {reason}", endpoint=str(self.endpoint)))
        else:
            fut.set_result(None)

    def _handle_subscribe(
        self, _c: paho.Client, _ud: Any, mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        fut = self._pending_sub.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _handle_message(self, _c: paho.Client, _ud: Any, message: Message) -> None:
        assert self._on_message is not None
        self._on_message(message)

    # ------------------------------------------------------------------ socket plumbing

    def _socket_open(self, client: paho.Client, _ud: Any, sock: Any) -> None:
        # Called from the executor thread running connect(): hand over to the loop thread.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._attach, sock.fileno())

    def _attach(self, fd: int) -> None:
        assert self._loop is not None
        self._fd = fd
        self._loop.add_reader(fd, self._readable)
        if self._client is not None and self._client.want_write():
            self._loop.add_writer(fd, self._writable)
        self._misc_task = self._loop.create_task(self._misc())

    def _socket_close(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None

    def _socket_register_write(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        if self._loop is None:
            return
        if self._fd is None:
            return  # not attached yet; _attach checks want_write()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._loop.add_writer(self._fd, self._writable)
        else:
            self._loop.call_soon_threadsafe(self._loop.add_writer, self._fd, self._writable)

    def _socket_unregister_write(self, _client: paho.Client, _ud: Any, sock: Any) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            # Drain every complete packet available instead of one per loop iteration: paho's public
            # loop_read() handles a single packet when nothing is in flight, which costs a loop turn per message.
            for _ in range(1000):
                rc = client._packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN or self._client is None:
                    break
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    client._loop_rc_handle(rc)
                    break
        except (OSError, ssl.SSLError) as exc:
            self._lost(exc)

    def _writable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.loop_write()
        except (OSError, ssl.SSLError) as exc:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        err = LinkError(f"connection lost: {exc}", endpoint=str(self.endpoint))
        log.warning("mqtt connection lost", extra={"endpoint": str(self.endpoint), "error": str(exc)})
        self._fail_pending(err)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(err)
        self._teardown()

    async def _misc(self) -> None:
        while self._client is not None:
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                if self.closed is not None and not self.closed.done():
                    self._lost(ConnectionError("keepalive failed"))
                return
            await asyncio.sleep(1)
