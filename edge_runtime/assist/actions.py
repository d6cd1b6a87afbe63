"""Home Assistant action calls turned into the MQTT messages Home Assistant itself would publish.

    commands_for(home, {"action": "light.turn_on", "entity_id": "light.landing",
                        "data": {"brightness_pct": 40}})
    # [{"topic": "landing/light/brightness/set", "payload": "102", "qos": 1, "retain": False},
    #  {"topic": "landing/light/set", "payload": "ON", "qos": 1, "retain": False}]

Payloads, their order and scaling follow Home Assistant's MQTT platforms (light basic/json/template
schemas, switch, fan, cover, lock, climate, alarm_control_panel, button). Unlike Home Assistant, every
message goes out with QoS 1 and never retained, and a request Home Assistant would quietly reduce
(brightness for a light that cannot dim) is refused with an ActionError instead.
"""
import json
import math
import re

from edge_runtime.assist import templates
from edge_runtime.errors import EdgeRuntimeError

NO_ACTION = (None, "query")
GUARDED_COVER_CLASSES = ("garage", "gate")


class ActionError(ValueError):
    """The action cannot be carried out as asked; the message names the action, entity and reason."""


class ConfirmationRequired(EdgeRuntimeError):
    """The action opens or unlocks something (lock, garage or gate, alarm) and needs confirmed=True."""

    def __init__(self, message, commands):
        super().__init__(message)
        self.commands = commands


def _command(topic, payload):
    return {"topic": topic, "payload": payload if isinstance(payload, str) else str(payload), "qos": 1,
            "retain": False}


def _topic(entity, key, action):
    topic = entity.config.get(key)
    if not topic:
        raise ActionError(f"{action} on {entity.entity_id}: its discovery config has no {key}")
    return topic


def _render(entity, template_key, value, act, **variables):
    """`value` through the entity's command template `template_key` (if it has one), as text."""
    source = entity.option(template_key)
    if source is None:
        return value if isinstance(value, str) else str(value)
    try:
        return templates.render_command(source, {"value": value, "entity_id": entity.entity_id, **variables})
    except templates.TemplateError as exc:
        raise ActionError(f"{act} on {entity.entity_id}: cannot render {template_key} {source!r}: {exc}") from None


def _number(data, key, action, entity, low=None, high=None):
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ActionError(f"{action} on {entity.entity_id}: {key} must be a number, got {data[key]!r}") from None
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ActionError(f"{action} on {entity.entity_id}: {key} {data[key]!r} is outside {low}..{high}")
    return value


# ---------------------------------------------------------------------------------------------
# Lights

def _current_brightness(entity):
    """HA's brightness (0..255) while the light is on, else None."""
    return entity.attributes.get("brightness") if entity.state == "on" else None


def _requested_brightness(entity, data, action):
    """HA's brightness (0..255) from brightness_pct / brightness / brightness_step_pct, or None."""
    if "brightness_pct" in data:
        return round(_number(data, "brightness_pct", action, entity, 0, 100) * 255 / 100)
    if "brightness" in data:
        return round(_number(data, "brightness", action, entity, 0, 255))
    if "brightness_step_pct" in data:
        step = _number(data, "brightness_step_pct", action, entity, -100, 100)
        return max(0, min(255, (_current_brightness(entity) or 0) + round(step * 255 / 100)))
    return None


def _device_brightness(entity, brightness):
    """HA brightness 1..255 on the device's scale, never rounded down to 0."""
    scale = entity.brightness_scale
    return max(min(round(brightness / 255 * scale), scale), 1)


