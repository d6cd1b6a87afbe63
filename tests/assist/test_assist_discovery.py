"""The home registry without a broker: discovery configs -> entity records, naming, ids, states."""
import json
import logging
import os

import pytest

from edge_runtime.assist import Entity, Home, describe
from edge_runtime.errors import EdgeRuntimeError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def load(name):
    return Home.from_file(os.path.join(DATA, f"home_{name}.json"))


def test_zigbee2mqtt_records():
    home = load("zigbee2mqtt")
    assert list(home.entities) == ["light.landing_light", "lock.side_gate", "cover.garage_door",
                                   "cover.bedroom_blind", "climate.lounge_thermostat",
                                   "sensor.kitchen_temperature", "binary_sensor.back_door"]
    light = home.get("light.landing_light")
    assert isinstance(light, Entity)
    assert (light.domain, light.object_id, light.schema) == ("light", "landing_light", "json")
    assert (light.name, light.friendly_name, light.device_name, light.area) == (
        "Landing light", "Landing light", "Landing light", "Landing")
    assert light.supports("brightness") and light.supports("on_off") and not light.supports("position")
    assert light.brightness_scale == 254 and light.controllable
    assert light.config["availability"] == [{"topic": "zigbee2mqtt/bridge/state",
                                             "value_template": "{{ value_json.state }}"}]
    assert light.unique_id == "0x00158d0001a2b3c4_light_zigbee2mqtt"
    cover = home.get("cover.garage_door")
    assert cover.device_class == "garage" and cover.supports("position") and cover.supports("stop")
    thermostat = home.get("climate.lounge_thermostat")
    assert (thermostat.min_temp, thermostat.max_temp, thermostat.temp_step) == (5.0, 30.0, 0.5)
    assert thermostat.modes == ["off", "heat", "auto"] and thermostat.unit == "°C"
    assert thermostat.supports("temperature") and thermostat.supports("hvac_mode") and not thermostat.supports("power")
    sensor = home.get("sensor.kitchen_temperature")
    # no "name" key: named by its device class, behind the device name
    assert (sensor.name, sensor.friendly_name, sensor.unit, sensor.controllable) == (
        "Temperature", "Kitchen Temperature", "°C", False)
    assert home.areas() == ["Bedroom", "Garage", "Garden", "Hall", "Kitchen", "Landing", "Lounge"]
    assert [e.entity_id for e in home.in_area("garage")] == ["cover.garage_door"]
    assert home.in_area("Kitchen", domain="light") == []
    assert len(home) == 7 and "lock.side_gate" in home and [e.entity_id for e in home] == list(home.entities)


def test_tasmota_abbreviations_and_base_topic():
    home = load("tasmota")
    light = home.get("light.abc123_li_1")
    assert light.config["command_topic"] == "tasmota_ABC123/cmnd/POWER"
    assert light.config["brightness_command_topic"] == "tasmota_ABC123/cmnd/Dimmer"
    assert light.config["availability_topic"] == "tasmota_ABC123/tele/LWT"
    assert light.config["device"] == {"identifiers": ["ABC123"], "name": "Hall", "model": "Sonoff D1",
                                      "sw_version": "13.2.0(tasmota)", "manufacturer": "Tasmota",
                                      "suggested_area": "Hall"}
    assert "~" not in light.config and not any(k in light.config for k in ("cmd_t", "stat_t", "dev", "bri_scl"))
    assert (light.name, light.friendly_name, light.area, light.brightness_scale) == ("Hall Dimmer", "Hall Hall Dimmer",
                                                                                   "Hall", 100)
    assert light.option("on_command_type") == "brightness"
    shutter = home.get("cover.jkl012_shutter_1")
    assert shutter.config["set_position_topic"] == "tasmota_JKL012/cmnd/ShutterPosition1"
    assert shutter.device_class == "shutter" and shutter.option("payload_open") == "ShutterOpen1"


def test_esphome_base_topic_with_slash():
    home = load("esphome")
    light = home.get("light.ceiling")
    assert (light.config["command_topic"], light.config["state_topic"]) == (
        "livingroom/light/ceiling/command", "livingroom/light/ceiling/state")
    assert light.schema == "json" and light.supports("brightness") and light.brightness_scale == 255
    fan = home.get("fan.ceiling_fan")
    assert fan.speed_range == (1, 3) and fan.supports("percentage")
    assert fan.config["percentage_command_topic"] == "livingroom/fan/ceiling_fan/speed_level/command"
    assert home.get("climate.heat_pump").precision == 0.5
    assert {e.area for e in home} == {"Living Room"}


