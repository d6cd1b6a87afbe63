"""The entity record built from one expanded discovery config, and each component's conventions.

`COMPONENT_DEFAULTS` holds what Home Assistant assumes when a key is absent, one table per
component (the light table per message schema); `Entity.option(key)` reads the config with them.
A key present with the value null stays null (Home Assistant uses that to disable a command, e.g.
`"payload_stop": null` on a cover without a stop button).
"""
import dataclasses
import re
import unicodedata

from edge_runtime.assist import templates

CONTROLLABLE_DOMAINS = ("light", "switch", "fan", "cover", "lock", "climate", "alarm_control_panel", "button")

_LIGHT_COMMON = {"payload_on": "ON", "payload_off": "OFF", "brightness_scale": 255, "optimistic": False}
COMPONENT_DEFAULTS = {
    ("light", "basic"): {**_LIGHT_COMMON, "on_command_type": "last", "white_scale": 255},
    ("light", "json"): {**_LIGHT_COMMON, "brightness": False, "flash_time_short": 2, "flash_time_long": 10},
    ("light", "template"): dict(_LIGHT_COMMON),
    "switch": {"payload_on": "ON", "payload_off": "OFF"},
    "fan": {"payload_on": "ON", "payload_off": "OFF", "speed_range_min": 1, "speed_range_max": 100,
            "payload_reset_percentage": "None", "payload_reset_preset_mode": "None",
            "payload_oscillation_on": "oscillate_on", "payload_oscillation_off": "oscillate_off"},
    "cover": {"payload_open": "OPEN", "payload_close": "CLOSE", "payload_stop": "STOP",
              "state_open": "open", "state_opening": "opening", "state_closed": "closed",
              "state_closing": "closing", "state_stopped": "stopped",
              "position_open": 100, "position_closed": 0},
    # payload_open has no default: a lock supports "open" only when its config names the payload
    "lock": {"payload_lock": "LOCK", "payload_unlock": "UNLOCK", "payload_reset": "None",
             "state_locked": "LOCKED", "state_unlocked": "UNLOCKED", "state_locking": "LOCKING",
             "state_unlocking": "UNLOCKING", "state_jammed": "JAMMED", "state_open": "OPEN",
             "state_opening": "OPENING"},
    "climate": {"modes": ["auto", "off", "cool", "heat", "dry", "fan_only"], "temp_step": 1.0,
                "payload_on": "ON", "payload_off": "OFF"},
    "binary_sensor": {"payload_on": "ON", "payload_off": "OFF"},
    "alarm_control_panel": {"payload_disarm": "DISARM", "payload_arm_home": "ARM_HOME",
                            "payload_arm_away": "ARM_AWAY", "payload_arm_night": "ARM_NIGHT",
                            "payload_arm_vacation": "ARM_VACATION",
                            "payload_arm_custom_bypass": "ARM_CUSTOM_BYPASS", "payload_trigger": "TRIGGER",
                            "command_template": "{{action}}", "code_arm_required": True,
                            "code_disarm_required": True, "code_trigger_required": True},
    "button": {"payload_press": "PRESS"},
}

# Home Assistant's name for an entity whose config has no "name" key at all (its DEFAULT_NAME
# constants, the basic light's included as spelled there).
DEFAULT_NAMES = {
    ("light", "basic"): "MQTT LightEntity", ("light", "json"): "MQTT JSON Light",
    ("light", "template"): "MQTT Template Light", "switch": "MQTT Switch", "fan": "MQTT Fan",
    "cover": "MQTT Cover", "lock": "MQTT Lock", "climate": "MQTT HVAC", "sensor": "MQTT Sensor",
    "binary_sensor": "MQTT Binary sensor", "alarm_control_panel": "MQTT Alarm", "button": "MQTT Button",
}

