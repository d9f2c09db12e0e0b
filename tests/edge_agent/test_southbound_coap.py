"""The CoAP southbound over real UDP on 127.0.0.1: the server (aiocoap and libcoap clients) and the poller."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiocoap
import cbor2
import orjson
import pytest
from aiocoap import CON, Code, Message
from aiocoap.optiontypes import BlockOption
from aiocoap.resource import ObservableResource, Resource, Site
from pydantic import ValidationError

from edge_agent.coap_poller import CoapPoller, SourceStatus
from edge_agent.errors import CoapBindError
from edge_agent.southbound_coap import CoapConfig, CoapObserveConfig, CoapServer
from fieldline.errors import PayloadError
from tests.servicekit import free_port, require_binary

MAX_PAYLOAD = 4096
WAIT = 20.0  # seconds before a wait for something that must happen gives up


@dataclass
class Submission:
    device_id: str
    payload: bytes
    content_format: str | None
    source: str


class FakeIngest:
    """Records submissions; ``bad...`` payloads are refused, ``huge...`` too large, ``boom...`` crash."""

    def __init__(self) -> None:
        self.submissions: list[Submission] = []
        self.rejected: list[tuple[str | None, str]] = []
        self._changed = asyncio.Condition()

    def reject(self, device_id: str | None, payload: bytes, reason: str, detail: str, *, source: str) -> None:
        self.rejected.append((device_id, reason))

    async def submit(self, device_id: str, payload: bytes, content_format: str | None, *, source: str) -> int:
        if payload.startswith(b"bad"):
            raise PayloadError("bad_json", "invalid JSON: unexpected character", device_id=device_id)
        if payload.startswith(b"huge"):
            raise PayloadError("too_large", "payload over 100 bytes", device_id=device_id)
        if payload.startswith(b"boom"):
            raise RuntimeError("disk on fire")
        async with self._changed:
            self.submissions.append(Submission(device_id, payload, content_format, source))
            self._changed.notify_all()
        return 1

    async def wait_for(self, predicate: Callable[[list[Submission]], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.submissions)), WAIT)

    def payloads(self, device_id: str) -> list[bytes]:
        return [s.payload for s in self.submissions if s.device_id == device_id]


@pytest.fixture
def ingest() -> FakeIngest:
    return FakeIngest()


@pytest.fixture
async def codes() -> list[str]:
    return []


@pytest.fixture
async def server(ingest: FakeIngest, codes: list[str]) -> AsyncIterator[CoapServer]:
    config = CoapConfig(bind="127.0.0.1", port=0, max_payload=MAX_PAYLOAD)
    async with CoapServer(config, ingest, metrics_hook=codes.append) as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    yield ctx
    await ctx.shutdown()


async def request(client: aiocoap.Context, server: CoapServer, path: str, **kwargs: object) -> Message:
    message = Message(uri=f"coap://127.0.0.1:{server.port}{path}", **kwargs)
    return await asyncio.wait_for(client.request(message).response, WAIT)


# ---------------------------------------------------------------------------------------------- config


def test_config_parses_sizes_and_durations() -> None:
    config = CoapConfig.model_validate(
        {
            "max_payload": "16KiB",
            "observe": [{"device_id": "dev-1", "uri": "coap://10.0.0.5/temp", "interval": "5s"}],
        }
    )
    assert config.max_payload == 16384
    assert config.observe[0].interval == 5.0
    assert config.observe[0].mode == "observe"


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 70000},
        {"max_payload": "lots"},
        {"unknown": 1},
        {"observe": [{"device_id": "dev-1", "uri": "http://10.0.0.5/temp"}]},
        {"observe": [{"device_id": "dev-1", "uri": "coap://10.0.0.5:99999/temp"}]},
        {"observe": [{"device_id": "bad id", "uri": "coap://10.0.0.5/temp"}]},
        {"observe": [{"device_id": "dev-1", "uri": "coap://10.0.0.5/t", "content_format": "xml"}]},
        {"observe": [{"device_id": "dev-1", "uri": "coap://10.0.0.5/t", "interval": 0}]},
    ],
)
def test_config_refuses_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CoapConfig.model_validate(bad)


# ---------------------------------------------------------------------------------------------- server


async def test_bound_port_is_reported(server: CoapServer) -> None:
    assert server.port is not None
    assert server.port > 0


async def test_bind_failure_is_a_coap_bind_error(ingest: FakeIngest) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(CoapBindError, match=f"udp 127.0.0.1:{port}: Address already in use"):
            async with CoapServer(CoapConfig(bind="127.0.0.1", port=port), ingest):
                pass


@pytest.mark.parametrize(
    ("payload", "number", "name"),
    [
        (orjson.dumps({"metrics": {"t": 21.5}}), 50, "json"),
        (cbor2.dumps({"metrics": {"t": 21.5}}), 60, "cbor"),
        (orjson.dumps([{"n": "t", "v": 21.5}]), 110, "senml+json"),
        (cbor2.dumps([{0: "t", 2: 21.5}]), 112, "senml+cbor"),
        (orjson.dumps({"metrics": {"t": 21.5}}), None, None),
    ],
)
async def test_post_is_submitted_and_changed(
    server: CoapServer,
    client: aiocoap.Context,
    ingest: FakeIngest,
    codes: list[str],
    payload: bytes,
    number: int | None,
    name: str | None,
) -> None:
    response = await request(
        client, server, "/t/dev-1", code=Code.POST, payload=payload, content_format=number
    )
    assert response.code == Code.CHANGED
    assert response.payload == b""
    assert ingest.submissions == [Submission("dev-1", payload, name, "coap")]
    assert codes == ["2.04"]


async def test_bad_payload_is_bad_request_with_diagnostic(
    server: CoapServer, client: aiocoap.Context, codes: list[str]
) -> None:
    response = await request(client, server, "/t/dev-1", code=Code.POST, payload=b"bad{", content_format=50)
    assert response.code == Code.BAD_REQUEST
    assert response.payload == b"invalid JSON: unexpected character"
    assert response.opt.content_format == 0
    assert codes == ["4.00"]


async def test_too_large_from_ingest_is_4_13(server: CoapServer, client: aiocoap.Context) -> None:
    response = await request(
        client, server, "/t/dev-1", code=Code.POST, payload=b"huge" * 10, content_format=50
    )
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert b"100 bytes" in response.payload


async def test_oversize_blockwise_upload_is_refused_before_decoding(
    server: CoapServer, client: aiocoap.Context, ingest: FakeIngest, codes: list[str]
) -> None:
    payload = orjson.dumps({"metrics": {f"m{i}": i for i in range(1000)}})
    assert len(payload) > MAX_PAYLOAD
    response = await request(client, server, "/t/dev-1", code=Code.POST, payload=payload, content_format=50)
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert response.opt.size1 == MAX_PAYLOAD
    assert ingest.submissions == []
    assert ingest.rejected == [("dev-1", "too_large")]  # refused data is still quarantined
    assert codes == ["4.13"]


async def test_blockwise_upload_within_the_limit_is_reassembled(
    server: CoapServer, client: aiocoap.Context, ingest: FakeIngest
) -> None:
    payload = orjson.dumps({"metrics": {f"m{i}": i for i in range(300)}})
    assert 1024 < len(payload) <= MAX_PAYLOAD  # more than one block of aiocoap's default size
    response = await request(client, server, "/t/dev-1", code=Code.POST, payload=payload, content_format=50)
    assert response.code == Code.CHANGED
    assert ingest.payloads("dev-1") == [payload]


@pytest.mark.parametrize(
    ("path", "kwargs", "code"),
    [
        ("/t/dev-1", {"code": Code.GET}, Code.METHOD_NOT_ALLOWED),
        ("/t/dev-1", {"code": Code.PUT, "payload": b"{}"}, Code.METHOD_NOT_ALLOWED),
        (
            "/t/dev-1",
            {"code": Code.POST, "payload": b"{}", "content_format": 0},
            Code.UNSUPPORTED_CONTENT_FORMAT,
        ),
        (
            "/t/dev-1",
            {"code": Code.POST, "payload": b"{}", "content_format": 40},
            Code.UNSUPPORTED_CONTENT_FORMAT,
        ),
        ("/t/-dev", {"code": Code.POST, "payload": b"{}"}, Code.BAD_REQUEST),
        ("/t/dev-1/extra", {"code": Code.POST, "payload": b"{}"}, Code.NOT_FOUND),
        ("/t", {"code": Code.POST, "payload": b"{}"}, Code.NOT_FOUND),
        ("/other", {"code": Code.POST, "payload": b"{}"}, Code.NOT_FOUND),
    ],
)
async def test_refusals(
    server: CoapServer,
    client: aiocoap.Context,
    ingest: FakeIngest,
    path: str,
    kwargs: dict[str, object],
    code: Code,
) -> None:
    response = await request(client, server, path, **kwargs)
    assert response.code == code
    assert ingest.submissions == []
    # Refused data (a bad device id, an unknown content-format) is quarantined; wrong paths/methods are not data.
    expected = {Code.BAD_REQUEST: "bad_device_id", Code.UNSUPPORTED_CONTENT_FORMAT: "bad_content_format"}
    assert [reason for _, reason in ingest.rejected] == ([expected[code]] if code in expected else [])


async def test_ingest_crash_is_5_00_and_the_server_keeps_serving(
    server: CoapServer, client: aiocoap.Context, ingest: FakeIngest, caplog: pytest.LogCaptureFixture
) -> None:
    response = await request(client, server, "/t/dev-1", code=Code.POST, payload=b"boom", content_format=50)
    assert response.code == Code.INTERNAL_SERVER_ERROR
    assert response.payload == b"internal error"
    assert any(r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in caplog.records)
    response = await request(client, server, "/t/dev-1", code=Code.POST, payload=b"{}", content_format=50)
    assert response.code == Code.CHANGED


async def test_health_and_well_known_core(server: CoapServer, client: aiocoap.Context) -> None:
    health = await request(client, server, "/health", code=Code.GET)
    assert (health.code, health.payload) == (Code.CONTENT, b"ok")
    listing = await request(client, server, "/.well-known/core", code=Code.GET)
    assert listing.code == Code.CONTENT
    links = listing.payload.decode()
    assert '</t>;ct="50 60 110 112";rt="fieldline.telemetry"' in links
    assert "</health>" in links


# ------------------------------------------------------------------------- raw datagrams (no client logic)

_mids = itertools.count(1)


def _datagram(path: tuple[str, ...], payload: bytes, block1: tuple[int, bool] | None = None) -> bytes:
    message = Message(code=Code.POST, uri_path=path, payload=payload, content_format=50)
    message.mtype = CON
    message.mid = next(_mids)
    message.token = b"\x2a"
    if block1 is not None:
        message.opt.block1 = BlockOption.BlockwiseTuple(block1[0], block1[1], 6)
    return message.encode()


async def exchange(port: int, *datagrams: bytes) -> list[Message]:
    """Send each datagram and read its answer, from one socket, in a thread so the server keeps serving."""

    def run() -> list[Message]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(("127.0.0.1", port))
            answers = []
            for datagram in datagrams:
                sock.send(datagram)
                answers.append(Message.decode(sock.recv(65536)))
            return answers

    return await asyncio.to_thread(run)


async def test_single_datagram_larger_than_4096_bytes_arrives_whole(ingest: FakeIngest) -> None:
    # aiocoap's receive buffer is 4096 bytes; the server widens it so such a request is not truncated.
    payload = orjson.dumps({"metrics": {f"m{i}": i for i in range(800)}})
    assert 4096 < len(payload) <= 16384
    config = CoapConfig(bind="127.0.0.1", port=0)
    async with CoapServer(config, ingest) as srv:
        assert srv.port is not None
        [answer] = await exchange(srv.port, _datagram(("t", "dev-1"), payload))
    assert answer.code == Code.CHANGED
    assert ingest.payloads("dev-1") == [payload]


async def test_single_oversize_datagram_is_4_13(server: CoapServer, ingest: FakeIngest) -> None:
    assert server.port is not None
    [answer] = await exchange(server.port, _datagram(("t", "dev-1"), b"x" * (MAX_PAYLOAD + 1)))
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert answer.opt.size1 == MAX_PAYLOAD
    assert ingest.submissions == []


async def test_blockwise_upload_without_size1_is_refused_at_the_block_crossing_the_limit(
    server: CoapServer, ingest: FakeIngest
) -> None:
    assert server.port is not None
    blocks = MAX_PAYLOAD // 1024 + 2
    datagrams = [_datagram(("t", "dev-1"), b"x" * 1024, (n, n < blocks - 1)) for n in range(blocks)]
    answers = await exchange(server.port, *datagrams[: MAX_PAYLOAD // 1024 + 1])
    assert [a.code for a in answers[:-1]] == [Code.CONTINUE] * (MAX_PAYLOAD // 1024)
    assert answers[-1].code == Code.REQUEST_ENTITY_TOO_LARGE
    assert answers[-1].opt.size1 == MAX_PAYLOAD
    assert ingest.submissions == []


# ------------------------------------------------------------------------------------------ libcoap


async def coap_client(*args: str) -> tuple[int, str]:
    binary = require_binary("coap-client-notls", "coap-client")
    process = await asyncio.create_subprocess_exec(
        binary, "-B", "10", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), WAIT)
    return process.returncode or 0, output.decode("utf-8", "replace")


async def test_libcoap_client_post(server: CoapServer, ingest: FakeIngest) -> None:
    url = f"coap://127.0.0.1:{server.port}/t/dev-1"
    returncode, output = await coap_client("-m", "post", "-t", "50", "-e", '{"metrics":{"t":1}}', url)
    assert returncode == 0, output
    assert ingest.submissions == [Submission("dev-1", b'{"metrics":{"t":1}}', "json", "coap")]


async def test_libcoap_client_sees_the_diagnostic(server: CoapServer, ingest: FakeIngest) -> None:
    url = f"coap://127.0.0.1:{server.port}/t/dev-1"
    _, output = await coap_client("-m", "post", "-t", "50", "-e", "bad{", url)
    assert "4.00" in output
    assert "invalid JSON: unexpected character" in output
    assert ingest.submissions == []


async def test_libcoap_blockwise_upload(server: CoapServer, ingest: FakeIngest) -> None:
    url = f"coap://127.0.0.1:{server.port}/t/dev-1"
    fits = orjson.dumps({"metrics": {f"m{i}": i for i in range(300)}})
    returncode, output = await coap_client("-m", "post", "-t", "50", "-b", "512", "-e", fits.decode(), url)
    assert returncode == 0, output
    assert ingest.payloads("dev-1") == [fits]
    too_big = orjson.dumps({"metrics": {f"m{i}": i for i in range(1000)}})
    _, output = await coap_client("-m", "post", "-t", "50", "-b", "512", "-e", too_big.decode(), url)
    assert "4.13" in output
    assert ingest.payloads("dev-1") == [fits]


# ------------------------------------------------------------------------------------------- poller


class Thermometer(ObservableResource):
    """An observable JSON reading whose notifications are fresh for one second."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 1

    def set(self, value: int) -> None:
        self.value = value
        self.updated_state()

    async def render_get(self, request: Message) -> Message:
        payload = orjson.dumps({"metrics": {"t": self.value}})
        return Message(code=Code.CONTENT, payload=payload, content_format=50, max_age=1)


