"""A real Mosquitto with the test home's discovery configs retained, and a wire-level subscriber."""
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

HOME = json.loads((Path(__file__).parent / "data" / "home_mixed.json").read_text())
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp_path_factory):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian: mosquitto)")
    port = _free_port()
    conf = tmp_path_factory.mktemp("mosq") / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for topic, config in HOME.items():
        pub.publish(topic, json.dumps(config), qos=1, retain=True).wait_for_publish(5)
    pub.publish("gate/state", "LOCKED", qos=1, retain=True).wait_for_publish(5)
    return port, pub, proc


def stop_broker(started):
    port, pub, proc = started
    pub.loop_stop()
    pub.disconnect()
    proc.terminate()
    proc.wait(10)


class Wire:
    """Everything published on the command topics of the home, as another client sees it."""

    def __init__(self, port):
        self.messages = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(), m.qos, m.retain))
        self.client.connect("127.0.0.1", port)
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in ("k/#", "o/#", "g/#", "b/#", "gate/set", "l/#", "z2m/#")])
        assert ready.wait(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


