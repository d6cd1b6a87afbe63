"""Home.from_broker and execute against a real Mosquitto on a free loopback port.

Retained discovery configs and states are published the way Zigbee2MQTT, Tasmota and ESPHome
publish them; a separate MQTT 5 subscriber (retain-as-published) records what crossed the wire.
"""
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_runtime.assist import (BrokerUnavailable, ConfirmationRequired, Home, PublishError, describe, execute)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
TIMEOUT = 10.0
SETTLE = 0.3

STATES = {
    "zigbee2mqtt/bridge/state": {"state": "online"},
    "zigbee2mqtt/Landing light": {"state": "ON", "brightness": 102, "linkquality": 120},
    "zigbee2mqtt/Side gate": {"state": "LOCK"},
    "zigbee2mqtt/Garage door": {"state": "CLOSE", "position": 0},
    "zigbee2mqtt/Lounge thermostat": {"local_temperature": 19.5, "occupied_heating_setpoint": 21,
                                      "system_mode": "heat"},
    "zigbee2mqtt/Kitchen": {"temperature": 21.5},
    "tasmota_ABC123/tele/STATE": {"POWER": "ON", "Dimmer": 40},
    "livingroom/light/ceiling/state": {"state": "OFF"},
    "livingroom/fan/ceiling_fan/state": "ON",
    "livingroom/fan/ceiling_fan/speed_level/state": "3",
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if MOSQUITTO is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (/usr/sbin/mosquitto); the assist broker tests need it")
        pytest.skip("mosquitto is not installed")
    workdir = tmp_path_factory.mktemp("mosquitto")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest stderr\nlog_type error\nlog_type warning\n")
    log_file = open(workdir / "mosquitto.log", "wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {proc.returncode}: {(workdir / 'mosquitto.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("mosquitto did not start listening")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log_file.close()


class Peer:
    """A paho client for the test: publishes (acknowledged) and records what it receives."""

    def __init__(self, address, subscribe=None):
        host, port = address.rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.messages = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        if subscribe:
            # retain-as-published: the broker passes on the publisher's retain flag unchanged
            self.client.subscribe([(t, SubscribeOptions(qos=2, retainAsPublished=True)) for t in subscribe])
            assert self.subscribed.wait(TIMEOUT)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.qos, bool(msg.retain)))
            self.cond.notify_all()

    def publish(self, topic, payload, retain=True):
        if not isinstance(payload, (str, bytes)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def wait_for(self, count, timeout=TIMEOUT):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= count, timeout), self.messages
            return list(self.messages)

    def take(self, count):
        got = self.wait_for(count)
        with self.cond:
            del self.messages[:count]
        return got[:count]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _fixtures():
    configs = {}
    for name in ("zigbee2mqtt", "tasmota", "esphome", "misc"):
        with open(os.path.join(DATA, f"home_{name}.json")) as f:
            configs.update(json.load(f))
    return configs


@pytest.fixture(scope="module")
def loaded(broker):
    """The broker with every fixture config and the states retained on it."""
    peer = Peer(broker)
    for topic, config in _fixtures().items():
        peer.publish(topic, config)
    for topic, payload in STATES.items():
        peer.publish(topic, payload)
    yield broker
    peer.close()


def until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_retained_configs_and_states(loaded):
    expected = Home.from_configs(_fixtures())
    with Home.from_broker(loaded, settle=SETTLE) as home:
        assert home.connected and home.broker == loaded
        assert sorted(home.entities) == sorted(expected.entities)
        for entity_id, entity in expected.entities.items():
            got = home.get(entity_id)
            assert (got.name, got.friendly_name, got.area, got.config) == (
                entity.name, entity.friendly_name, entity.area, entity.config)
        assert describe(home.get("light.landing_light")) == "The landing light is on at 40%."
        assert describe(home.get("lock.side_gate")) == "The side gate is locked."
        assert describe(home.get("cover.garage_door")) == "The garage door is closed."
        assert describe(home.get("sensor.kitchen_temperature")) == "The kitchen temperature is 21.5 °C."
        assert describe(home.get("climate.lounge_thermostat")) == \
            "The lounge thermostat is set to heat at 21.0 °C; it is 19.5 °C now."
        assert describe(home.get("light.abc123_li_1")) == "The hall dimmer is on at 40%."
        assert describe(home.get("light.ceiling")) == "The living room ceiling is off."
        assert describe(home.get("fan.ceiling_fan")) == "The ceiling fan is on at 100%."
        assert home.get("light.landing_light").available is True
        assert describe(home.get("switch.tv_plug")) == "I don't know the state of the TV plug."


