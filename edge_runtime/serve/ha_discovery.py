"""Home Assistant MQTT discovery of the service itself: retained configs that make the board's
metrics (speed, queue, memory, temperature, uptime) and a busy flag appear as HA entities.

Configs go to <ha_prefix>/sensor/<node>/<key>/config and <ha_prefix>/binary_sensor/<node>/busy/config,
read their state from the board's retained metrics topic and are available while status is online.
"""
import re

from edge_runtime.serve.topics import Topics

DEFAULT_HA_PREFIX = "homeassistant"

HA_SENSORS = [
    # key, name, value template, unit, device class, state class
    ("decode_tok_s", "Decode speed", "{{ value_json.decode_tok_s }}", "tok/s", None, "measurement"),
    ("prompt_tok_s", "Prompt speed", "{{ value_json.prompt_tok_s }}", "tok/s", None, "measurement"),
    ("queue_depth", "Queue depth", "{{ value_json.queue_depth }}", None, None, "measurement"),
    ("served", "Requests served", "{{ value_json.served }}", None, None, "total_increasing"),
    ("rss", "Memory (RSS)", "{{ (value_json.rss_bytes / 1048576) | round(1) }}", "MiB", "data_size", "measurement"),
    ("cpu_temp", "CPU temperature", "{{ value_json.cpu_temp_c }}", "°C", "temperature", "measurement"),
    ("uptime", "Uptime", "{{ value_json.uptime_s }}", "s", "duration", None),
]


def ha_discovery_messages(topics: Topics, ha_prefix, model_name, version):
    """[(config topic, payload dict)] for the metrics sensors and the busy binary sensor."""
    node = "edge_runtime_" + re.sub(r"[^A-Za-z0-9_-]", "_", topics.device)
    device = {"identifiers": [node], "name": f"edge-runtime {topics.device}", "manufacturer": "edge-runtime",
              "model": model_name, "sw_version": version}
    common = {"state_topic": topics.metrics, "availability_topic": topics.status,
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    out = []
    for key, name, template, unit, device_class, state_class in HA_SENSORS:
        cfg = {"name": name, "unique_id": f"{node}_{key}", "value_template": template, **common}
        for field, value in (("unit_of_measurement", unit), ("device_class", device_class),
                             ("state_class", state_class)):
            if value is not None:
                cfg[field] = value
        out.append((f"{ha_prefix}/sensor/{node}/{key}/config", cfg))
    busy = {"name": "Busy", "unique_id": f"{node}_busy", "device_class": "running",
            "value_template": "{{ 'ON' if value_json.busy else 'OFF' }}", **common}
    out.append((f"{ha_prefix}/binary_sensor/{node}/busy/config", busy))
    return out
