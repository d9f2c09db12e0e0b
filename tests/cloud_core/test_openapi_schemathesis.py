"""Every operation of the app's OpenAPI document, fuzzed by schemathesis against the real server: no 5xx, every
status, content type, header and body as documented, and credentials enforced (a request without them is
refused). Covers whatever routes are mounted; positive and negative examples, a bounded number per operation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote, urlencode

import schemathesis
import schemathesis.checks as st_checks
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable

from tests.cloud_core.cloudkit import running_cloud

MAX_HEAD = 16 * 1024 - 1024
"""h11's limit on an incomplete request head, less room for the request line and fixed headers."""
EXAMPLES = 20
"""Per operation and generation mode; the whole run stays well under 90 s."""
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
    st_checks.ignored_auth,
]


def head_size(case: schemathesis.Case) -> int:
    """Roughly the bytes of the request line and the generated headers, as sent."""
    query = urlencode(case.query or {}, doseq=True)
    headers = sum(len(str(k)) + len(str(v)) + 4 for k, v in (case.headers or {}).items())
    return len(quote(case.formatted_path)) + len(query) + headers


def fuzz(url: str, token: str) -> tuple[list[str], list[str]]:
    """(operation labels, failure reports); runs in a thread while the server's event loop keeps serving."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    labels, failures = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                # uvicorn (h11) may refuse a request head over 16 KiB before the app sees it: not the app's answer
                if head_size(case) > MAX_HEAD:
                    reject()
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, (
                    operation.label
                )  # nothing to make invalid
            except (AssertionError, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value} examples):\n{exc}")
    return labels, failures


async def test_every_operation_conforms_to_the_openapi_document(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud:
        async with cloud.client() as client:
            spec = (await client.get("/openapi.json")).json()
        labels, failures = await asyncio.to_thread(fuzz, cloud.url, cloud.keys["admin"])
    documented = {f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item}
    assert set(labels) == documented
    assert not failures, "\n\n".join(failures)
