"""One router per resource; ``ROUTERS`` is what the app mounts."""

from cloud_core.api.routes import health

ROUTERS = [health.router]
