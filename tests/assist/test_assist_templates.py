"""The value-template evaluator, `~` base-topic substitution and the abbreviation table."""
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.assist import abbreviations, discovery, templates
from edge_runtime.assist.templates import Unsupported, render_command, render_value

PAYLOAD = json.dumps({"state": "ON", "brightness": 102, "POWER": "OFF", "Dimmer": 40, "contact": False,
                      "a": {"b": {"c": 7}}, "t": 21.456, "list": [1, 2, 3], "DS18B20": {"Temperature": 19.4},
                      "mode": "Heat", "none": None})


@pytest.mark.parametrize("template, expected", [
    ("{{ value_json.state }}", "ON"),
    ("{{value_json.POWER}}", "OFF"),
    ("{{ value_json['state'] }}", "ON"),
    ("{{ value_json[\"Dimmer\"] }}", "40"),
    ("{{ value_json.a.b.c }}", "7"),
    ("{{ value_json['a'].b['c'] }}", "7"),
    ("{{value_json['DS18B20'].Temperature}}", "19.4"),
    ("{{ value_json.list[1] }}", "2"),
    ("{{ value_json.list[-1] }}", "3"),
    ("{{ value_json.t | int }}", "21"),
    ("{{ value_json.t | float }}", "21.456"),
    ("{{ value_json.t | round(1) }}", "21.5"),
    ("{{ value_json.t | round }}", "21"),            # HA's round: precision 0 gives an int
    ("{{ value_json.t | round(2, 'floor') }}", "21.45"),
    ("{{ value_json.t | round(0, 'ceil') }}", "22"),
    ("{{ '42.7' | int }}", "42"),                   # the Jinja quirk HA keeps
    ("{{ value_json.mode | lower }}", "heat"),
    ("{{ value_json.mode | upper }}", "HEAT"),
    ("{{ value_json.missing | default('y') }}", "y"),
    ("{{ value_json.missing | d('n/a') }}", "n/a"),
    ("{{ value_json.none | default('x', true) }}", "x"),
    ("{{ 'ON' if value_json.state == 'ON' else 'OFF' }}", "ON"),
    ("{{ 'open' if value_json.contact == false else 'closed' }}", "open"),
    ("{{ value_json.contact }}", "False"),
    ("{{ value_json.none }}", "None"),
    ("{{ value_json.brightness / 254 * 100 | round }}", "40.15748031496063"),
    ("{{ (value_json.brightness / 254 * 100) | round }}", "40"),
    ("{{ value_json.Dimmer * 2 + 1 }}", "81"),
    ("{{ value_json.Dimmer // 3 }} {{ value_json.Dimmer % 3 }}", "13 1"),
    ("{{ -value_json.Dimmer }}", "-40"),
    ("{{ value_json.state ~ '/' ~ value_json.Dimmer }}", "ON/40"),
    ("{{ value_json.state is defined }}", "True"),
    ("{{ value_json.nope is not defined }}", "True"),
    ("{{ 'yes' if 'b' in value_json.a else 'no' }}", "yes"),
    ("{{ 2 in value_json.list and not 9 in value_json.list }}", "True"),
    ("{{ 9 not in value_json.list }}", "True"),
    ("{{ value_json.list | length }}", "3"),
    ("{{ value_json.list | first }}-{{ value_json.list | last }}", "1-3"),
    ("{{ value_json.list | join(',') }}", "1,2,3"),
    ("{{ value_json.mode.lower().startswith('he') }}", "True"),
    ("{{ float(value_json.Dimmer) / 2 }}", "20.0"),
    ("{{ max(value_json.list) }}", "3"),
    ("{{ value_json.a | tojson }}", '{"b": {"c": 7}}'),
    ("  {{- value_json.state -}}  ", "ON"),
    ("state={{ value_json.state }}{# a comment #}!", "state=ON!"),
    ("ON", "ON"),
])
def test_supported_shapes(template, expected):
    assert render_value(template, PAYLOAD) == expected


@pytest.mark.parametrize("template, payload, expected", [
    ("{{ value }}", "ON", "ON"),
    ("{{ value | int + 1 }}", "41", "42"),
    ("{{ value.split(',')[1] | int }}", "on,128", "128"),
    ("{{ value | float * 10 }}", "2.5", "25.0"),
    ("{{ value_json }}", "5", "5"),
])
def test_plain_payloads(template, payload, expected):
    assert render_value(template, payload) == expected