def test_follows_additions_changes_removals_and_states(loaded):
    peer = Peer(loaded)
    topic = "homeassistant/switch/0xabcdef/switch/config"
    events = []
    with Home.from_broker(loaded, settle=SETTLE) as home:
        home.on_change(lambda kind, entity: events.append((kind, entity.entity_id)))
        version = home.version
        config = {"name": None, "object_id": "desk_lamp", "command_topic": "zigbee2mqtt/Desk lamp/set",
                  "state_topic": "zigbee2mqtt/Desk lamp", "value_template": "{{ value_json.state }}",
                  "device": {"identifiers": ["0xabcdef"], "name": "Desk lamp", "suggested_area": "Office"}}
        peer.publish(topic, config)
        assert until(lambda: "switch.desk_lamp" in home)
        assert home.get("switch.desk_lamp").area == "Office" and home.version == version + 1
        assert "Office" in home.areas()
        peer.publish("zigbee2mqtt/Desk lamp", {"state": "ON"})
        assert until(lambda: home.get("switch.desk_lamp").state == "on")
        assert describe(home.get("switch.desk_lamp")) == "The desk lamp is on."
        peer.publish(topic, dict(config, device=dict(config["device"], name="Reading lamp", suggested_area="Study")))
        assert until(lambda: home.get("switch.desk_lamp").friendly_name == "Reading lamp")
        assert home.get("switch.desk_lamp").area == "Study" and home.version == version + 2
        assert home.get("switch.desk_lamp").state == "on"        # the state survives the config change
        peer.publish(topic, "")
        assert until(lambda: "switch.desk_lamp" not in home)
        assert home.version == version + 3
        assert until(lambda: len(events) >= 4)      # listeners run just after the registry changes
        assert events == [("added", "switch.desk_lamp"), ("state", "switch.desk_lamp"),
                          ("changed", "switch.desk_lamp"), ("removed", "switch.desk_lamp")]
        # a device announced live that shares a state topic with its retained state
        peer.publish("zigbee2mqtt/Hall plug", {"state": "OFF"})
        peer.publish("homeassistant/switch/0x1234/switch/config",
                     {"name": None, "object_id": "hall_plug", "command_topic": "zigbee2mqtt/Hall plug/set",
                      "state_topic": "zigbee2mqtt/Hall plug", "value_template": "{{ value_json.state }}",
                      "device": {"identifiers": ["0x1234"], "name": "Hall plug"}})
        assert until(lambda: home.get("switch.hall_plug") is not None and home.get("switch.hall_plug").state == "off")
    peer.publish("homeassistant/switch/0x1234/switch/config", "")
    peer.close()


def test_malformed_configs_on_the_broker(loaded, caplog):
    peer = Peer(loaded)
    bad = {"homeassistant/switch/garbage/config": "{not json",
           "homeassistant/switch/listy/config": "[1, 2, 3]",
           "homeassistant/light/nocmd/config": json.dumps({"name": "No command"}),
           "homeassistant/light/bad_scale/config": json.dumps({"command_topic": "x", "brightness_scale": -4})}
    for topic, payload in bad.items():
        peer.publish(topic, payload)
    try:
        with caplog.at_level(logging.WARNING, logger="edge_runtime.assist"):
            with Home.from_broker(loaded, settle=SETTLE) as home:
                assert len(home) == len(Home.from_configs(_fixtures()))
                assert not any(e.entity_id.endswith(("garbage", "listy", "nocmd", "bad_scale")) for e in home)
        for needle in ("garbage/config: payload is not JSON", "listy/config: expected a JSON object, got list",
                       "a light needs 'command_topic'", "'brightness_scale' must be at least 1"):
            assert needle in caplog.text, needle
    finally:
        for topic in bad:
            peer.publish(topic, "")
        peer.close()


