"""A fleet's devices: one ``DeviceModel`` per id, each with its own random source.

A device's random source is seeded from the fleet seed and its id through BLAKE2b (not Python's ``hash``,
which changes between processes), so a device sends the same values and faults whatever other devices the fleet
holds and in whatever order the runtime plays them.
"""

from __future__ import annotations

import hashlib
import random

from device_sim.device import DeviceKind, DeviceModel
from device_sim.fleet import Fleet


def device_seed(seed: int, device_id: str) -> int:
    """The seed of a device's random source: stable across processes, Python versions and machines."""
    digest = hashlib.blake2b(f"{seed}\x00{device_id}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big")


def build_devices(fleet: Fleet, *, seed: int | None = None) -> list[DeviceModel]:
    """Every device of ``fleet``, in file order; ``seed`` overrides the fleet's. A fleet built in code rather than
    loaded from a file is checked here (``ConfigError``)."""
    fleet.check()
    run_seed = fleet.seed if seed is None else seed
    devices = []
    for template in fleet.devices:
        kind = DeviceKind(template)
        for device_id in template.device_ids():
            devices.append(DeviceModel(kind, device_id, random.Random(device_seed(run_seed, device_id))))
    return devices