def light_turn_on(entity, data, action):
    brightness = _requested_brightness(entity, data, action)
    if brightness == 0:
        return light_turn_off(entity, {k: v for k, v in data.items() if k == "transition"}, action)
    if brightness is not None and not entity.supports("brightness"):
        raise ActionError(f"{action} on {entity.entity_id}: this light cannot be dimmed (no brightness support "
                          f"in its discovery config)")
    command_topic = _topic(entity, "command_topic", action)
    if entity.schema == "json":
        message = {"state": "ON"}
        if "transition" in data:
            message["transition"] = float(_number(data, "transition", action, entity, 0, 6553))
        if brightness is not None:
            message["brightness"] = _device_brightness(entity, brightness)
        return [_command(command_topic, json.dumps(message, separators=(",", ":")))]
    if entity.schema == "template":
        variables = {"state": "on"}
        if brightness is not None:
            variables["brightness"] = brightness
        if "transition" in data:
            variables["transition"] = float(_number(data, "transition", action, entity, 0, 6553))
        return [_command(command_topic, _render(entity, "command_on_template", "", action, **variables))]
    out = []
    on_command_type = entity.option("on_command_type")
    if on_command_type == "first":
        out.append(_command(command_topic, entity.option("payload_on")))
    elif on_command_type == "brightness" and brightness is None and entity.supports("brightness"):
        brightness = entity.attributes.get("brightness") or 255     # HA keeps the last one while off
    if brightness is not None:
        device_value = _device_brightness(entity, brightness)
        out.append(_command(entity.config["brightness_command_topic"],
                            _render(entity, "brightness_command_template", device_value, action)))
    if on_command_type == "last" or (on_command_type == "brightness" and not out):
        out.append(_command(command_topic, entity.option("payload_on")))
    return out


def light_turn_off(entity, data, action):
    command_topic = _topic(entity, "command_topic", action)
    if entity.schema == "json":
        message = {"state": "OFF"}
        if "transition" in data:
            message["transition"] = float(_number(data, "transition", action, entity, 0, 6553))
        return [_command(command_topic, json.dumps(message, separators=(",", ":")))]
    if entity.schema == "template":
        variables = {"state": "off"}
        if "transition" in data:
            variables["transition"] = float(_number(data, "transition", action, entity, 0, 6553))
        return [_command(command_topic, _render(entity, "command_off_template", "", action, **variables))]
    return [_command(command_topic, entity.option("payload_off"))]


# ---------------------------------------------------------------------------------------------
# Switches, fans, buttons

def _on_off(entity, action, on):
    payload = entity.option("payload_on" if on else "payload_off")
    return [_command(_topic(entity, "command_topic", action), _render(entity, "command_template", payload, action))]


def fan_set_percentage(entity, data, action):
    percentage = _number(data, "percentage", action, entity, 0, 100)
    if not entity.supports("percentage"):
        raise ActionError(f"{action} on {entity.entity_id}: this fan has no percentage_command_topic "
                          f"(use fan.turn_on / fan.turn_off)")
    low, high = entity.speed_range
    # HA: ceil(percentage_to_ranged_value); 0 % is speed_range_min - 1 on the percentage topic
    value = math.ceil(percentage * (high - low + 1) / 100 + (low - 1))
    return [_command(entity.config["percentage_command_topic"],
                     _render(entity, "percentage_command_template", value, action))]


def fan_turn_on(entity, data, action):
    out = _on_off(entity, action, True)
    if data.get("percentage"):
        out += fan_set_percentage(entity, data, action)
    return out


def button_press(entity, data, action):
    payload = entity.option("payload_press")
    return [_command(_topic(entity, "command_topic", action), _render(entity, "command_template", payload, action))]


# ---------------------------------------------------------------------------------------------
# Covers

def _cover_payload(entity, action, key, feature):
    if not entity.supports(feature):
        raise ActionError(f"{action} on {entity.entity_id}: this cover has no command for {feature} "
                          f"(command_topic and {key} in its discovery config)")
    return [_command(entity.config["command_topic"], entity.option(key))]


def cover_position_value(entity, percentage):
    """0..100 % as the device position (HA's find_in_range_from_percent)."""
    closed, opened = entity.position_range
    return round((opened - closed) * (percentage / 100.0)) + closed


def cover_set_position(entity, data, action):
    position = _number(data, "position", action, entity, 0, 100)
    if not entity.supports("position"):
        raise ActionError(f"{action} on {entity.entity_id}: this cover has no set_position_topic "
                          f"(use cover.open_cover / cover.close_cover)")
    value = cover_position_value(entity, position)
    closed, opened = entity.position_range
    payload = _render(entity, "set_position_template", value, action, position=value, position_open=opened,
                      position_closed=closed, tilt_min=entity.option("tilt_min", 0),
                      tilt_max=entity.option("tilt_max", 100))
    return [_command(entity.config["set_position_topic"], payload)]