# Platforms whose unnamed entities are named after their device class (since HA 2023.8).
NAMED_BY_DEVICE_CLASS = ("sensor", "binary_sensor", "button", "number", "event", "update")
DEVICE_CLASS_NAMES = {
    "apparent_power": "Apparent power", "aqi": "Air quality index", "atmospheric_pressure": "Atmospheric pressure",
    "battery": "Battery", "battery_charging": "Charging", "carbon_dioxide": "Carbon dioxide",
    "carbon_monoxide": "Carbon monoxide", "co": "Carbon monoxide", "cold": "Cold", "connectivity": "Connectivity",
    "current": "Current", "door": "Door", "energy": "Energy", "garage_door": "Garage door", "gas": "Gas",
    "heat": "Heat", "humidity": "Humidity", "identify": "Identify", "illuminance": "Illuminance",
    "light": "Light", "lock": "Lock", "moisture": "Moisture", "motion": "Motion", "moving": "Moving",
    "occupancy": "Occupancy", "opening": "Opening", "pm1": "PM1", "pm10": "PM10", "pm25": "PM2.5",
    "plug": "Plug", "power": "Power", "power_factor": "Power factor", "presence": "Presence",
    "pressure": "Pressure", "problem": "Problem", "restart": "Restart", "running": "Running",
    "safety": "Safety", "signal_strength": "Signal strength", "smoke": "Smoke", "sound": "Sound",
    "tamper": "Tamper", "temperature": "Temperature", "update": "Update", "vibration": "Vibration",
    "voltage": "Voltage", "volatile_organic_compounds": "Volatile organic compounds", "window": "Window",
}

# Options coerced the way Home Assistant's config schemas coerce them; a bad value rejects the config.
_INT_OPTIONS = ("brightness_scale", "white_scale", "position_open", "position_closed", "speed_range_min",
                "speed_range_max", "tilt_min", "tilt_max", "qos")
_FLOAT_OPTIONS = ("min_temp", "max_temp", "temp_step", "precision", "initial")
_STRING_OPTIONS = ("payload_on", "payload_off", "payload_open", "payload_close", "payload_stop",
                   "payload_lock", "payload_unlock", "state_on", "state_off", "state_open", "state_closed",
                   "state_opening", "state_closing", "state_stopped", "state_locked", "state_unlocked",
                   "state_locking", "state_unlocking", "state_jammed", "payload_press", "payload_disarm",
                   "payload_arm_home", "payload_arm_away", "payload_arm_night", "payload_arm_vacation",
                   "payload_arm_custom_bypass", "payload_trigger", "payload_available", "payload_not_available",
                   "payload_reset_percentage")
REQUIRED_OPTIONS = {
    "light": ("command_topic",), "switch": ("command_topic",), "fan": ("command_topic",),
    "lock": ("command_topic",), "button": ("command_topic",),
    "alarm_control_panel": ("command_topic", "state_topic"),
    "sensor": ("state_topic",), "binary_sensor": ("state_topic",),
}
_LIGHT_SCHEMAS = ("basic", "json", "template")
FEATURES = ("on_off", "brightness", "position", "open", "close", "stop", "percentage", "temperature",
            "hvac_mode", "power")
_BRIGHTNESS_COLOR_MODES = {"brightness", "color_temp", "hs", "xy", "rgb", "rgbw", "rgbww", "white"}


class ConfigError(ValueError):
    """A discovery config that Home Assistant itself would reject; the message says why."""


def slugify(text):
    """Home Assistant's entity-id slug: ASCII-folded, lower case, [a-z0-9_] ("unknown" if empty)."""
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")
    return slug or "unknown"


