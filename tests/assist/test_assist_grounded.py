"""Registry grounding (edge_runtime.assist.grounded): the entity list in the prompt, the reply confined
by a schema built from the registry. Safety by construction: even a model whose weights are noise
can only name a real entity, with an intent the words permit, a number the user said, and an unlock
that waits for confirmation."""
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from edge_runtime import JsonSchema
from edge_runtime.assist import grounded, lexicon
from edge_runtime.assist.assistant import ACTION_INTENT, Assistant
from edge_runtime.assist.home import Home
from edge_runtime.model import Model

DATA = Path(__file__).parent / "data"
OPPOSITE = {"turn_on": "turn_off", "turn_off": "turn_on", "open": "close", "close": "open", "lock": "unlock",
            "unlock": "lock"}
REQUESTS = [
    "turn off the landing light", "switch the landing light on", "dim the ceiling to 30 percent",
    "lock the side gate", "unlock the side gate", "close the garage door", "open the garage door",
    "set the desk fan to 40 percent", "make it 21.5 degrees in the lounge", "set the thermostat to 99",
    "put the thermostat on cool", "lower the bedroom blinds to 20 percent", "is the side gate locked",
    "order a pizza", "don't open the blinds", "stop the blinds", "turn the coffee machine off",
]


@pytest.fixture(scope="module")
def home():
    return Home.from_file(DATA / "home_mixed.json")


@pytest.fixture(scope="module")
def noise_assistant(home, tiny_chat_model_path):
    model = Model(tiny_chat_model_path, n_threads=1, n_ctx=2048)
    with Assistant(home, model=model, grounding="registry") as a:
        yield a
    model.close()


def test_the_registry_schema_is_standard_json_schema_and_compiles(home):
    norm = lexicon.normalize("dim the ceiling to 30 percent")
    schema = grounded.registry_schema(home, lexicon.permitted_intents("dim the ceiling to 30 percent", norm),
                                      lexicon.numbers_in(norm))
    Draft202012Validator.check_schema(schema)
    compiled = JsonSchema(schema)
    assert compiled.accepts('{"intent":"brightness","entity_id":"light.landing","value":30,"mode":null}')
    assert not compiled.accepts('{"intent":"brightness","entity_id":"light.nowhere","value":30,"mode":null}')
    assert not compiled.accepts('{"intent":"brightness","entity_id":"light.landing","value":31,"mode":null}')
    assert not compiled.accepts('{"intent":"brightness","entity_id":"switch.coffee","value":30,"mode":null}')


def test_an_unlock_branch_exists_only_when_the_words_permit_it(home):
    for text in ("lock the side gate", "unlock the side gate"):
        norm = lexicon.normalize(text)
        schema = grounded.registry_schema(home, lexicon.permitted_intents(text, norm), lexicon.numbers_in(norm))
        intents = {b["properties"]["intent"]["const"] for b in schema["anyOf"]}
        assert ("unlock" in intents) == (text.startswith("unlock")), (text, intents)
        assert ("lock" in intents) == (text.startswith("lock")), (text, intents)


def test_thermostat_values_are_confined_to_its_range(home):
    norm = lexicon.normalize("set the thermostat to 99")
    schema = grounded.registry_schema(home, {"temperature"}, lexicon.numbers_in(norm))
    assert [b["properties"]["intent"]["const"] for b in schema["anyOf"]] == ["none"]   # 99 is out of range


def test_the_entity_list_goes_into_the_prompt(home):
    prompt = grounded.system_prompt(home)
    for e in home:
        assert e.entity_id in prompt


def test_a_noise_model_samples_only_what_the_request_permits(noise_assistant, home):
    """Sampled at temperature 1 from noise weights, every reply is one the request permits: a real
    entity of a domain its intent acts on, a number the user said, never the opposite intent."""
    import json

    from jsonschema import validate

    model, acted = noise_assistant.model, 0
    for text in REQUESTS:
        norm = lexicon.normalize(text)
        permitted = lexicon.permitted_intents(text, norm)
        schema = grounded.registry_schema(home, permitted, lexicon.numbers_in(norm), grounded.modes_in(norm))
        for seed in range(4):
            out = model.create_chat_completion(grounded.messages(home, norm), max_tokens=64, temperature=1.0,
                                               top_k=0, top_p=1.0, min_p=0.0, seed=seed, json_schema=schema)
            choice = out["choices"][0]
            assert choice["finish_reason"] == "stop", (text, choice)
            reply = json.loads(choice["message"]["content"])
            validate(reply, schema)
            if reply["intent"] == "none":
                continue
            acted += 1
            assert reply["intent"] in permitted and OPPOSITE.get(reply["intent"]) not in permitted, (text, reply)
            entity = home.get(reply["entity_id"])
            assert entity is not None, reply
            if reply["value"] is not None:
                assert reply["value"] in lexicon.numbers_in(norm), (text, reply)
    assert acted >= 10, "the sampled replies should reach the action branches, not only 'none'"


def test_a_grounded_result_goes_through_the_final_gate(noise_assistant):
    # whatever the model answers, an unlock is flagged and an out-of-scope request is null
    for text in ("unlock the side gate", "open the garage door", "order a pizza"):
        result = noise_assistant.interpret(text)
        if result["action"] in ("lock.unlock", "cover.open_cover"):
            assert result["confirm"] is True, result
        if text == "order a pizza":
            assert result["action"] is None, result


def test_grounding_is_checked(home, tiny_chat_model_path):
    model = Model(tiny_chat_model_path, n_threads=1, n_ctx=512)
    try:
        with pytest.raises(ValueError, match="grounding 'magic'"):
            Assistant(home, model=model, grounding="magic")
        assert Assistant(home, model=model).grounding == "words"     # a small model without the contract
    finally:
        model.close()
