"""Action calls -> the exact messages Home Assistant would publish, checked offline (the broker
round trip is in test_assist_broker.py), plus the refusals and the confirmation gate."""
import json
import os

import pytest

from edge_runtime.assist import (ActionError, ConfirmationRequired, Home, PublishError, commands_for, execute,
                                 needs_confirmation)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _home():
    configs = {}
    for name in ("zigbee2mqtt", "tasmota", "esphome", "misc"):
        with open(os.path.join(DATA, f"home_{name}.json")) as f:
            configs.update(json.load(f))
    configs.update({
        "homeassistant/light/kitchen/config": {"name": "Kitchen", "command_topic": "kitchen/light/set",
                                               "brightness_command_topic": "kitchen/light/brightness"},
        "homeassistant/light/onoff/config": {"name": "Hall bulb", "command_topic": "hall/bulb/set"},
        "homeassistant/cover/awning/config": {"name": "Awning", "command_topic": "awning/set",
                                              "set_position_topic": "awning/pos", "position_open": 0,
                                              "position_closed": 100},
        "homeassistant/fan/plain/config": {"name": "Plain fan", "command_topic": "plain/fan/set",
                                           "payload_on": "1", "payload_off": "0"},
        "homeassistant/climate/nocmd/config": {"name": "Display only", "mode_command_topic": "nocmd/mode"},
        "homeassistant/switch/templated/config": {"name": "Templated", "command_topic": "templated/set",
                                                  "command_template": '{"state": "{{ value }}"}'},
    })
    return Home.from_configs(configs)


HOME = _home()


def wire(topic, payload):
    return {"topic": topic, "payload": payload, "qos": 1, "retain": False}


def run(action, entity_id, data=None, home=HOME):
    result = {"action": action, "entity_id": entity_id}
    if data is not None:
        result["data"] = data
    return commands_for(home, result)


Z2M_LIGHT = "zigbee2mqtt/Landing light/set"


