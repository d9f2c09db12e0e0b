"""The Fieldline edge agent: southbound MQTT/CoAP, cleaning and downsampling pipeline, local rules and workflows,
durable store-and-forward.

The public surface is what this module exports; everything else is internal and may change.
"""

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import AgentError, CoapBindError, LinkError, LinkRefused, StoreError

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "CoapBindError",
    "LinkError",
    "LinkRefused",
    "StoreError",
    "load_config",
]