class Hygrometer(Resource):
    """A plain CBOR reading, answered without a Content-Format so the configured one applies."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 40

    async def render_get(self, request: Message) -> Message:
        return Message(code=Code.CONTENT, payload=cbor2.dumps({"metrics": {"h": self.value}}))


class Device:
    """A CoAP device on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port(socket.SOCK_DGRAM)
        self.thermometer = Thermometer()
        self.hygrometer = Hygrometer()
        self.context: aiocoap.Context | None = None

    async def start(self) -> None:
        site = Site()
        site.add_resource(["temp"], self.thermometer)
        site.add_resource(["hum"], self.hygrometer)
        self.context = await aiocoap.Context.create_server_context(
            site, bind=("127.0.0.1", self.port), transports=["udp6"]
        )

    async def stop(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None

    def uri(self, path: str) -> str:
        return f"coap://127.0.0.1:{self.port}/{path}"


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = Device()
    await dev.start()
    yield dev
    await dev.stop()


def poller_for(device: Device, ingest: FakeIngest) -> CoapPoller:
    sources = [
        CoapObserveConfig(device_id="dev-obs", uri=device.uri("temp"), interval=0.2),
        CoapObserveConfig(
            device_id="dev-poll", uri=device.uri("hum"), mode="poll", interval=0.1, content_format="cbor"
        ),
    ]
    return CoapPoller(sources, ingest)


def temperature(value: int) -> bytes:
    return orjson.dumps({"metrics": {"t": value}})


def humidity(value: int) -> bytes:
    return cbor2.dumps({"metrics": {"h": value}})


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the status counters are plain ints, there is nothing to await
            await asyncio.sleep(0.02)


async def test_poller_observes_and_polls(device: Device, ingest: FakeIngest) -> None:
    async with poller_for(device, ingest) as poller:
        await ingest.wait_for(lambda s: temperature(1) in [x.payload for x in s])
        device.thermometer.set(2)
        device.thermometer.set(3)
        await ingest.wait_for(lambda s: temperature(3) in [x.payload for x in s])
        await ingest.wait_for(lambda s: len([x for x in s if x.device_id == "dev-poll"]) >= 3)
        observed, polled = poller.status
    kinds = {(s.device_id, s.content_format, s.source) for s in ingest.submissions}
    assert kinds == {("dev-obs", "json", "coap-observe"), ("dev-poll", "cbor", "coap-observe")}
    assert set(ingest.payloads("dev-poll")) == {humidity(40)}
    assert observed.registrations >= 1
    assert observed.failures == 0
    assert polled.registrations >= 3
    assert polled.points >= 3


async def test_poller_counts_refused_payloads(device: Device, ingest: FakeIngest) -> None:
    device.thermometer.value = 0
    sources = [CoapObserveConfig(device_id="dev-obs", uri=device.uri("temp"), interval=0.2)]
    render = device.thermometer.render_get

    async def bad_first(request: Message) -> Message:
        response = await render(request)
        if device.thermometer.value == 0:
            response.payload = b"bad{"
        return response

    device.thermometer.render_get = bad_first  # type: ignore[method-assign]
    async with CoapPoller(sources, ingest) as poller:
        [status] = poller.status
        await wait_until(lambda: status.payload_errors == 1)
        device.thermometer.set(5)
        await ingest.wait_for(lambda s: temperature(5) in [x.payload for x in s])
    assert status.last_error is not None
    assert status.last_error.startswith("bad_json")


async def test_poller_recovers_after_the_device_restarts(device: Device, ingest: FakeIngest) -> None:
    async with poller_for(device, ingest) as poller:
        observed, polled = poller.status
        await ingest.wait_for(lambda s: temperature(1) in [x.payload for x in s])
        await ingest.wait_for(lambda s: humidity(40) in [x.payload for x in s])

        await device.stop()
        await wait_until(lambda: observed.failures > 0 and polled.failures > 0)

        device.thermometer.value = 7
        device.hygrometer.value = 70
        await device.start()
        await ingest.wait_for(lambda s: temperature(7) in [x.payload for x in s])
        await ingest.wait_for(lambda s: humidity(70) in [x.payload for x in s])
        device.thermometer.set(8)  # notifications flow on the new registration
        await ingest.wait_for(lambda s: temperature(8) in [x.payload for x in s])
    assert isinstance(observed, SourceStatus)
    assert observed.registrations >= 2
    assert observed.last_error is not None
    assert polled.last_error is not None


async def test_poller_registers_again_when_an_observation_goes_silent(
    device: Device, ingest: FakeIngest
) -> None:
    sources = [CoapObserveConfig(device_id="dev-obs", uri=device.uri("temp"), interval=0.2)]
    async with CoapPoller(sources, ingest) as poller:
        [status] = poller.status
        await ingest.wait_for(lambda s: temperature(1) in [x.payload for x in s])
        # A quick reboot: nothing was sent meanwhile, so only the Max-Age (1 s) running out tells the poller.
        await device.stop()
        device.thermometer.value = 9
        await device.start()
        await ingest.wait_for(lambda s: temperature(9) in [x.payload for x in s])
        device.thermometer.set(10)
        await ingest.wait_for(lambda s: temperature(10) in [x.payload for x in s])
    assert status.registrations >= 2


async def test_observe_on_a_plain_resource_fetches_it_every_interval(
    device: Device, ingest: FakeIngest
) -> None:
    sources = [CoapObserveConfig(device_id="dev-h", uri=device.uri("hum"), interval=0.05)]
    async with CoapPoller(sources, ingest) as poller:
        await ingest.wait_for(lambda s: len(s) >= 3)
        [status] = poller.status
    assert status.failures == 0
    assert {s.content_format for s in ingest.submissions} == {None}


async def test_poller_counts_error_responses(device: Device, ingest: FakeIngest) -> None:
    sources = [CoapObserveConfig(device_id="dev-x", uri=device.uri("missing"), mode="poll", interval=0.05)]
    async with CoapPoller(sources, ingest) as poller:
        [status] = poller.status
        await wait_until(lambda: status.failures >= 2)
    assert status.last_error is not None
    assert "4.04" in status.last_error
    assert ingest.submissions == []


async def test_poller_without_sources_is_a_no_op(ingest: FakeIngest) -> None:
    async with CoapPoller([], ingest) as poller:
        assert poller.status == []