# every component: the action, and what must cross the wire for it, in order
WIRE_CASES = [
    ({"action": "light.turn_on", "entity_id": "light.landing_light", "data": {"brightness_pct": 40}},
     [("zigbee2mqtt/Landing light/set", b'{"state":"ON","brightness":102}')]),
    ({"action": "light.turn_off", "entity_id": "light.ceiling"},
     [("livingroom/light/ceiling/command", b'{"state":"OFF"}')]),
    ({"action": "light.turn_on", "entity_id": "light.porch_light", "data": {"brightness_pct": 50}},
     [("porch/light/switch", b"1"), ("porch/light/brightness/set", b'{"dim": 128}')]),
    ({"action": "light.turn_on", "entity_id": "light.abc123_li_1", "data": {"brightness_pct": 75}},
     [("tasmota_ABC123/cmnd/Dimmer", b"75")]),
    ({"action": "light.turn_on", "entity_id": "light.study_lamp", "data": {"brightness": 200}},
     [("study/lamp/set", b"on,200")]),
    ({"action": "switch.turn_on", "entity_id": "switch.def456_rl_1"}, [("tasmota_DEF456/cmnd/POWER", b"ON")]),
    ({"action": "switch.turn_off", "entity_id": "switch.tv_plug"}, [("livingroom/switch/tv_plug/command", b"OFF")]),
    ({"action": "fan.turn_on", "entity_id": "fan.ceiling_fan", "data": {"percentage": 34}},
     [("livingroom/fan/ceiling_fan/command", b"ON"), ("livingroom/fan/ceiling_fan/speed_level/command", b"2")]),
    ({"action": "fan.set_percentage", "entity_id": "fan.ceiling_fan", "data": {"percentage": 100}},
     [("livingroom/fan/ceiling_fan/speed_level/command", b"3")]),
    ({"action": "fan.turn_off", "entity_id": "fan.ceiling_fan"}, [("livingroom/fan/ceiling_fan/command", b"OFF")]),
    ({"action": "cover.close_cover", "entity_id": "cover.garage_door"}, [("zigbee2mqtt/Garage door/set", b"CLOSE")]),
    ({"action": "cover.stop_cover", "entity_id": "cover.jkl012_shutter_1"},
     [("tasmota_JKL012/cmnd/Backlog", b"ShutterStop1")]),
    ({"action": "cover.set_cover_position", "entity_id": "cover.bedroom_blind", "data": {"position": 25}},
     [("zigbee2mqtt/Bedroom blind/set", b'{ "position": 25 }')]),
    ({"action": "lock.lock", "entity_id": "lock.side_gate"}, [("zigbee2mqtt/Side gate/set", b"LOCK")]),
    ({"action": "climate.set_temperature", "entity_id": "climate.lounge_thermostat", "data": {"temperature": 21.5}},
     [("zigbee2mqtt/Lounge thermostat/set/occupied_heating_setpoint", b"21.5")]),
    ({"action": "climate.set_hvac_mode", "entity_id": "climate.heat_pump", "data": {"hvac_mode": "cool"}},
     [("livingroom/climate/heat_pump/mode/command", b"cool")]),
    ({"action": "climate.turn_off", "entity_id": "climate.attic_heater"}, [("attic/heater/power", b"OFF")]),
    ({"action": "alarm_control_panel.alarm_arm_home", "entity_id": "alarm_control_panel.house_alarm"},
     [("alarm/house/set", b'{"action": "ARM_HOME", "code": "None"}')]),
    ({"action": "button.press", "entity_id": "button.chime"}, [("doorbell/chime", b"PRESS")]),
    ({"action": "switch.turn_on", "entity_id": ["switch.tv_plug", "switch.def456_rl_1"]},
     [("livingroom/switch/tv_plug/command", b"ON"), ("tasmota_DEF456/cmnd/POWER", b"ON")]),
]


def _command_topics():
    topics = set()
    for _result, expected in WIRE_CASES:
        topics |= {t for t, _p in expected}
    return sorted(topics | {"zigbee2mqtt/Garage door/set", "front/door/set", "alarm/house/set"})