def _cover_toggle_target(entity):
    if entity.state in ("opening", "closing") and entity.supports("stop"):
        return "stop"
    return "open" if entity.state == "closed" else "close"


def cover_toggle(entity, data, action):
    target = _cover_toggle_target(entity)
    key = {"open": "payload_open", "close": "payload_close", "stop": "payload_stop"}[target]
    return _cover_payload(entity, action, key, target)


# ---------------------------------------------------------------------------------------------
# Locks, alarm panels

def _lock(entity, data, action, payload_key):
    if payload_key == "payload_open" and not entity.supports("open"):
        raise ActionError(f"{action} on {entity.entity_id}: this lock has no payload_open, so it cannot open")
    code = data.get("code")
    code_format = entity.config.get("code_format")
    if code_format:
        try:
            matches = code is not None and re.match(str(code_format), str(code)) is not None
        except re.error as exc:
            raise ActionError(f"{action} on {entity.entity_id}: its code_format {code_format!r} is not a valid "
                              f"regular expression ({exc})") from None
        if not matches:
            raise ActionError(f"{action} on {entity.entity_id}: a code matching {code_format!r} is required")
    payload = entity.option(payload_key)
    return [_command(_topic(entity, "command_topic", action),
                     _render(entity, "command_template", payload, action, code=code))]


_ALARM_ACTIONS = {
    "alarm_disarm": ("payload_disarm", "code_disarm_required"),
    "alarm_arm_home": ("payload_arm_home", "code_arm_required"),
    "alarm_arm_away": ("payload_arm_away", "code_arm_required"),
    "alarm_arm_night": ("payload_arm_night", "code_arm_required"),
    "alarm_arm_vacation": ("payload_arm_vacation", "code_arm_required"),
    "alarm_arm_custom_bypass": ("payload_arm_custom_bypass", "code_arm_required"),
    "alarm_trigger": ("payload_trigger", "code_trigger_required"),
}


def _alarm(entity, data, action):
    payload_key, required_key = _ALARM_ACTIONS[action.split(".", 1)[1]]
    code = data.get("code")
    configured = entity.config.get("code")
    if configured is not None and entity.option(required_key):
        if str(configured) in ("REMOTE_CODE", "REMOTE_CODE_TEXT"):
            if code in (None, ""):
                raise ActionError(f"{action} on {entity.entity_id}: this panel needs a code")
        elif str(code) != str(configured):
            raise ActionError(f"{action} on {entity.entity_id}: the code is missing or wrong")
    return [_command(_topic(entity, "command_topic", action),
                     _render(entity, "command_template", entity.option(payload_key), action,
                             action=entity.option(payload_key), code=code))]


# ---------------------------------------------------------------------------------------------
# Climate

def _format_temperature(value):
    return float(value)     # HA's service schema coerces to float; "21" is published as 21.0


def climate_set_hvac_mode(entity, data, action):
    mode = data.get("hvac_mode")
    if not isinstance(mode, str) or mode not in entity.modes:
        raise ActionError(f"{action} on {entity.entity_id}: hvac_mode {mode!r} is not one of its modes "
                          f"({', '.join(entity.modes) or 'none'})")
    topic = _topic(entity, "mode_command_topic", action)
    return [_command(topic, _render(entity, "mode_command_template", mode, action))]


def climate_set_temperature(entity, data, action):
    out = climate_set_hvac_mode(entity, data, action) if data.get("hvac_mode") is not None else []
    targets = [(k, t) for k, t in (("temperature", "temperature"), ("target_temp_low", "temperature_low"),
                                   ("target_temp_high", "temperature_high")) if k in data]
    if not targets:
        raise ActionError(f"{action} on {entity.entity_id}: give temperature (or target_temp_low/high)")
    for key, prefix in targets:
        value = _number(data, key, action, entity)
        if not entity.min_temp <= value <= entity.max_temp:
            raise ActionError(f"{action} on {entity.entity_id}: {key} {data[key]!r} is outside its range "
                              f"{entity.min_temp:g}..{entity.max_temp:g} {entity.temperature_unit}")
        topic = _topic(entity, f"{prefix}_command_topic", action)
        out.append(_command(topic, _render(entity, f"{prefix}_command_template", _format_temperature(value), action)))
    return out


