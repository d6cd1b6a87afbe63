"""Entity state from retained/live MQTT messages, the way Home Assistant reads it, and spoken descriptions.

`subscriptions(entity)` lists the (topic, role) pairs an entity listens on; `apply(entity, role,
payload)` updates `entity.state`, `entity.attributes` and `entity.available` from one message and
says whether anything changed. A message that renders to nothing (empty, a missing JSON key) is
ignored as Home Assistant ignores it; a template this evaluator cannot run makes the state unknown.
States use Home Assistant's vocabulary: on/off, open/closed/opening/closing, locked/unlocked/...,
the HVAC mode for climate, the rendered value for sensors.
"""
import json
import logging
import math

from edge_runtime.assist import templates

log = logging.getLogger("edge_runtime.assist.states")

PAYLOAD_NONE = "None"
ALARM_STATES = ("disarmed", "armed_home", "armed_away", "armed_night", "armed_vacation",
                "armed_custom_bypass", "pending", "triggered", "arming", "disarming")
LOCK_STATES = ("locked", "unlocked", "locking", "unlocking", "jammed", "open", "opening")


class _Unsupported(Exception):
    pass


def _topics_by_domain(entity):
    cfg, domain = entity.config, entity.domain
    if domain == "light" and entity.schema == "basic":
        pairs = [("state_topic", "state"), ("brightness_state_topic", "brightness")]
    elif domain == "fan":
        pairs = [("state_topic", "state"), ("percentage_state_topic", "percentage")]
    elif domain == "cover":
        pairs = [("state_topic", "state"), ("position_topic", "position")]
    elif domain == "climate":
        pairs = [("current_temperature_topic", "current_temperature"), ("temperature_state_topic", "temperature"),
                 ("mode_state_topic", "mode"), ("action_topic", "action")]
    else:
        pairs = [("state_topic", "state")]
    return [(cfg[key], role) for key, role in pairs if isinstance(cfg.get(key), str) and cfg[key]]


def _availability(entity):
    """[(topic, payload_available, payload_not_available, template)] of the entity."""
    cfg = entity.config
    out = []
    if isinstance(cfg.get("availability_topic"), str):
        out.append((cfg["availability_topic"], str(cfg.get("payload_available", "online")),
                    str(cfg.get("payload_not_available", "offline")), cfg.get("availability_template")))
    items = cfg.get("availability")
    for item in items if isinstance(items, list) else ([items] if isinstance(items, dict) else []):
        if isinstance(item, dict) and isinstance(item.get("topic"), str) and item["topic"]:
            out.append((item["topic"], str(item.get("payload_available", cfg.get("payload_available", "online"))),
                        str(item.get("payload_not_available", cfg.get("payload_not_available", "offline"))),
                        item.get("value_template")))
    return out


def subscriptions(entity):
    """The (topic filter, role) pairs that feed this entity's state."""
    pairs = _topics_by_domain(entity)
    pairs += [(topic, f"availability:{i}") for i, (topic, *_rest) in enumerate(_availability(entity))]
    return pairs


def _render(entity, payload, *keys):
    """The payload through the first configured template among `keys` (the raw payload if none);
    None when it renders to nothing. Raises _Unsupported for a template this evaluator cannot run."""
    source = next((entity.config[k] for k in keys if entity.config.get(k) is not None), None)
    if source is None:
        return payload
    try:
        return templates.render_value(source, payload, {"entity_id": entity.entity_id})
    except templates.TemplateError as exc:
        raise _Unsupported(f"{entity.entity_id}: template {source!r} is not supported ({exc})") from None


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _on_off(entity, text, on_key, off_key):
    if text == str(entity.option(on_key)):
        return "on"
    if text == str(entity.option(off_key)):
        return "off"
    return None if text == PAYLOAD_NONE else False