@pytest.mark.parametrize("template, payload", [
    ("{{ value_json.missing }}", PAYLOAD),          # a key this message lacks: nothing, not an error
    ("{{ value_json.a.zz.c }}", PAYLOAD),
    ("{{ value_json.list[7] }}", PAYLOAD),
    ("{{ value_json.state }}", "not json"),
    ("{{ value_json.mode | int }}", PAYLOAD),        # HA's int fails without a default
    ("{{ value_json.mode | float }}", PAYLOAD),
    ("{{ value_json.mode + 1 }}", PAYLOAD),
    ("{{ value_json.mode < 3 }}", PAYLOAD),
    ("{{ 1 / 0 }}", PAYLOAD),
    ("{{ '' }}", PAYLOAD),
    ("{{ value.__class__ }}", PAYLOAD),             # no Python attributes are reachable
    ("{{ value.__class__.__mro__[1].__subclasses__() }}", PAYLOAD),
    ("{{ value_json.keys() }}", PAYLOAD),
    ("{{ value.format(1) }}", PAYLOAD),
    ("{{ 'a' * 100000000 }}", PAYLOAD),
    ("{{ value_json.list * 100000000 }}", PAYLOAD),
    ("{{ value.upper }}", PAYLOAD),
])
def test_runtime_failures_render_nothing(template, payload):
    assert render_value(template, payload) is None


@pytest.mark.parametrize("template", [
    "{% if value_json.state %}on{% endif %}",
    "{{ value_json.state",
    "{{ value_json. }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ value_json.state | nosuchfilter }}",
    "{{ value_json.state is nosuchtest }}",
    "{{ x(a=1) }}",
    "{{ " + "(" * 200 + "1" + ")" * 200 + " }}",
    "{{ value }} }} {{",
    "x" * (templates.MAX_TEMPLATE_CHARS + 1),
])
def test_unsupported_syntax_is_reported(template):
    assert not templates.is_supported(template)
    with pytest.raises(Unsupported):
        render_value(template, PAYLOAD)


def test_command_templates():
    assert render_command('{ "position": {{ position }} }', {"value": 40, "position": 40}) == '{ "position": 40 }'
    assert render_command("{{ value }}", {"value": 21.0}) == "21.0"
    assert render_command("{{ value | round(1) }}", {"value": 21.25}) == "21.2"
    assert render_command("on,{{ brightness | d }}", {"value": "", "state": "on"}) == "on,"
    assert render_command("{{action}}", {"action": "ARM_AWAY"}) == "ARM_AWAY"
    with pytest.raises(templates.TemplateError):
        render_command("{{ code }}", {"value": 1})      # undefined in a command: refused, never published blank
    with pytest.raises(templates.TemplateError):
        render_command("{% if x %}{% endif %}", {})


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_keys = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8).filter(
    lambda k: k not in {"and", "or", "not", "if", "else", "in", "is", "true", "false", "none", "True", "False", "None"})


@settings(max_examples=300, deadline=None)
@given(key=_keys, inner=_keys, value=_json_scalars)
def test_property_value_json_paths(key, inner, value):
    payload = json.dumps({key: {inner: value}})
    expected = str(value)
    assert render_value(f"{{{{ value_json.{key}.{inner} }}}}", payload) == (expected.strip() or None)
    assert render_value(f"{{{{ value_json['{key}']['{inner}'] }}}}", payload) == (expected.strip() or None)
    assert render_value(f"{{{{ value_json.{key}.{inner}_missing_ }}}}", payload) is None
    assert render_value(f"{{{{ value_json.{key}.{inner}_missing_ | default('dflt') }}}}", payload) == "dflt"


@settings(max_examples=300, deadline=None)
@given(value=st.floats(-1e6, 1e6, allow_nan=False), precision=st.integers(0, 4))
def test_property_round_matches_home_assistant(value, precision):
    got = render_value(f"{{{{ value | round({precision}) }}}}", repr(value))
    want = round(value, precision)
    assert got == str(int(want) if precision == 0 else want)


@settings(max_examples=500, deadline=None)
@given(source=st.text(alphabet=string.printable, max_size=60), payload=st.text(max_size=40))
def test_property_arbitrary_text_never_escapes(source, payload):
    """Any template text gives a string, None, or Unsupported: never another exception."""
    try:
        out = render_value(source, payload)
    except Unsupported:
        return
    assert out is None or isinstance(out, str)


@settings(max_examples=300, deadline=None)
@given(source=st.from_regex(r"\{\{ ?(value(_json)?)(\.[a-z]{1,4}|\[[0-9]\]|\['[a-z]{1,3}'\]){0,3}"
                            r"( ?\| ?(int|float|lower|upper|round|trim|string|length|first|last)){0,2} ?\}\}",
                            fullmatch=True),
       data=st.recursive(_json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
           st.text(alphabet="abcd", min_size=1, max_size=3), c, max_size=3), max_leaves=8))
def test_property_generated_expressions(source, data):
    assert templates.is_supported(source)
    out = render_value(source, json.dumps(data))
    assert out is None or isinstance(out, str)


# ---------------------------------------------------------------------------------------------
# ~ base topics

def _sub(config):
    return discovery.substitute_base(dict(config))