def test_execute_on_the_wire(loaded):
    wire = Peer(loaded, subscribe=_command_topics())
    try:
        with Home.from_broker(loaded, settle=SETTLE) as home:
            for result, expected in WIRE_CASES:
                published = execute(home, result)
                assert [(c["topic"], c["payload"].encode()) for c in published] == expected
                got = wire.take(len(expected))
                assert got == [(t, p, 1, False) for t, p in expected], result
            with pytest.raises(ConfirmationRequired):
                execute(home, {"action": "cover.open_cover", "entity_id": "cover.garage_door"})
            with pytest.raises(ConfirmationRequired):
                execute(home, {"action": "lock.unlock", "entity_id": "lock.front_door", "data": {"code": "1234"}})
            with pytest.raises(ConfirmationRequired):
                execute(home, {"action": "alarm_control_panel.alarm_disarm",
                               "entity_id": "alarm_control_panel.house_alarm", "data": {"code": "4321"}})
            # nothing was published for the refused ones: the next message is the confirmed unlock
            execute(home, {"action": "lock.unlock", "entity_id": "lock.front_door", "data": {"code": "1234"}},
                    confirmed=True)
            assert wire.take(1) == [("front/door/set", b'{"action": "UNLOCK", "pin": "1234"}', 1, False)]
            execute(home, {"action": "cover.open_cover", "entity_id": "cover.garage_door"}, confirmed=True)
            execute(home, {"action": "alarm_control_panel.alarm_disarm", "entity_id": "alarm_control_panel.house_alarm",
                           "data": {"code": "4321"}}, confirmed=True)
            assert wire.take(2) == [("zigbee2mqtt/Garage door/set", b"OPEN", 1, False),
                                    ("alarm/house/set", b'{"action": "DISARM", "code": "4321"}', 1, False)]
            dry = execute(home, {"action": "switch.turn_off", "entity_id": "switch.tv_plug"}, dry_run=True)
            assert dry == [{"topic": "livingroom/switch/tv_plug/command", "payload": "OFF", "qos": 1, "retain": False}]
            home.publish("livingroom/switch/tv_plug/command", "marker")
            assert wire.take(1) == [("livingroom/switch/tv_plug/command", b"marker", 1, False)]   # dry run sent nothing
        with pytest.raises(PublishError, match="no MQTT broker"):
            execute(home, {"action": "switch.turn_off", "entity_id": "switch.tv_plug"})
    finally:
        wire.close()
    # commands are never retained: a new subscriber finds nothing on the command topics
    late = Peer(loaded, subscribe=_command_topics())
    time.sleep(0.3)
    assert late.messages == []
    late.close()


def test_unreachable_broker_is_a_clear_error():
    port = _free_port()          # nothing listens here
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach MQTT broker 127.0.0.1:{port}"):
        Home.from_broker(f"127.0.0.1:{port}")
    assert isinstance(BrokerUnavailable("x"), ConnectionError)
    with pytest.raises(BrokerUnavailable, match="cannot reach MQTT broker no-such-host.invalid:1883"):
        Home.from_broker("no-such-host.invalid:1883")
    assert time.monotonic() - start < 30
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        Home.from_broker("127.0.0.1:99999")
    with pytest.raises(ValueError, match="discovery prefix"):
        Home.from_broker("127.0.0.1:1883", prefix="home/#")


def test_a_broker_that_refuses_the_login(broker, tmp_path):
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert until(lambda: _listening(port))
        with pytest.raises(BrokerUnavailable, match=f"MQTT broker 127.0.0.1:{port} refused the connection: Not authorized"):
            Home.from_broker(f"127.0.0.1:{port}", username="nobody", password="wrong")
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _pki(directory):
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *curve, "-days", "2", "-subj", "/CN=assist test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", *curve, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key")}


def test_tls_broker(broker, tmp_path):
    if shutil.which("openssl") is None and not os.environ.get("CI"):
        pytest.skip("openssl is not installed")
    pki = _pki(tmp_path)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {pki['ca.pem']}\ncertfile {pki['server.pem']}\n"
                    f"keyfile {pki['server.key']}\nallow_anonymous true\npersistence false\n"
                    f"user {pwd.getpwuid(os.getuid()).pw_name}\n")      # run as us: the key file is ours
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert until(lambda: _listening(port))
        with Home.from_broker(f"127.0.0.1:{port}", tls_ca=pki["ca.pem"], settle=0.1) as home:
            assert home.connected and len(home) == 0
        with Home.from_broker(f"127.0.0.1:{port}", tls_insecure=True, settle=0.1) as home:
            assert home.connected
        (tmp_path / "other").mkdir()
        other_ca = _pki(tmp_path / "other")["ca.pem"]
        with pytest.raises(BrokerUnavailable, match=f"TLS connection to MQTT broker 127.0.0.1:{port} failed"):
            Home.from_broker(f"127.0.0.1:{port}", tls_ca=other_ca)
        with pytest.raises(BrokerUnavailable, match="TLS setup .* failed"):
            Home.from_broker(f"127.0.0.1:{port}", tls_ca=str(tmp_path / "missing.pem"))
    finally:
        proc.terminate()
        proc.wait(10)