@pytest.mark.parametrize("component, config, name, friendly", [
    ("switch", {"command_topic": "x", "name": None, "device": {"name": "Coffee Plug", "identifiers": ["c"]}},
     "Coffee Plug", "Coffee Plug"),
    ("switch", {"command_topic": "x", "device": {"name": "Coffee Plug", "identifiers": ["c"]}},
     "MQTT Switch", "Coffee Plug MQTT Switch"),
    ("switch", {"command_topic": "x"}, "MQTT Switch", "MQTT Switch"),
    ("switch", {"command_topic": "x", "name": "Kettle"}, "Kettle", "Kettle"),
    ("switch", {"command_topic": "x", "name": "Kettle", "device": {"name": "Plug"}}, "Kettle", "Plug Kettle"),
    ("switch", {"command_topic": "x", "name": None}, "my plug", "my plug"),
    ("light", {"command_topic": "x"}, "MQTT LightEntity", "MQTT LightEntity"),
    ("light", {"command_topic": "x", "schema": "json"}, "MQTT JSON Light", "MQTT JSON Light"),
    ("climate", {"mode_command_topic": "x"}, "MQTT HVAC", "MQTT HVAC"),
    ("sensor", {"state_topic": "x", "device_class": "humidity", "device": {"name": "Bath"}}, "Humidity",
     "Bath Humidity"),
    ("sensor", {"state_topic": "x"}, "MQTT Sensor", "MQTT Sensor"),
    ("binary_sensor", {"state_topic": "x", "device_class": "garage_door"}, "Garage door", "Garage door"),
    ("cover", {"command_topic": "x", "device_class": "garage"}, "MQTT Cover", "MQTT Cover"),
    ("lock", {"command_topic": "x", "name": 7}, "7", "7"),
])
def test_names_follow_home_assistant(component, config, name, friendly):
    home = Home.from_configs({f"homeassistant/{component}/my_plug/config": config})
    (entity,) = list(home)
    assert (entity.name, entity.friendly_name) == (name, friendly)


def test_entity_ids():
    home = Home.from_configs({
        "homeassistant/light/Node-1/Kitchen-Ceiling/config": {"command_topic": "a"},
        "homeassistant/light/kitchen_ceiling/config": {"command_topic": "b"},
        "homeassistant/light/other/config": {"command_topic": "c", "object_id": "Kitchen Ceiling"},
        "homeassistant/switch/x/config": {"command_topic": "d", "obj_id": "Küche Licht"},
        "homeassistant/switch/y/config": {"command_topic": "e", "default_entity_id": "switch.tv"},
        "homeassistant/switch/z/config": {"command_topic": "f", "default_entity_id": "light.wrong_domain"},
    })
    assert list(home.entities) == ["light.kitchen_ceiling", "light.kitchen_ceiling_2", "light.kitchen_ceiling_3",
                                   "switch.kuche_licht", "switch.tv", "switch.z"]
    assert [home.get(i).config["command_topic"] for i in home.entities] == ["a", "b", "c", "d", "e", "f"]
    # the first claimant going away does not rename the others; a newcomer takes the free id
    home.feed("homeassistant/light/Node-1/Kitchen-Ceiling/config", "")
    home.feed("homeassistant/light/new/config", json.dumps({"command_topic": "g", "object_id": "kitchen_ceiling"}))
    assert home.get("light.kitchen_ceiling").config["command_topic"] == "g"
    assert home.get("light.kitchen_ceiling_2").config["command_topic"] == "b"
    # an update keeps the id; a new requested object id moves it
    home.feed("homeassistant/light/kitchen_ceiling/config", json.dumps({"command_topic": "b2"}))
    assert home.get("light.kitchen_ceiling_2").config["command_topic"] == "b2"
    home.feed("homeassistant/light/kitchen_ceiling/config", json.dumps({"command_topic": "b3", "object_id": "pantry"}))
    assert "light.kitchen_ceiling_2" not in home and home.get("light.pantry").config["command_topic"] == "b3"


