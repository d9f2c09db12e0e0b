"""Device simulator: fleets of realistic MQTT and CoAP devices with faults, closed-loop actuators, a load mode and
replay of recorded telemetry. docs/simulator.md describes the CLI and how to use it in tests;
docs/simulator-fleets.md the fleet file.

The model (``fleet``, ``device``, ``population``, generators, faults, actuators, codecs) is pure and
deterministic; the runtime (``runner``, ``load``, ``replay``, the MQTT and CoAP transports) does all the I/O.
"""

from device_sim.coap_transport import CoapSender
from device_sim.device import Connection, DeviceModel, Message, Tick
from device_sim.errors import CommandRejected, ConnectRefused, ReplayError, SimError, TransportError
from device_sim.fleet import DeviceTemplate, Fleet, load_fleet
from device_sim.load import LoadOptions, LoadReport, LoadRun
from device_sim.mqtt_client import MqttClient, Will
from device_sim.mqtt_transport import Broker, DeviceLinks
from device_sim.population import build_devices
from device_sim.replay import replay
from device_sim.runner import LiveRun, RunOptions

__all__ = [
    "Broker",
    "CoapSender",
    "CommandRejected",
    "ConnectRefused",
    "Connection",
    "DeviceLinks",
    "DeviceModel",
    "DeviceTemplate",
    "Fleet",
    "LiveRun",
    "LoadOptions",
    "LoadReport",
    "LoadRun",
    "Message",
    "MqttClient",
    "ReplayError",
    "RunOptions",
    "SimError",
    "Tick",
    "TransportError",
    "Will",
    "build_devices",
    "load_fleet",
    "replay",
]