def _coerce(config, where):
    for key in _INT_OPTIONS:
        if config.get(key) is not None:
            value = config[key]
            try:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                config[key] = int(float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}") from None
    for key in _FLOAT_OPTIONS:
        if config.get(key) is not None:
            try:
                if isinstance(config[key], bool):
                    raise ValueError
                config[key] = float(config[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: '{key}' must be a number, got {config[key]!r}") from None
    for key in _STRING_OPTIONS:
        value = config.get(key)
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        if value is not None and not isinstance(value, str):
            config[key] = str(value)     # cv.string: true -> "True", 1 -> "1"
    for key, value in config.items():
        if key.endswith("_topic") and value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{where}: '{key}' must be a non-empty topic string, got {value!r}")


@dataclasses.dataclass(eq=False)
class Entity:
    entity_id: str
    domain: str
    object_id: str
    name: str
    friendly_name: str
    area: str = None
    device_name: str = None
    device_class: str = None
    unit: str = None
    config: dict = dataclasses.field(default_factory=dict)
    state: str = None
    attributes: dict = dataclasses.field(default_factory=dict)
    available: bool = None
    discovery_topic: str = None
    discovery_key: str = None
    unique_id: str = None
    device: dict = None
    schema: str = None
    unsupported_templates: tuple = ()
    availability_seen: dict = dataclasses.field(default_factory=dict, repr=False)

    def option(self, key, default=None):
        """The config value for `key`, else the component's Home Assistant default, else `default`."""
        if key in self.config:
            return self.config[key]
        table = COMPONENT_DEFAULTS.get((self.domain, self.schema)) or COMPONENT_DEFAULTS.get(self.domain, {})
        return table.get(key, default)

    # -- capabilities -------------------------------------------------------------------------
    @property
    def controllable(self):
        if self.domain not in CONTROLLABLE_DOMAINS:
            return False
        if self.domain == "cover":
            return bool(self.config.get("command_topic") or self.config.get("set_position_topic"))
        if self.domain == "climate":
            return any(self.config.get(k) for k in ("temperature_command_topic", "mode_command_topic",
                                                    "power_command_topic"))
        return bool(self.config.get("command_topic"))

    def supports(self, feature):
        """Whether the entity accepts `feature`: one of FEATURES."""
        if feature not in FEATURES:
            raise ValueError(f"unknown feature {feature!r}; expected one of {', '.join(FEATURES)}")
        cfg, domain = self.config, self.domain
        if feature == "on_off":
            return domain in ("light", "switch", "fan") and bool(cfg.get("command_topic"))
        if feature == "brightness":
            if domain != "light":
                return False
            if self.schema == "json":
                modes = cfg.get("supported_color_modes")
                return bool(cfg.get("brightness")) or (isinstance(modes, list)
                                                        and bool(_BRIGHTNESS_COLOR_MODES & set(map(str, modes))))
            if self.schema == "template":
                return bool(cfg.get("brightness_template"))
            return bool(cfg.get("brightness_command_topic"))
        if feature == "position":
            return domain == "cover" and bool(cfg.get("set_position_topic"))
        if feature in ("open", "close", "stop"):
            if domain == "lock":
                return feature == "open" and cfg.get("payload_open") is not None and bool(cfg.get("command_topic"))
            key = {"open": "payload_open", "close": "payload_close", "stop": "payload_stop"}[feature]
            return domain == "cover" and bool(cfg.get("command_topic")) and self.option(key) is not None
        if feature == "percentage":
            return domain == "fan" and bool(cfg.get("percentage_command_topic"))
        if feature == "temperature":
            return domain == "climate" and bool(cfg.get("temperature_command_topic"))
        if feature == "hvac_mode":
            return domain == "climate" and bool(cfg.get("mode_command_topic"))
        return domain == "climate" and bool(cfg.get("power_command_topic"))

    # -- ranges -------------------------------------------------------------------------------
    @property
    def temperature_unit(self):
        unit = str(self.config.get("temperature_unit") or "C").upper().lstrip("°")
        return "°F" if unit == "F" else "°C"

    @property
    def min_temp(self):
        if self.config.get("min_temp") is not None:
            return self.config["min_temp"]
        return 44.6 if self.temperature_unit == "°F" else 7.0     # 7 °C, converted like HA does

    @property
    def max_temp(self):
        if self.config.get("max_temp") is not None:
            return self.config["max_temp"]
        return 95.0 if self.temperature_unit == "°F" else 35.0

    @property
    def temp_step(self):
        return self.option("temp_step") if self.domain == "climate" else None

    @property
    def precision(self):
        if self.config.get("precision") is not None:
            return self.config["precision"]
        return 0.1 if self.temperature_unit == "°C" else 1.0

    @property
    def modes(self):
        modes = self.option("modes") if self.domain == "climate" else None
        return [str(m) for m in modes] if isinstance(modes, list) else []

    @property
    def brightness_scale(self):
        return self.option("brightness_scale")

    @property
    def speed_range(self):
        return self.option("speed_range_min"), self.option("speed_range_max")

    @property
    def position_range(self):
        """(position_closed, position_open) as the device counts them."""
        return self.option("position_closed"), self.option("position_open")


def _names(domain, schema, config, object_id):
    """(name, friendly_name, device_name) by Home Assistant's naming rules (has_entity_name):
    name null -> the entity is the device's main feature and shows the device name; name absent ->
    the device class name for the platforms that use it, else the platform's default name;
    friendly name = "<device name> <entity name>" when the config has a named device."""
    device = config.get("device") if isinstance(config.get("device"), dict) else None
    device_name = device.get("name") if device else None
    device_name = str(device_name) if device_name not in (None, "") else None
    if "name" in config:
        own = config["name"]
        own = None if own is None else str(own)
    elif domain in NAMED_BY_DEVICE_CLASS and config.get("device_class"):
        dc = str(config["device_class"])
        own = DEVICE_CLASS_NAMES.get(dc, dc.replace("_", " ").capitalize())
    else:
        own = DEFAULT_NAMES.get((domain, schema)) or DEFAULT_NAMES.get(domain) or f"MQTT {domain}"
    if own is None:
        # HA shows the entity id when there is no device name either; a spoken name is more useful
        friendly = device_name or object_id.replace("_", " ")
        return friendly, friendly, device_name
    friendly = f"{device_name} {own}" if device_name else own
    return own, friendly, device_name


def _template_keys(domain, schema):
    keys = ["value_template", "availability_template"]
    if domain == "light":
        keys += {"basic": ["state_value_template", "brightness_value_template", "brightness_command_template"],
                 "template": ["state_template", "brightness_template", "command_on_template",
                              "command_off_template"], "json": []}[schema]
    keys += {"fan": ["state_value_template", "percentage_value_template", "command_template",
                     "percentage_command_template"],
             "cover": ["position_template", "set_position_template"],
             "climate": ["current_temperature_template", "temperature_state_template", "mode_state_template",
                         "action_template", "temperature_command_template", "mode_command_template",
                         "power_command_template"],
             "alarm_control_panel": ["command_template"], "switch": ["command_template"],
             "lock": ["command_template"], "button": ["command_template"]}.get(domain, [])
    return keys


def build_entity(domain, object_id, config, discovery_topic=None, discovery_key=None):
    """An Entity from an expanded config (full keys, `~` substituted); raises ConfigError."""
    where = discovery_topic or f"{domain}.{object_id}"
    schema = None
    if domain == "light":
        schema = str(config.get("schema", "basic")).lower()
        if schema == "default":
            schema = "basic"
        if schema not in _LIGHT_SCHEMAS:
            raise ConfigError(f"{where}: light 'schema' must be one of basic, json, template, got {schema!r}")
        if schema == "template":
            for key in ("command_on_template", "command_off_template"):
                if not config.get(key):
                    raise ConfigError(f"{where}: a template-schema light needs '{key}'")
    _coerce(config, where)
    for key in REQUIRED_OPTIONS.get(domain, ()):
        if not config.get(key):
            raise ConfigError(f"{where}: a {domain} needs '{key}'")
    if config.get("device") is not None and not isinstance(config["device"], dict):
        raise ConfigError(f"{where}: 'device' must be an object, got {config['device']!r}")
    if "name" in config and isinstance(config["name"], (dict, list)):
        raise ConfigError(f"{where}: 'name' must be a string or null, got {config['name']!r}")
    if domain == "fan":
        low, high = config.get("speed_range_min", 1), config.get("speed_range_max", 100)
        if low < 1 or high <= low:
            raise ConfigError(f"{where}: expected 1 <= speed_range_min < speed_range_max, got {low}..{high}")
    if domain == "light" and config.get("brightness_scale") is not None and config["brightness_scale"] < 1:
        raise ConfigError(f"{where}: 'brightness_scale' must be at least 1")
    if domain == "climate" and isinstance(config.get("modes"), str):
        config["modes"] = [config["modes"]]
    if domain == "cover" and config.get("position_open", 100) == config.get("position_closed", 0):
        raise ConfigError(f"{where}: 'position_open' and 'position_closed' must differ")

    name, friendly, device_name = _names(domain, schema, config, object_id)
    device = config.get("device")
    area = device.get("suggested_area") if device else None
    unit = config.get("unit_of_measurement")
    if domain == "climate":
        unit = "°F" if str(config.get("temperature_unit") or "C").upper().lstrip("°") == "F" else "°C"
    entity = Entity(
        entity_id=f"{domain}.{object_id}", domain=domain, object_id=object_id, name=name,
        friendly_name=friendly, area=str(area) if area not in (None, "") else None,
        device_name=device_name, device_class=str(config["device_class"]) if config.get("device_class") else None,
        unit=str(unit) if unit not in (None, "") else None, config=config,
        discovery_topic=discovery_topic, discovery_key=discovery_key,
        unique_id=str(config["unique_id"]) if config.get("unique_id") is not None else None,
        device=device, schema=schema)
    entity.unsupported_templates = tuple(
        key for key in _template_keys(domain, schema) if config.get(key) is not None
        and not templates.is_supported(config[key]))
    return entity


def requested_object_id(config, domain):
    """The object id the config asks for (`default_entity_id`, else `object_id`), slugified, or None."""
    wanted = config.get("default_entity_id")
    if isinstance(wanted, str) and "." in wanted:
        prefix, _, rest = wanted.partition(".")
        if prefix == domain and rest:
            return slugify(rest)
    if config.get("object_id") not in (None, ""):
        return slugify(config["object_id"])
    return None