def test_malformed_configs_are_skipped_with_a_log_line(caplog):
    good = {"command_topic": "ok/set"}
    configs = {
        "homeassistant/switch/not_json/config": "{nope",
        "homeassistant/switch/array/config": "[1, 2]",
        "homeassistant/switch/string/config": '"ON"',
        "homeassistant/switch/no_command/config": {"name": "No command", "state_topic": "s"},
        "homeassistant/light/bad_scale/config": {"command_topic": "x", "brightness_scale": "abc"},
        "homeassistant/light/bad_schema/config": {"command_topic": "x", "schema": "weird"},
        "homeassistant/lock/bad_device/config": {"command_topic": "x", "device": "front door"},
        "homeassistant/switch/bad topic/config": good,
        "homeassistant/sensor/no_state/config": {"name": "x"},
        "homeassistant/fan/bad_range/config": {"command_topic": "x", "speed_range_min": 5, "speed_range_max": 3},
        "homeassistant/switch/empty_topic/config": {"command_topic": ""},
        "homeassistant/switch/good/config": good,
        "homeassistant/device/nocmps/config": {"dev": {"name": "d"}},
    }
    with caplog.at_level(logging.WARNING, logger="edge_runtime.assist"):
        home = Home.from_configs(configs)
    assert list(home.entities) == ["switch.good"]
    text = caplog.text
    for needle in ["not_json/config: payload is not JSON", "array/config: expected a JSON object, got list",
                   "string/config: expected a JSON object, got str", "a switch needs 'command_topic'",
                   "'brightness_scale' must be an integer, got 'abc'", "light 'schema' must be one of",
                   "'device' must be an object", "'homeassistant/switch/bad topic/config' is not a discovery topic",
                   "a sensor needs 'state_topic'", "speed_range_min < speed_range_max",
                   "'command_topic' must be a non-empty topic string", "needs a 'components' (cmps) object"]:
        assert needle in text, needle
    # non-UTF-8 bytes, and a bad update that leaves the entity as it was
    home.feed("homeassistant/switch/bytes/config", b"\xff\xfe{")
    home.feed("homeassistant/switch/good/config", json.dumps({"name": "broken"}))
    assert list(home.entities) == ["switch.good"] and home.get("switch.good").config == good
    assert "payload is not UTF-8" in caplog.text


def test_device_discovery():
    topic = "homeassistant/device/hall_multi/config"
    home = load("misc")
    humidity, lux = home.get("sensor.hall_humidity"), home.get("sensor.hall_lux")
    assert humidity.config["state_topic"] == lux.config["state_topic"] == "hall/multi/state"
    assert humidity.device_name == "Hall Multisensor" and humidity.area == "Hall"
    assert humidity.config["origin"] == {"name": "example2mqtt", "sw_version": "2.1"}
    assert (humidity.friendly_name, lux.friendly_name) == ("Hall Multisensor Humidity", "Hall Multisensor Light level")
    home.feed("hall/multi/state", json.dumps({"humidity": 55, "lux": 120}))
    assert (humidity.state, lux.state) == ("55", "120")
    payload = json.loads(open(os.path.join(DATA, "home_misc.json")).read())[topic]
    payload["cmps"]["hall_lux"] = {"p": "sensor"}       # removes just that component
    home.feed(topic, json.dumps(payload))
    assert "sensor.hall_lux" not in home and "sensor.hall_humidity" in home
    home.feed(topic, "")
    assert "sensor.hall_humidity" not in home


def test_unknown_components_are_kept_but_not_controllable():
    home = load("misc")
    robot = home.get("vacuum.robot")
    assert robot.domain == "vacuum" and not robot.controllable and robot.area == "Hall"
    home.feed("robot/state", "docked")
    assert robot.state == "docked" and describe(robot) == "The robot is docked."


def test_supports_rejects_unknown_features():
    home = load("misc")
    with pytest.raises(ValueError, match="unknown feature 'dimming'"):
        home.get("light.porch_light").supports("dimming")


def _feed_all(home, states):
    for topic, payload in states.items():
        home.feed(topic, payload if isinstance(payload, str) else json.dumps(payload))


