"""SQLAlchemy models of the cloud core's database (registry, ingest bookkeeping, events, commands, access, PKI).

Each module holds one concept; all share ``Base`` so Alembic sees every table. The schema is created and
upgraded by the migrations in ``cloud_core/migrations`` (never by ``create_all`` outside tests)."""

from cloud_core.models.access import ApiKey, AuditEntry
from cloud_core.models.base import Base
from cloud_core.models.commands import Command, CommandStatus
from cloud_core.models.events import Alert, AlertStatus, EventRow
from cloud_core.models.ingest import IngestMark, QuarantinedBatch
from cloud_core.models.pki import EnrollmentToken, IssuedCertificate
from cloud_core.models.registry import Device, DeviceType, Gateway

__all__ = [
    "Alert",
    "AlertStatus",
    "ApiKey",
    "AuditEntry",
    "Base",
    "Command",
    "CommandStatus",
    "Device",
    "DeviceType",
    "EnrollmentToken",
    "EventRow",
    "Gateway",
    "IngestMark",
    "IssuedCertificate",
    "QuarantinedBatch",
]
