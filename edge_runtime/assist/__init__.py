"""The assistant: a home registry from Home Assistant MQTT discovery, request interpretation and action calls."""
import importlib

# name -> module that defines it; imported on first use so `import edge_runtime.assist` stays cheap
_EXPORTS = {
    "Assistant": "edge_runtime.assist.assistant",
    "Home": "edge_runtime.assist.home",
    "BrokerUnavailable": "edge_runtime.assist.home",
    "PublishError": "edge_runtime.assist.home",
    "Entity": "edge_runtime.assist.entities",
    "ConfigError": "edge_runtime.assist.entities",
    "execute": "edge_runtime.assist.actions",
    "commands_for": "edge_runtime.assist.actions",
    "needs_confirmation": "edge_runtime.assist.actions",
    "ActionError": "edge_runtime.assist.actions",
    "ConfirmationRequired": "edge_runtime.assist.actions",
    "describe": "edge_runtime.assist.states",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