def test_zigbee2mqtt_states_and_descriptions():
    home = load("zigbee2mqtt")
    for e in home:
        assert e.state is None and describe(e).startswith("I don't know the state of the ")
    _feed_all(home, {
        "zigbee2mqtt/bridge/state": {"state": "online"},
        "zigbee2mqtt/Landing light": {"state": "ON", "brightness": 102, "color_temp": 370, "linkquality": 120},
        "zigbee2mqtt/Side gate": {"state": "LOCK", "battery": 90},
        "zigbee2mqtt/Garage door": {"state": "CLOSE", "position": 0},
        "zigbee2mqtt/Bedroom blind": {"state": "OPEN", "position": 60},
        "zigbee2mqtt/Lounge thermostat": {"local_temperature": 19.5, "occupied_heating_setpoint": 21,
                                          "system_mode": "heat", "running_state": "heat"},
        "zigbee2mqtt/Kitchen": {"temperature": 21.5, "humidity": 48},
        "zigbee2mqtt/Back door": {"contact": True},
    })
    light = home.get("light.landing_light")
    assert (light.state, light.attributes, light.available) == ("on", {"brightness": 102, "brightness_pct": 40}, True)
    assert describe(light) == "The landing light is on at 40%."
    assert describe(home.get("lock.side_gate")) == "The side gate is locked."
    assert describe(home.get("cover.garage_door")) == "The garage door is closed."
    blind = home.get("cover.bedroom_blind")
    # its value_template uses {% if %}: the state is unknown, the position still tracked
    assert blind.state is None and blind.attributes == {"position": 60}
    thermostat = home.get("climate.lounge_thermostat")
    assert thermostat.state == "heat" and thermostat.attributes == {
        "current_temperature": 19.5, "temperature": 21.0, "hvac_mode": "heat", "hvac_action": "heat"}
    assert describe(thermostat) == "The lounge thermostat is set to heat at 21.0 °C; it is 19.5 °C now."
    assert describe(home.get("sensor.kitchen_temperature")) == "The kitchen temperature is 21.5 °C."
    assert describe(home.get("binary_sensor.back_door")) == "The back door is closed."     # contact true = closed
    _feed_all(home, {"zigbee2mqtt/Back door": {"contact": False}, "zigbee2mqtt/Side gate": {"state": "UNLOCK"},
                     "zigbee2mqtt/Landing light": {"state": "OFF", "brightness": 0}})
    assert describe(home.get("binary_sensor.back_door")) == "The back door is open."
    assert describe(home.get("lock.side_gate")) == "The side gate is unlocked."
    assert describe(light) == "The landing light is off." and light.attributes["brightness_pct"] == 40
    home.feed("zigbee2mqtt/Lounge thermostat", json.dumps({"system_mode": "off"}))
    assert describe(thermostat) == "The lounge thermostat is off; it is 19.5 °C now."
    home.feed("zigbee2mqtt/bridge/state", json.dumps({"state": "offline"}))
    assert light.available is False and describe(light) == "The landing light is unavailable."


def test_tasmota_and_esphome_states():
    home = load("tasmota")
    _feed_all(home, {"tasmota_ABC123/tele/STATE": {"POWER": "ON", "Dimmer": 40},
                     "tasmota_ABC123/tele/LWT": "Online",
                     "tasmota_DEF456/stat/RESULT": {"POWER": "OFF"},
                     "tele/tasmota_GHI789/SENSOR": {"DS18B20": {"Temperature": 18.3}, "TempUnit": "C"},
                     "tasmota_JKL012/stat/RESULT": {"Shutter1": {"Position": 35, "Direction": 0}}})
    assert describe(home.get("light.abc123_li_1")) == "The hall dimmer is on at 40%."
    assert describe(home.get("switch.def456_rl_1")) == "The kitchen plug kettle is off."
    assert describe(home.get("sensor.ghi789_ds18b20_temperature")) == "The bedroom temperature is 18.3 °C."
    shutter = home.get("cover.jkl012_shutter_1")
    assert (shutter.state, shutter.attributes["position"]) == ("open", 35)     # no state topic: from the position
    assert describe(shutter) == "The lounge shutter is open at 35%."
    # a RESULT without the templated key leaves the state as it was
    home.feed("tasmota_DEF456/stat/RESULT", json.dumps({"Dimmer": 10}))
    assert home.get("switch.def456_rl_1").state == "off"

    home = load("esphome")
    _feed_all(home, {"livingroom/light/ceiling/state": {"state": "ON", "brightness": 128, "color_mode": "brightness"},
                     "livingroom/fan/ceiling_fan/state": "ON", "livingroom/fan/ceiling_fan/speed_level/state": "2",
                     "livingroom/switch/tv_plug/state": "OFF", "livingroom/binary_sensor/motion/state": "ON",
                     "livingroom/climate/heat_pump/mode/state": "heat_cool",
                     "livingroom/climate/heat_pump/target_temperature/state": "22.5",
                     "livingroom/climate/heat_pump/current_temperature/state": "20.25",
                     "livingroom/status": "online"})
    assert describe(home.get("light.ceiling")) == "The living room ceiling is on at 50%."
    assert home.get("fan.ceiling_fan").attributes == {"percentage": 66}
    assert describe(home.get("fan.ceiling_fan")) == "The ceiling fan is on at 66%."
    assert describe(home.get("switch.tv_plug")) == "The TV plug is off."
    assert describe(home.get("binary_sensor.motion")) == "The living room motion is detecting motion."
    assert describe(home.get("climate.heat_pump")) == "The heat pump is set to heat cool at 22.5 °C; it is 20.2 °C now."
    home.feed("livingroom/climate/heat_pump/mode/state", "turbo")      # not one of its modes: ignored
    assert home.get("climate.heat_pump").state == "heat_cool"