def _climate_power(entity, action, on):
    if entity.supports("power"):
        payload = entity.option("payload_on" if on else "payload_off")
        return [_command(entity.config["power_command_topic"],
                         _render(entity, "power_command_template", payload, action))]
    modes = entity.modes
    if not on:
        if "off" not in modes:
            raise ActionError(f"{action} on {entity.entity_id}: it has no power_command_topic and no 'off' mode")
        return climate_set_hvac_mode(entity, {"hvac_mode": "off"}, action)
    others = [m for m in modes if m != "off"]
    if not others:
        raise ActionError(f"{action} on {entity.entity_id}: it has no power_command_topic and no mode besides off")
    return climate_set_hvac_mode(entity, {"hvac_mode": others[0]}, action)


# ---------------------------------------------------------------------------------------------
# The action table: action -> (domain, allowed data keys, handler(entity, data, action))

_LIGHT_ON_KEYS = {"brightness_pct", "brightness", "brightness_step_pct", "transition"}
ACTIONS = {
    "light.turn_on": ("light", _LIGHT_ON_KEYS, light_turn_on),
    "light.turn_off": ("light", {"transition"}, light_turn_off),
    "light.toggle": ("light", _LIGHT_ON_KEYS, lambda e, d, a: (light_turn_off(e, {}, a) if e.state == "on"
                                                               else light_turn_on(e, d, a))),
    "switch.turn_on": ("switch", set(), lambda e, d, a: _on_off(e, a, True)),
    "switch.turn_off": ("switch", set(), lambda e, d, a: _on_off(e, a, False)),
    "switch.toggle": ("switch", set(), lambda e, d, a: _on_off(e, a, e.state != "on")),
    "fan.turn_on": ("fan", {"percentage"}, fan_turn_on),
    "fan.turn_off": ("fan", set(), lambda e, d, a: _on_off(e, a, False)),
    "fan.toggle": ("fan", set(), lambda e, d, a: _on_off(e, a, e.state != "on")),
    "fan.set_percentage": ("fan", {"percentage"}, fan_set_percentage),
    "cover.open_cover": ("cover", set(), lambda e, d, a: _cover_payload(e, a, "payload_open", "open")),
    "cover.close_cover": ("cover", set(), lambda e, d, a: _cover_payload(e, a, "payload_close", "close")),
    "cover.stop_cover": ("cover", set(), lambda e, d, a: _cover_payload(e, a, "payload_stop", "stop")),
    "cover.toggle": ("cover", set(), cover_toggle),
    "cover.set_cover_position": ("cover", {"position"}, cover_set_position),
    "lock.lock": ("lock", {"code"}, lambda e, d, a: _lock(e, d, a, "payload_lock")),
    "lock.unlock": ("lock", {"code"}, lambda e, d, a: _lock(e, d, a, "payload_unlock")),
    "lock.open": ("lock", {"code"}, lambda e, d, a: _lock(e, d, a, "payload_open")),
    "climate.set_temperature": ("climate", {"temperature", "target_temp_low", "target_temp_high", "hvac_mode"},
                                climate_set_temperature),
    "climate.set_hvac_mode": ("climate", {"hvac_mode"}, climate_set_hvac_mode),
    "climate.turn_on": ("climate", set(), lambda e, d, a: _climate_power(e, a, True)),
    "climate.turn_off": ("climate", set(), lambda e, d, a: _climate_power(e, a, False)),
    "button.press": ("button", set(), button_press),
    **{f"alarm_control_panel.{name}": ("alarm_control_panel", {"code"}, lambda e, d, a: _alarm(e, d, a))
       for name in _ALARM_ACTIONS},
}
_REQUIRED_DATA = {"fan.set_percentage": "percentage", "cover.set_cover_position": "position",
                  "climate.set_hvac_mode": "hvac_mode"}