@pytest.mark.parametrize("action, entity_id, data, expected", [
    # Zigbee2MQTT json-schema light, brightness_scale 254: HA brightness round(pct*255/100), then to the scale
    ("light.turn_on", "light.landing_light", None, [wire(Z2M_LIGHT, '{"state":"ON"}')]),
    ("light.turn_on", "light.landing_light", {"brightness_pct": 40}, [wire(Z2M_LIGHT, '{"state":"ON","brightness":102}')]),
    ("light.turn_on", "light.landing_light", {"brightness_pct": 100}, [wire(Z2M_LIGHT, '{"state":"ON","brightness":254}')]),
    ("light.turn_on", "light.landing_light", {"brightness_pct": 1}, [wire(Z2M_LIGHT, '{"state":"ON","brightness":3}')]),
    ("light.turn_on", "light.landing_light", {"brightness_pct": 0.1}, [wire(Z2M_LIGHT, '{"state":"OFF"}')]),
    ("light.turn_on", "light.landing_light", {"brightness": 128, "transition": 2},
     [wire(Z2M_LIGHT, '{"state":"ON","transition":2.0,"brightness":127}')]),
    ("light.turn_off", "light.landing_light", None, [wire(Z2M_LIGHT, '{"state":"OFF"}')]),
    # ESPHome json light, default scale 255
    ("light.turn_on", "light.ceiling", {"brightness_pct": 50},
     [wire("livingroom/light/ceiling/command", '{"state":"ON","brightness":128}')]),
    # basic schema, on_command_type last (default): brightness first, then ON
    ("light.turn_on", "light.kitchen", {"brightness_pct": 40},
     [wire("kitchen/light/brightness", "102"), wire("kitchen/light/set", "ON")]),
    ("light.turn_on", "light.kitchen", None, [wire("kitchen/light/set", "ON")]),
    ("light.turn_off", "light.kitchen", None, [wire("kitchen/light/set", "OFF")]),
    # Tasmota: on_command_type brightness, brightness_scale 100: only the Dimmer command
    ("light.turn_on", "light.abc123_li_1", {"brightness_pct": 40}, [wire("tasmota_ABC123/cmnd/Dimmer", "40")]),
    ("light.turn_on", "light.abc123_li_1", None, [wire("tasmota_ABC123/cmnd/Dimmer", "100")]),
    ("light.turn_off", "light.abc123_li_1", None, [wire("tasmota_ABC123/cmnd/POWER", "OFF")]),
    # on_command_type first, custom payloads and a brightness command template
    ("light.turn_on", "light.porch_light", {"brightness_pct": 50},
     [wire("porch/light/switch", "1"), wire("porch/light/brightness/set", '{"dim": 128}')]),
    ("light.turn_off", "light.porch_light", None, [wire("porch/light/switch", "0")]),
    # template schema
    ("light.turn_on", "light.study_lamp", None, [wire("study/lamp/set", "on,")]),
    ("light.turn_on", "light.study_lamp", {"brightness_pct": 50}, [wire("study/lamp/set", "on,128")]),
    ("light.turn_off", "light.study_lamp", None, [wire("study/lamp/set", "off")]),
    ("switch.turn_on", "switch.def456_rl_1", None, [wire("tasmota_DEF456/cmnd/POWER", "ON")]),
    ("switch.turn_off", "switch.tv_plug", None, [wire("livingroom/switch/tv_plug/command", "OFF")]),
    ("switch.turn_on", "switch.templated", None, [wire("templated/set", '{"state": "ON"}')]),
    # fan with speed_range 1..3: ceil(pct * 3 / 100); 0 % is speed_range_min - 1
    ("fan.set_percentage", "fan.ceiling_fan", {"percentage": 50}, [wire("livingroom/fan/ceiling_fan/speed_level/command", "2")]),
    ("fan.set_percentage", "fan.ceiling_fan", {"percentage": 100}, [wire("livingroom/fan/ceiling_fan/speed_level/command", "3")]),
    ("fan.set_percentage", "fan.ceiling_fan", {"percentage": 1}, [wire("livingroom/fan/ceiling_fan/speed_level/command", "1")]),
    ("fan.set_percentage", "fan.ceiling_fan", {"percentage": 0}, [wire("livingroom/fan/ceiling_fan/speed_level/command", "0")]),
    ("fan.turn_on", "fan.ceiling_fan", {"percentage": 66},
     [wire("livingroom/fan/ceiling_fan/command", "ON"), wire("livingroom/fan/ceiling_fan/speed_level/command", "2")]),
    ("fan.turn_off", "fan.ceiling_fan", None, [wire("livingroom/fan/ceiling_fan/command", "OFF")]),
    ("fan.turn_on", "fan.plain", None, [wire("plain/fan/set", "1")]),
    ("cover.open_cover", "cover.garage_door", None, [wire("zigbee2mqtt/Garage door/set", "OPEN")]),
    ("cover.close_cover", "cover.garage_door", None, [wire("zigbee2mqtt/Garage door/set", "CLOSE")]),
    ("cover.stop_cover", "cover.garage_door", None, [wire("zigbee2mqtt/Garage door/set", "STOP")]),
    ("cover.set_cover_position", "cover.bedroom_blind", {"position": 40},
     [wire("zigbee2mqtt/Bedroom blind/set", '{ "position": 40 }')]),
    ("cover.open_cover", "cover.jkl012_shutter_1", None, [wire("tasmota_JKL012/cmnd/Backlog", "ShutterOpen1")]),
    ("cover.set_cover_position", "cover.jkl012_shutter_1", {"position": 35},
     [wire("tasmota_JKL012/cmnd/ShutterPosition1", "35")]),
    ("cover.set_cover_position", "cover.awning", {"position": 30}, [wire("awning/pos", "70")]),    # inverted range
    ("lock.lock", "lock.side_gate", None, [wire("zigbee2mqtt/Side gate/set", "LOCK")]),
    ("lock.lock", "lock.front_door", {"code": "1234"}, [wire("front/door/set", '{"action": "LOCK", "pin": "1234"}')]),
    # climate: the temperature as HA's float, the mode as given
    ("climate.set_temperature", "climate.lounge_thermostat", {"temperature": 21},
     [wire("zigbee2mqtt/Lounge thermostat/set/occupied_heating_setpoint", "21.0")]),
    ("climate.set_temperature", "climate.lounge_thermostat", {"temperature": 21.5, "hvac_mode": "heat"},
     [wire("zigbee2mqtt/Lounge thermostat/set/system_mode", "heat"),
      wire("zigbee2mqtt/Lounge thermostat/set/occupied_heating_setpoint", "21.5")]),
    ("climate.set_hvac_mode", "climate.lounge_thermostat", {"hvac_mode": "auto"},
     [wire("zigbee2mqtt/Lounge thermostat/set/system_mode", "auto")]),
    ("climate.turn_off", "climate.lounge_thermostat", None, [wire("zigbee2mqtt/Lounge thermostat/set/system_mode", "off")]),
    ("climate.turn_on", "climate.lounge_thermostat", None, [wire("zigbee2mqtt/Lounge thermostat/set/system_mode", "heat")]),
    ("climate.turn_on", "climate.heat_pump", None, [wire("livingroom/climate/heat_pump/mode/command", "heat_cool")]),
    ("climate.set_temperature", "climate.attic_heater", {"temperature": 20.25}, [wire("attic/heater/target", "20.2")]),
    ("climate.turn_on", "climate.attic_heater", None, [wire("attic/heater/power", "ON")]),
    ("climate.turn_off", "climate.attic_heater", None, [wire("attic/heater/power", "OFF")]),
    ("alarm_control_panel.alarm_arm_away", "alarm_control_panel.house_alarm", None,
     [wire("alarm/house/set", '{"action": "ARM_AWAY", "code": "None"}')]),
    ("button.press", "button.chime", None, [wire("doorbell/chime", "PRESS")]),
    # several entities, in the order given
    ("switch.turn_off", ["switch.tv_plug", "switch.def456_rl_1"], None,
     [wire("livingroom/switch/tv_plug/command", "OFF"), wire("tasmota_DEF456/cmnd/POWER", "OFF")]),
])
def test_commands(action, entity_id, data, expected):
    assert run(action, entity_id, data) == expected