def test_misc_states():
    home = load("misc")
    _feed_all(home, {"alarm/house/state": "armed_away", "gate/driveway/state": "opening",
                     "study/lamp/state": "on,191", "front/door/state": "JAMMED", "porch/light/status": "1"})
    assert describe(home.get("alarm_control_panel.house_alarm")) == "The house alarm is armed away."
    assert describe(home.get("cover.driveway_gate")) == "The driveway gate is opening."
    assert describe(home.get("light.study_lamp")) == "The study lamp is on at 75%."
    assert describe(home.get("lock.front_door")) == "The front door is jammed."
    assert describe(home.get("light.porch_light")) == "The porch light is on."
    home.feed("alarm/house/state", "exploded")      # not an alarm state: ignored
    assert home.get("alarm_control_panel.house_alarm").state == "armed_away"
    home.feed("alarm/house/state", "None")
    assert home.get("alarm_control_panel.house_alarm").state is None


def test_states_from_file_and_late_entities(tmp_path):
    """A file may carry retained state payloads beside the configs; an entity announced after its
    state arrived still gets it."""
    path = tmp_path / "home.json"
    path.write_text(json.dumps({"plug/state": "ON",
                                "homeassistant/switch/plug/config": {"command_topic": "plug/set",
                                                                     "state_topic": "plug/state", "name": "Plug"}}))
    home = Home.from_file(path)
    assert home.get("switch.plug").state == "on"
    home.feed("other/state", "OFF")
    home.feed("homeassistant/switch/other/config", json.dumps({"command_topic": "o", "state_topic": "other/state"}))
    assert home.get("switch.other").state == "off"


def test_change_notifications_and_version():
    home = Home()
    seen = []
    unsubscribe = home.on_change(lambda kind, entity: seen.append((kind, entity.entity_id)))
    home.on_change(lambda kind, entity: 1 / 0)          # a failing listener is logged, never raised
    v0 = home.version
    home.feed("homeassistant/switch/plug/config", json.dumps({"command_topic": "p/set", "state_topic": "p/state"}))
    home.feed("p/state", "ON")
    home.feed("p/state", "ON")                          # unchanged: no event
    home.feed("homeassistant/switch/plug/config", json.dumps({"command_topic": "p/set", "state_topic": "p/state"}))
    home.feed("homeassistant/switch/plug/config", json.dumps({"command_topic": "p/set2", "state_topic": "p/state"}))
    assert home.get("switch.plug").state == "on"        # a changed config keeps the last known state
    home.feed("homeassistant/switch/plug/config", "")
    assert seen == [("added", "switch.plug"), ("state", "switch.plug"), ("changed", "switch.plug"),
                    ("removed", "switch.plug")]
    assert home.version == v0 + 3
    unsubscribe()
    home.feed("homeassistant/switch/plug/config", json.dumps({"command_topic": "p/set"}))
    assert len(seen) == 4


def test_from_file_errors(tmp_path):
    with pytest.raises(EdgeRuntimeError, match="does not exist"):
        Home.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        Home.from_file(bad)
    bad.write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        Home.from_file(bad)
    with pytest.raises(ValueError, match="expected a mapping"):
        Home.from_configs([("a", "b")])