def test_base_topic_rules():
    out = _sub({"~": "tasmota_ABC/", "command_topic": "~cmnd/POWER", "state_topic": "stat/~",
                "availability_topic": "~tele/LWT", "name": "~not a topic", "json_attributes_topic": "~",
                "brightness_command_topic": "cmnd/~/Dimmer", "value_template": "~{{ value }}"})
    assert out == {"command_topic": "tasmota_ABC/cmnd/POWER", "state_topic": "stat/tasmota_ABC/",
                   "availability_topic": "tasmota_ABC/tele/LWT", "name": "~not a topic",
                   "json_attributes_topic": "tasmota_ABC/", "brightness_command_topic": "cmnd/~/Dimmer",
                   "value_template": "~{{ value }}"}


def test_base_topic_on_both_ends_keeps_home_assistants_result():
    # both tests read the original value, so the trailing substitution wins
    assert _sub({"~": "B", "state_topic": "~x~"})["state_topic"] == "~xB"


def test_base_topic_in_availability_list():
    out = _sub({"~": "livingroom", "availability": [{"topic": "~/status"}, {"topic": "bridge/~"}, "junk", {}]})
    assert out["availability"] == [{"topic": "livingroom/status"}, {"topic": "bridge/livingroom"}, "junk", {}]


def test_base_topic_after_abbreviations():
    cfg = discovery.normalize({"~": "livingroom/light/ceiling", "cmd_t": "~/command", "stat_t": "~/state",
                               "avty": [{"t": "~/status"}]})
    assert cfg == {"command_topic": "livingroom/light/ceiling/command",
                   "state_topic": "livingroom/light/ceiling/state",
                   "availability": [{"topic": "livingroom/light/ceiling/status"}]}


_topic_text = st.text(alphabet=string.ascii_letters + string.digits + "/_-", max_size=16)


@settings(max_examples=300, deadline=None)
@given(base=_topic_text, rest=_topic_text, key=st.sampled_from(["command_topic", "state_topic", "x_topic", "topic"]))
def test_property_base_topic(base, rest, key):
    assert _sub({"~": base, key: "~" + rest})[key] == base + rest
    assert _sub({"~": base, key: rest + "~"})[key] == rest + base
    assert _sub({"~": base, key: rest})[key] == rest
    assert _sub({"~": base, "name": "~" + rest})["name"] == "~" + rest


# ---------------------------------------------------------------------------------------------
# Abbreviations

def test_table_covers_what_firmware_sends():
    table = abbreviations.ABBREVIATIONS
    for short, full in [("cmd_t", "command_topic"), ("stat_t", "state_topic"), ("avty_t", "availability_topic"),
                        ("pl_on", "payload_on"), ("pl_off", "payload_off"), ("uniq_id", "unique_id"),
                        ("dev", "device"), ("bri_cmd_t", "brightness_command_topic"), ("bri_scl", "brightness_scale"),
                        ("pos_t", "position_topic"), ("set_pos_t", "set_position_topic"),
                        ("pct_cmd_t", "percentage_command_topic"), ("temp_cmd_t", "temperature_command_topic"),
                        ("mode_cmd_t", "mode_command_topic"), ("val_tpl", "value_template"), ("o", "origin"),
                        ("cmps", "components"), ("p", "platform"), ("obj_id", "object_id"),
                        ("def_ent_id", "default_entity_id"), ("pl_unlk", "payload_unlock"),
                        ("stat_jam", "state_jammed"), ("curr_temp_t", "current_temperature_topic")]:
        assert table[short] == full
    dev = abbreviations.DEVICE_ABBREVIATIONS
    assert (dev["ids"], dev["mf"], dev["mdl"], dev["sa"], dev["cns"], dev["sw"]) == (
        "identifiers", "manufacturer", "model", "suggested_area", "connections", "sw_version")
    assert len(set(table.values())) == len(table)      # no two short keys for one full key


def test_expand_everywhere_and_short_key_wins():
    cfg = abbreviations.expand({"cmd_t": "a/set", "command_topic": "ignored", "name": "X",
                                "dev": {"ids": ["1"], "mf": "M", "sa": "Hall", "name": "D"},
                                "o": {"name": "fw", "sw": "1.0", "url": "u"},
                                "avty": [{"t": "a/avail", "pl_avail": "up"}]})
    assert cfg == {"command_topic": "a/set", "name": "X",
                   "device": {"identifiers": ["1"], "manufacturer": "M", "suggested_area": "Hall", "name": "D"},
                   "origin": {"name": "fw", "sw_version": "1.0", "support_url": "u"},
                   "availability": [{"topic": "a/avail", "payload_available": "up"}]}


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.sampled_from(sorted(abbreviations.ABBREVIATIONS)), unique=True, max_size=25))
def test_property_no_short_key_survives(keys):
    cfg = abbreviations.expand({k: f"v_{k}" for k in keys})
    full = {abbreviations.ABBREVIATIONS[k] for k in keys}
    assert set(cfg) == full
    for k in keys:
        assert cfg[abbreviations.ABBREVIATIONS[k]] == f"v_{k}"