def test_toggles_follow_the_state():
    home = _home()
    home.feed("kitchen/light/set", "x")         # not a state topic of anything: no effect
    assert run("light.toggle", "light.kitchen", None, home) == [wire("kitchen/light/set", "ON")]
    home.feed("livingroom/switch/tv_plug/state", "ON")
    assert run("switch.toggle", "switch.tv_plug", None, home) == [wire("livingroom/switch/tv_plug/command", "OFF")]
    home.feed("zigbee2mqtt/Garage door", json.dumps({"state": "CLOSE", "position": 0}))
    assert run("cover.toggle", "cover.garage_door", None, home) == [wire("zigbee2mqtt/Garage door/set", "OPEN")]


def test_brightness_on_command_type_uses_the_last_brightness():
    home = _home()
    home.feed("tasmota_ABC123/tele/STATE", json.dumps({"POWER": "OFF", "Dimmer": 30}))
    assert run("light.turn_on", "light.abc123_li_1", None, home) == [wire("tasmota_ABC123/cmnd/Dimmer", "30")]
    home.feed("zigbee2mqtt/Landing light", json.dumps({"state": "ON", "brightness": 127}))
    assert run("light.turn_on", "light.landing_light", {"brightness_step_pct": 10}, home) == [
        wire(Z2M_LIGHT, '{"state":"ON","brightness":153}')]    # HA: 128 + 26 = 154 -> 153