def _set(entity, state=False, **attrs):
    """Set the state (False = leave it) and attributes (None removes one); True if anything changed."""
    changed = False
    if state is not False and state != entity.state:
        entity.state = state
        changed = True
    new = dict(entity.attributes)
    for key, value in attrs.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    if new != entity.attributes:
        entity.attributes = new      # replaced whole, so readers on other threads see a consistent dict
        changed = True
    return changed


def _brightness(brightness_255):
    """The attributes for HA's brightness (0..255): it and the percentage it shows."""
    brightness_255 = max(0, min(255, round(brightness_255)))
    return {"brightness": brightness_255, "brightness_pct": round(brightness_255 / 255 * 100)}


def _apply_light(entity, role, payload):
    scale = entity.brightness_scale
    if entity.schema == "json":
        try:
            values = json.loads(payload)
        except ValueError:
            log.debug("%s: state payload is not JSON: %r", entity.entity_id, payload[:200])
            return False
        if not isinstance(values, dict):
            return False
        state = False
        if "state" in values:
            state = {"ON": "on", "OFF": "off"}.get(values["state"], None if values["state"] is None else False)
        attrs = {}
        bri = values.get("brightness")
        if entity.supports("brightness") and _number(bri) and not isinstance(bri, bool):
            attrs = _brightness(float(bri) * 255 / scale)       # HA's value_to_brightness
        return _set(entity, state, **attrs)
    if entity.schema == "template":
        text = _render(entity, payload, "state_template")
        state = {"on": "on", "off": "off", PAYLOAD_NONE: None}.get(text, False) if text else False
        bri = _number(_render(entity, payload, "brightness_template")) if entity.config.get("brightness_template") else None
        return _set(entity, state, **(_brightness(bri) if bri else {}))
    if role == "state":
        text = _render(entity, payload, "state_value_template", "value_template")
        return _set(entity, _on_off(entity, text, "payload_on", "payload_off")) if text else False
    text = _render(entity, payload, "brightness_value_template")
    value = _number(text)
    if not value:              # empty or zero brightness is ignored, as Home Assistant does
        return False
    return _set(entity, **_brightness(value / scale * 255))