def _targets(home, result):
    """[(action, entity, data)] of a result; [] when it asks for nothing. Raises ActionError."""
    if not isinstance(result, dict):
        raise ActionError(f"expected an action result object, got {type(result).__name__}")
    action = result.get("action")
    if action in NO_ACTION:
        return []
    if not isinstance(action, str) or action not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        raise ActionError(f"unknown action {action!r}; supported: {known}")
    domain, allowed, _handler = ACTIONS[action]
    ids = result.get("entity_id")
    ids = [ids] if isinstance(ids, str) else ids
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ActionError(f"{action}: entity_id must be an entity id or a non-empty list of them, "
                          f"got {result.get('entity_id')!r}")
    data = result.get("data") or {}
    if not isinstance(data, dict):
        raise ActionError(f"{action}: data must be an object, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ActionError(f"{action}: unsupported data {', '.join(map(repr, unknown))}; "
                          f"it takes {', '.join(sorted(allowed)) or 'no data'}")
    if action in _REQUIRED_DATA and _REQUIRED_DATA[action] not in data:
        raise ActionError(f"{action}: data needs {_REQUIRED_DATA[action]!r}")
    targets = []
    for entity_id in ids:
        entity = home.get(entity_id)
        if entity is None:
            raise ActionError(f"{action}: unknown entity {entity_id!r} (the home has {len(home)} entities)")
        if entity.domain != domain:
            raise ActionError(f"{action} cannot act on {entity_id}: it is a {entity.domain}, "
                              f"the action is for a {domain}")
        targets.append((action, entity, data))
    return targets


def commands_for(home, result):
    """The messages (dicts of topic, payload, qos=1, retain=False) Home Assistant would publish for
    `result` ({"action", "entity_id", "data"}), in order; [] for no action or a query."""
    out = []
    for action, entity, data in _targets(home, result):
        out += ACTIONS[action][2](entity, data, action)
    return out


def _guarded_reason(action, entity, data):
    if action in ("lock.unlock", "lock.open"):
        return f"{action.split('.')[1]} {entity.entity_id}"
    if action.startswith("alarm_control_panel.alarm_disarm"):
        return f"disarm {entity.entity_id}"
    if entity.domain == "cover" and entity.device_class in GUARDED_COVER_CLASSES:
        opens = (action == "cover.open_cover"
                 or (action == "cover.set_cover_position" and isinstance(data.get("position"), (int, float))
                     and not isinstance(data.get("position"), bool) and data["position"] > 0)
                 or (action == "cover.toggle" and _cover_toggle_target(entity) == "open"))
        if opens:
            return f"open {entity.entity_id} ({entity.device_class})"
    return None


def needs_confirmation(home, result):
    """True when the result unlocks/opens a lock, opens a garage door or gate, or disarms an alarm."""
    if not isinstance(result, dict) or result.get("action") not in ACTIONS:
        return False
    ids = result.get("entity_id")
    ids = [ids] if isinstance(ids, str) else (ids if isinstance(ids, list) else [])
    data = result.get("data") if isinstance(result.get("data"), dict) else {}
    for entity_id in ids:
        entity = home.get(entity_id) if isinstance(entity_id, str) else None
        if entity is not None and _guarded_reason(result["action"], entity, data):
            return True
    return False


def execute(home, result, confirmed=False, dry_run=False):
    """Publish what `commands_for` gives (QoS 1, not retained, each acknowledged by the broker) and
    return it. Raises ActionError for a request that cannot be carried out, ConfirmationRequired
    when it needs confirmed=True (also when the result itself says "confirm": true), PublishError
    when the broker does not take a message. dry_run returns the messages without publishing."""
    commands = commands_for(home, result)
    if not commands:
        return []
    reasons = [r for action, entity, data in _targets(home, result)
               if (r := _guarded_reason(action, entity, data))]
    if not reasons and result.get("confirm") is True:
        reasons = [f"{result['action']} on {result['entity_id']}"]
    if reasons and not confirmed:
        raise ConfirmationRequired(f"confirmation required to {'; '.join(reasons)}", commands)
    if dry_run:
        return commands
    for command in commands:
        home.publish(command["topic"], command["payload"], qos=command["qos"], retain=command["retain"])
    return commands