@pytest.mark.parametrize("result, message", [
    ({"action": "light.explode", "entity_id": "light.kitchen"}, "unknown action 'light.explode'"),
    ({"action": 7, "entity_id": "light.kitchen"}, "unknown action 7"),
    ({"action": "lock.lock", "entity_id": "light.kitchen"}, "it is a light, the action is for a lock"),
    ({"action": "light.turn_on", "entity_id": "light.nowhere"}, "unknown entity 'light.nowhere'"),
    ({"action": "light.turn_on", "entity_id": []}, "entity_id must be an entity id or a non-empty list"),
    ({"action": "light.turn_on"}, "entity_id must be"),
    ({"action": "light.turn_on", "entity_id": "light.kitchen", "data": {"color_name": "red"}},
     "unsupported data 'color_name'"),
    ({"action": "light.turn_on", "entity_id": "light.kitchen", "data": {"brightness_pct": 140}},
     "brightness_pct 140 is outside 0..100"),
    ({"action": "light.turn_on", "entity_id": "light.kitchen", "data": {"brightness_pct": "lots"}},
     "brightness_pct must be a number"),
    ({"action": "light.turn_on", "entity_id": "light.onoff", "data": {"brightness_pct": 50}}, "cannot be dimmed"),
    ({"action": "light.turn_on", "entity_id": "light.kitchen", "data": "bright"}, "data must be an object"),
    ({"action": "fan.set_percentage", "entity_id": "fan.plain", "data": {"percentage": 50}},
     "has no percentage_command_topic"),
    ({"action": "fan.set_percentage", "entity_id": "fan.ceiling_fan"}, "data needs 'percentage'"),
    ({"action": "cover.stop_cover", "entity_id": "cover.driveway_gate"}, "no command for stop"),
    ({"action": "cover.set_cover_position", "entity_id": "cover.driveway_gate", "data": {"position": 50}},
     "has no set_position_topic"),
    ({"action": "lock.open", "entity_id": "lock.side_gate"}, "has no payload_open"),
    ({"action": "lock.lock", "entity_id": "lock.front_door"}, "a code matching"),
    ({"action": "lock.lock", "entity_id": "lock.front_door", "data": {"code": "12"}}, "a code matching"),
    ({"action": "climate.set_temperature", "entity_id": "climate.lounge_thermostat", "data": {"temperature": 31}},
     "temperature 31 is outside its range 5..30 °C"),
    ({"action": "climate.set_temperature", "entity_id": "climate.attic_heater", "data": {"temperature": 36}},
     "outside its range 7..35 °C"),
    ({"action": "climate.set_temperature", "entity_id": "climate.nocmd", "data": {"temperature": 20}},
     "has no temperature_command_topic"),
    ({"action": "climate.set_temperature", "entity_id": "climate.lounge_thermostat", "data": {}},
     "give temperature"),
    ({"action": "climate.set_hvac_mode", "entity_id": "climate.lounge_thermostat", "data": {"hvac_mode": "cool"}},
     "hvac_mode 'cool' is not one of its modes (off, heat, auto)"),
    ({"action": "alarm_control_panel.alarm_disarm", "entity_id": "alarm_control_panel.house_alarm"},
     "this panel needs a code"),
    ({"action": "switch.turn_on", "entity_id": ["switch.tv_plug", "switch.nope"]}, "unknown entity 'switch.nope'"),
    ("light.turn_on", "expected an action result object"),
])
def test_refusals(result, message):
    with pytest.raises(ActionError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        commands_for(HOME, result)


def test_nothing_to_do():
    home = Home()      # no broker: still fine, nothing is published
    for result in ({"action": None, "reply": "No such device."},
                   {"action": "query", "entity_id": "light.x", "reply": "..."}):
        assert commands_for(home, result) == [] and execute(home, result) == []


@pytest.mark.parametrize("action, entity_id, data, flagged", [
    ("lock.unlock", "lock.side_gate", None, True),
    ("lock.open", "lock.front_door", {"code": "1234"}, True),
    ("lock.lock", "lock.side_gate", None, False),
    ("cover.open_cover", "cover.garage_door", None, True),
    ("cover.open_cover", "cover.driveway_gate", None, True),
    ("cover.close_cover", "cover.garage_door", None, False),
    ("cover.set_cover_position", "cover.garage_door", {"position": 40}, True),
    ("cover.set_cover_position", "cover.garage_door", {"position": 0}, False),
    ("cover.open_cover", "cover.bedroom_blind", None, False),
    ("alarm_control_panel.alarm_disarm", "alarm_control_panel.house_alarm", {"code": "1"}, True),
    ("alarm_control_panel.alarm_arm_home", "alarm_control_panel.house_alarm", None, False),
    ("light.turn_on", "light.kitchen", None, False),
    ("switch.turn_on", ["switch.tv_plug", "switch.def456_rl_1"], None, False),
    ("cover.open_cover", ["cover.bedroom_blind", "cover.garage_door"], None, True),
])
def test_needs_confirmation(action, entity_id, data, flagged):
    result = {"action": action, "entity_id": entity_id, "data": data}
    assert needs_confirmation(HOME, result) is flagged
    if flagged:
        with pytest.raises(ConfirmationRequired) as info:
            execute(HOME, result, dry_run=True)
        assert info.value.commands == commands_for(HOME, result)
        assert execute(HOME, result, confirmed=True, dry_run=True) == commands_for(HOME, result)
    else:
        assert execute(HOME, result, dry_run=True) == commands_for(HOME, result)


def test_unlock_message_and_result_flag():
    with pytest.raises(ConfirmationRequired, match="confirmation required to unlock lock.side_gate"):
        execute(HOME, {"action": "lock.unlock", "entity_id": "lock.side_gate"}, dry_run=True)
    # the interpreter's own "confirm" flag is honoured too
    result = {"action": "switch.turn_on", "entity_id": "switch.tv_plug", "confirm": True}
    with pytest.raises(ConfirmationRequired):
        execute(HOME, result, dry_run=True)
    assert execute(HOME, result, confirmed=True, dry_run=True) == [wire("livingroom/switch/tv_plug/command", "ON")]
    # invalid requests are refused before any confirmation question
    with pytest.raises(ActionError):
        execute(HOME, {"action": "lock.open", "entity_id": "lock.side_gate"})


def test_a_file_home_cannot_publish():
    result = {"action": "switch.turn_on", "entity_id": "switch.tv_plug"}
    with pytest.raises(PublishError, match="no MQTT broker to publish to"):
        execute(HOME, result)
    assert execute(HOME, result, dry_run=True) == [wire("livingroom/switch/tv_plug/command", "ON")]
