"""A hypothesis corpus of malformed payloads over MQTT and CoAP: the agent keeps running, good data keeps flowing,
and every bad message lands in quarantine."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiocoap
import cbor2
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import Agent
from tests.factories import CloudCollector, Publisher, agent_config, eventually
from tests.servicekit import Mosquitto, free_port

MAX_PAYLOAD = 4096

json_integers = st.integers(-(2**63), 2**64 - 1)  # what orjson can encode (a JSON device cannot send more)
json_scalars = st.none() | st.booleans() | json_integers | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

bad_payloads = st.one_of(
    st.just(b""),  # empty
    st.binary(min_size=1, max_size=64).filter(
        lambda b: b[:1] not in (b"{", b"[") and not _is_cbor(b)
    ),  # bad CBOR
    st.text(min_size=1, max_size=40)
    .map(lambda t: ("{" + t).encode())
    .filter(lambda b: not _is_json(b)),  # bad JSON
    st.builds(
        lambda v: orjson.dumps({"metrics": {"temperature": v}}),  # wrong types
        st.lists(json_scalars, min_size=1, max_size=2)
        | st.dictionaries(st.text(max_size=3), json_scalars, min_size=1, max_size=2),
    ),
    st.builds(
        lambda k: orjson.dumps({"metrics": {"t": 1}, k: 1}),  # unknown fields
        st.text(min_size=1, max_size=10).filter(lambda k: k not in ("ts", "metrics")),
    ),
    st.builds(
        lambda n: b'{"metrics": {"t": "' + b"x" * n + b'"}}', st.integers(MAX_PAYLOAD, MAX_PAYLOAD * 4)
    ),  # huge
    st.builds(
        lambda v: cbor2.dumps({"metrics": v}), json_values.filter(lambda v: not isinstance(v, dict) or not v)
    ),
)


def _is_cbor(data: bytes) -> bool:
    try:
        cbor2.loads(data)
    except Exception:  # noqa: BLE001 - cbor2 raises assorted exception types on garbage
        return False
    return True


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpus=st.lists(bad_payloads, min_size=5, max_size=25))
async def test_malformed_corpus_over_mqtt_and_coap(
    tmp_path_factory,
    mosquitto: Mosquitto,
    cloud_mosquitto: Mosquitto,
    corpus: list[bytes],
) -> None:
    tmp_path: Path = tmp_path_factory.mktemp("agent")
    coap_port = _free_udp_port()
    config = agent_config(
        tmp_path,
        mosquitto.url,
        cloud_mosquitto.url,
        southbound={
            "mqtt": {"max_payload": MAX_PAYLOAD},
            "coap": {"enabled": True, "bind": "127.0.0.1", "port": coap_port, "max_payload": MAX_PAYLOAD},
        },
        gateway=f"gw-{time.monotonic_ns()}",
    )
    cloud = CloudCollector(cloud_mosquitto.port, client_id=f"cloud-{config.gateway.id}")
    async with Agent(config) as agent:
        await eventually(lambda: agent.southbound.connected.is_set())
        pub = Publisher(mosquitto.port, client_id=f"pub-{config.gateway.id}")
        coap = await aiocoap.Context.create_client_context()
        good = 0
        coap_codes = []
        try:
            for i, payload in enumerate(corpus):
                pub.publish("devices/bad-mqtt/telemetry", payload).wait_for_publish(5)
                request = aiocoap.Message(
                    code=aiocoap.POST, payload=payload, uri=f"coap://127.0.0.1:{coap_port}/t/bad-coap"
                )
                response = await asyncio.wait_for(coap.request(request).response, 10)
                coap_codes.append(response.code)
                # good data keeps flowing between bad messages, over both transports
                pub.telemetry("good-mqtt", time.time(), {"i": i}).wait_for_publish(5)
                ok = aiocoap.Message(
                    code=aiocoap.POST,
                    payload=orjson.dumps({"metrics": {"i": i}}),
                    uri=f"coap://127.0.0.1:{coap_port}/t/good-coap",
                )
                assert (await asyncio.wait_for(coap.request(ok).response, 10)).code == aiocoap.CHANGED
                good += 2
        finally:
            await coap.shutdown()
            pub.close()
        await eventually(
            lambda: agent.quarantine.rows == 2 * len(corpus),
            within=10,
            message=f"quarantine has {agent.quarantine.rows} of {2 * len(corpus)} bad messages",
        )
        await eventually(lambda: len(cloud.raw_points()) == good, within=15, message="good data did not flow")
        assert all(code in (aiocoap.BAD_REQUEST, aiocoap.REQUEST_ENTITY_TOO_LARGE) for code in coap_codes)
        assert sum(agent.metrics.quarantined.values()) == 2 * len(corpus)
        reasons = {e.reason for e in await agent.thread.run(agent.quarantine.recent, 1000)}
        assert reasons <= {
            "empty",
            "too_large",
            "bad_json",
            "bad_cbor",
            "bad_shape",
            "bad_type",
            "bad_name",
            "bad_senml",
        }
    cloud.close()
