"""One router per resource; ``ROUTERS`` is what the app mounts."""

from cloud_core.api.routes import (
    audit,
    commands,
    device_types,
    devices,
    events,
    gateways,
    health,
    keys,
    pki,
    telemetry,
)

ROUTERS = [
    health.router,
    keys.router,
    audit.router,
    devices.router,
    gateways.router,
    device_types.router,
    events.router,
    events.alerts_router,
    commands.router,
    telemetry.router,
    pki.router,
]