def _apply_fan(entity, role, payload):
    if role == "state":
        text = _render(entity, payload, "state_value_template")
        return _set(entity, _on_off(entity, text, "payload_on", "payload_off")) if text else False
    text = _render(entity, payload, "percentage_value_template")
    if not text:
        return False
    if text == str(entity.option("payload_reset_percentage")):
        return _set(entity, percentage=None)
    value = _number(text)
    if value is None:
        return False
    low, high = entity.speed_range
    # Home Assistant's ranged_value_to_percentage: int((v - (low - 1)) * 100 // states)
    percentage = int((value - (low - 1)) * 100 // (high - low + 1))
    if not 0 <= percentage <= 100:
        log.debug("%s: percentage %r outside the speed range %s..%s", entity.entity_id, text, low, high)
        return False
    return _set(entity, percentage=percentage)


def position_percentage(entity, device_position):
    """A device position as 0 (closed) .. 100 (open), as Home Assistant's find_percentage_in_range."""
    closed, opened = entity.position_range
    pct = round(float(device_position - closed) / (opened - closed) * 100.0)
    return min(max(pct, 0), 100)


def _apply_cover(entity, role, payload):
    if role == "state":
        text = _render(entity, payload, "value_template")
        if not text:
            return False
        if text == PAYLOAD_NONE:
            return _set(entity, None)
        for ha_state in ("open", "opening", "closed", "closing"):
            if text == str(entity.option(f"state_{ha_state}")):
                return _set(entity, ha_state)
        if text == str(entity.option("state_stopped")):
            position = entity.attributes.get("position")
            if position is not None:
                return _set(entity, "closed" if position == 0 else "open")
            return _set(entity, "closed" if entity.state == "closing" else "open")
        log.debug("%s: payload %r is not a known cover state", entity.entity_id, text)
        return False
    text = _render(entity, payload, "position_template")
    if not text:
        return False
    value = _number(text)
    if value is None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        value = _number(data.get("position")) if isinstance(data, dict) else None
    if value is None:
        log.debug("%s: position payload %r is not a number", entity.entity_id, text)
        return False
    pct = position_percentage(entity, value)
    state = False if entity.config.get("state_topic") else ("closed" if pct == 0 else "open")
    return _set(entity, state, position=pct)


def _apply_lock(entity, payload):
    text = _render(entity, payload, "value_template")
    if not text:
        return False
    if text == str(entity.option("payload_reset")):
        return _set(entity, None)
    for ha_state in LOCK_STATES:
        if text == str(entity.option(f"state_{ha_state}")):
            return _set(entity, ha_state)
    return False


def _apply_climate(entity, role, payload):
    if role in ("current_temperature", "temperature"):
        key = "current_temperature_template" if role == "current_temperature" else "temperature_state_template"
        text = _render(entity, payload, key, "value_template")
        if not text:
            return False
        if text == PAYLOAD_NONE:
            return _set(entity, **{role: None})
        value = _number(text)
        return _set(entity, **{role: value}) if value is not None else False
    key = "mode_state_template" if role == "mode" else "action_template"
    text = _render(entity, payload, key, "value_template")
    if not text:
        return False
    if role == "action":
        return _set(entity, hvac_action=None if text == PAYLOAD_NONE else text)
    if text == PAYLOAD_NONE:
        return _set(entity, None, hvac_mode=None)
    if text not in entity.modes:
        log.debug("%s: mode %r is not one of %s", entity.entity_id, text, entity.modes)
        return False
    return _set(entity, text, hvac_mode=text)


def _apply_availability(entity, role, payload):
    index = int(role.split(":", 1)[1])
    entries = _availability(entity)
    if index >= len(entries):
        return False
    _topic, available, not_available, template = entries[index]
    text = payload
    if template is not None:
        try:
            text = templates.render_value(template, payload)
        except templates.TemplateError:
            return False
    seen = dict(entity.availability_seen)
    if text == available:
        seen[index] = True
    elif text == not_available:
        seen[index] = False
    else:
        return False
    mode = entity.config.get("availability_mode", "latest")
    if mode == "all":
        available_now = len(seen) == len(entries) and all(seen.values())
    elif mode == "any":
        available_now = any(seen.values())
    else:
        available_now = seen[index]
    entity.availability_seen = seen
    if available_now != entity.available:
        entity.available = available_now
        return True
    return False


def apply(entity, role, payload):
    """Update `entity` from one message on a topic it listens on (role from `subscriptions`)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = bytes(payload).decode("utf-8", "replace")
    try:
        if role.startswith("availability:"):
            return _apply_availability(entity, role, payload)
        domain = entity.domain
        if domain == "light":
            return _apply_light(entity, role, payload)
        if domain == "fan":
            return _apply_fan(entity, role, payload)
        if domain == "cover":
            return _apply_cover(entity, role, payload)
        if domain == "lock":
            return _apply_lock(entity, payload)
        if domain == "climate":
            return _apply_climate(entity, role, payload)
        text = _render(entity, payload, "value_template")
        if not text:
            return False
        if domain == "switch":
            # state_on / state_off default to the command payloads
            on = entity.config.get("state_on", entity.option("payload_on"))
            off = entity.config.get("state_off", entity.option("payload_off"))
            return _set(entity, "on" if text == str(on) else "off" if text == str(off)
                        else None if text == PAYLOAD_NONE else False)
        if domain == "binary_sensor":
            return _set(entity, _on_off(entity, text, "payload_on", "payload_off"))
        if domain == "alarm_control_panel":
            if text == PAYLOAD_NONE:
                return _set(entity, None)
            return _set(entity, text) if text in ALARM_STATES else False
        return _set(entity, None if text == PAYLOAD_NONE else text)
    except _Unsupported as exc:
        log.debug("%s; state unknown", exc)
        return _set(entity, None)


# ---------------------------------------------------------------------------------------------
# Describing a state in one sentence

_BINARY_WORDS = {
    "door": ("open", "closed"), "garage_door": ("open", "closed"), "opening": ("open", "closed"),
    "window": ("open", "closed"), "lock": ("unlocked", "locked"), "moisture": ("wet", "dry"),
    "motion": ("detecting motion", "clear"), "occupancy": ("occupied", "clear"),
    "presence": ("detecting someone", "clear"), "smoke": ("detecting smoke", "clear"),
    "gas": ("detecting gas", "clear"), "carbon_monoxide": ("detecting carbon monoxide", "clear"),
    "battery": ("low", "normal"), "connectivity": ("connected", "disconnected"),
    "problem": ("reporting a problem", "OK"), "plug": ("plugged in", "unplugged"),
    "running": ("running", "not running"), "tamper": ("reporting tampering", "clear"),
    "vibration": ("detecting vibration", "clear"), "light": ("detecting light", "dark"),
}


def spoken_name(entity):
    """The name to say: the entity's own name when it has two or more words ("Side Gate"), else
    the friendly name ("Kitchen" + "Temperature"), a word repeated across the two said once; plain
    capitalised words lowered ("Kitchen Light" -> "kitchen light"), others (LED, iPhone) kept."""
    name = entity.friendly_name or entity.name or entity.entity_id
    if entity.name and entity.friendly_name and entity.friendly_name != entity.name:
        if len(entity.name.split()) >= 2:
            name = entity.name
    words = []
    for word in name.split():
        if not words or words[-1].casefold() != word.casefold():
            words.append(word)
    out = [w.lower() if len(w) > 1 and w[0].isupper() and w[1:] == w[1:].lower() else
           (w.lower() if len(w) == 1 and w.isupper() and w != "I" else w) for w in words]
    text = " ".join(out)
    return text[4:] if text.startswith("the ") else text


def _quantity(value, unit, precision=None):
    if isinstance(value, float):
        if precision is not None and precision >= 1:
            value = round(value)
        elif precision is not None:
            value = f"{value:.1f}"
        elif value.is_integer():
            value = int(value)
    if not unit:
        return f"{value}"
    return f"{value}{unit}" if unit == "%" else f"{value} {unit}"


def describe(entity):
    """One sentence on the entity's state, e.g. "The landing light is on at 40%."."""
    name = spoken_name(entity)
    state, attrs = entity.state, entity.attributes
    if entity.available is False:
        return f"The {name} is unavailable."
    domain = entity.domain
    if domain == "climate":
        unit, precision = entity.temperature_unit, entity.precision
        current = attrs.get("current_temperature")
        now = f"; it is {_quantity(current, unit, precision)} now" if current is not None else ""
        if state == "off":
            return f"The {name} is off{now}."
        if state is not None:
            target = attrs.get("temperature")
            at = f" at {_quantity(target, unit, precision)}" if target is not None else ""
            return f"The {name} is set to {state.replace('_', ' ')}{at}{now}."
        if current is not None:
            return f"The {name} reads {_quantity(current, unit, precision)}."
        return f"I don't know the state of the {name}."
    if state is None:
        return f"I don't know the state of the {name}."
    if domain in ("light", "fan") and state == "on":
        pct = attrs.get("brightness_pct" if domain == "light" else "percentage")
        return f"The {name} is on at {pct}%." if pct is not None else f"The {name} is on."
    if domain == "cover":
        position = attrs.get("position")
        if state == "open" and position is not None and 0 < position < 100:
            return f"The {name} is open at {position}%."
        return f"The {name} is {state}."
    if domain == "binary_sensor" and state in ("on", "off"):
        on_word, off_word = _BINARY_WORDS.get(entity.device_class, ("on", "off"))
        return f"The {name} is {on_word if state == 'on' else off_word}."
    if domain == "sensor":
        value = state
        number = _number(state)
        if number is not None and entity.unit:
            return f"The {name} is {_quantity(state, entity.unit)}."
        return f"The {name} is {value}."
    return f"The {name} is {state.replace('_', ' ')}."
