"""Held-out evaluation of the assistant's model, through the runtime, beside Home Assistant's matcher.

    python -m edge_runtime.training.evaluate_assist [-m MODEL] [--per-kind 40] [--seed 1] [--json]

The held-out set (``corpus.generate("heldout", ...)``): homes whose names and areas never occur in
training, template families (Home Assistant's and ours) never sampled for training, every kind in
equal numbers; every other request also carries the held-out wrappers and speech slips.

Three measurements on the same requests:

- **slots** — the model through the runtime, constrained by ``slots.slot_schema`` exactly as the
  assistant runs it. Right when the intent, the value and the mode are exact and the name/area are
  the expected spans, or contain the expected words with at most one extra word (the grounding
  forgives that); an out-of-scope request is right when its intent is ``none``.
- **assistant** — ``Assistant(home, model).interpret(text)`` end to end on the request's own home
  (its discovery configs): right when the action, the entity (or, for a whole-area command, entities
  of the right kind in the right area) and the data are what the request asks; out-of-scope and
  missing-device requests are right when the action is null. Every unlock and garage/gate opening
  must carry ``confirm``.
- **hassil** — Home Assistant's own template matcher (``hassil.recognize`` with the
  home-assistant-intents English templates, the home's names and areas as slot lists), scored on the
  target it names (device name, or area), the intent it maps to and the value.

Opposite actions (on for off, open for close, lock for unlock, either way) are counted for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from edge_runtime.assist import lexicon, slots
from edge_runtime.training import corpus, templates

OPPOSITE = {"turn_on": "turn_off", "turn_off": "turn_on", "open": "close", "close": "open", "lock": "unlock",
            "unlock": "lock"}
ACTION_POLARITY = {"light.turn_on": "turn_on", "light.turn_off": "turn_off", "switch.turn_on": "turn_on",
                   "switch.turn_off": "turn_off", "fan.turn_on": "turn_on", "fan.turn_off": "turn_off",
                   "climate.turn_on": "turn_on", "climate.turn_off": "turn_off", "cover.open_cover": "open",
                   "cover.close_cover": "close", "lock.lock": "lock", "lock.unlock": "unlock"}
_AREA_DOMAIN = {"brightness": "light", "position": "cover", "fan_speed": "fan", "temperature": "climate",
                "hvac_mode": "climate", "turn_on": "light", "turn_off": "light", "open": "cover", "close": "cover",
                "stop": "cover", "lock": "lock", "unlock": "lock"}
_IGNORED = frozenset({"the", "my", "our", "a", "all", "every", "of", "in", "on", "at"})


def heldout(per_kind: int, seed: int) -> list[corpus.Example]:
    """``per_kind`` held-out examples of every kind; odd ones with the held-out wrappers and slips."""
    out = []
    for i in range(per_kind * len(corpus.KINDS)):
        kind = corpus.KINDS[i % len(corpus.KINDS)]
        out.append(corpus.example("heldout", seed, i, kind=kind, noisy=(i // len(corpus.KINDS)) % 2 == 1))
    return out


def _content(text) -> list[str]:
    return [w for w in (text or "").split() if w not in _IGNORED]


def slots_right(got: dict | None, want: dict) -> bool:
    if got is None or got["intent"] != want["intent"]:
        return False
    if want["intent"] == "none":
        return True
    if want["value"] is not None and (got["value"] is None or abs(float(got["value"]) - float(want["value"])) > 1e-6):
        return False
    if want["value"] is None and got["value"] is not None:
        return False
    if want["intent"] == "hvac_mode" and got["mode"] != want["mode"]:
        return False
    if got["name"] == want["name"] and got["area"] == want["area"]:
        return True
    said = _content(got["name"]) + _content(got["area"])
    expected = _content(want["name"]) + _content(want["area"])
    return bool(expected) and all(w in said for w in expected) and len(said) <= len(expected) + 1


# -- the model through the runtime ----------------------------------------------------------------

def run_slots(model, examples, max_tokens: int = 64):
    rows = []
    for ex in examples:
        schema = ex.schema()
        started = time.perf_counter()
        out = model.create_chat_completion(ex.messages, json_schema=schema, temperature=0.0, max_tokens=max_tokens,
                                           repeat_penalty=1.0)
        ms = 1000 * (time.perf_counter() - started)
        got = slots.parse_slots(out["choices"][0]["message"]["content"])
        rows.append({"ok": slots_right(got, ex.slots), "got": got, "ms": ms,
                     "opposite": bool(got and OPPOSITE.get(ex.slots["intent"]) == got["intent"])})
    return rows


# -- the assistant end to end ----------------------------------------------------------------------

def _entity_id(device) -> str:
    return f"{device.domain}.{device.object_id}"


def _expected_action(ex):
    from edge_runtime.assist.assistant import ACTIONS

    if ex.slots["intent"] == "none" or ex.missing:
        return None
    if ex.slots["intent"] == "query":
        return "query"
    domain = ex.device.domain if ex.device else _group_domain(ex)
    return ACTIONS.get((ex.slots["intent"], domain))


def _group_domain(ex):
    from edge_runtime.assist import resolve

    said = (ex.slots["name"] or "").split()
    kinds = lexicon.domains_named(said) | lexicon.domains_named([w.rstrip("s") for w in said])
    for domain in resolve.INTENT_DOMAINS.get(ex.slots["intent"], ()):
        if domain in kinds:
            return domain
    return _AREA_DOMAIN.get(ex.slots["intent"])   # a whole-area command names no kind: HA's defaults


def assistant_right(ex, result: dict, home) -> tuple[bool, bool, bool]:
    """(right, opposite, confirm flag missing) for one interpret() result."""
    action = result.get("action")
    want = _expected_action(ex)
    polarity, wanted = ACTION_POLARITY.get(action), ACTION_POLARITY.get(want) or (
        ex.slots["intent"] if ex.slots["intent"] in OPPOSITE else None)
    opposite = bool(polarity and wanted and OPPOSITE.get(wanted) == polarity)
    guarded = action == "lock.unlock" or (action == "cover.open_cover" and any(
        (e.device_class or "") in ("garage", "gate") for e in _entities(result, home)))
    no_flag = guarded and result.get("confirm") is not True
    if want is None:
        return action is None, opposite, no_flag
    if action != want:
        return False, opposite, no_flag
    ids = result.get("entity_id")
    ids = [ids] if isinstance(ids, str) else list(ids or [])
    if ex.device is not None:
        if ids != [_entity_id(ex.device)]:
            return False, opposite, no_flag
    else:
        area = (ex.slots["area"] or "").casefold()
        ents = _entities(result, home)
        if not ents or (area and any((e.area or "").casefold() != area for e in ents)):
            return False, opposite, no_flag
    data = result.get("data") or {}
    if ex.slots["value"] is not None and ex.slots["value"] not in [v for v in data.values()]:
        return False, opposite, no_flag
    if ex.slots["mode"] is not None and data.get("hvac_mode") != ex.slots["mode"]:
        return False, opposite, no_flag
    return True, opposite, no_flag


def _entities(result, home):
    ids = result.get("entity_id")
    ids = [ids] if isinstance(ids, str) else list(ids or [])
    return [e for e in (home.get(i) for i in ids) if e is not None]


def run_assistant(model, examples):
    from edge_runtime.assist import Assistant, Home

    rows, homes_seen = [], {}
    for ex in examples:
        key = (ex.home.split, ex.home.seed)
        if key not in homes_seen:
            homes_seen[key] = Home.from_configs(ex.home.discovery_configs())
        home = homes_seen[key]
        started = None
        try:
            assistant = Assistant(home, model=model)
            started = time.perf_counter()       # interpret alone: the model probe at construction is once per home
            result = assistant.interpret(ex.text)
            ok, opposite, no_flag = assistant_right(ex, result, home)
        except Exception as error:        # counted and shown: an evaluation must not hide a crash
            result, ok, opposite, no_flag = {"error": f"{type(error).__name__}: {error}"}, False, False, False
        ms = 1000 * (time.perf_counter() - started) if started is not None else None
        rows.append({"ok": ok, "opposite": opposite, "no_confirm": no_flag, "got": result, "ms": ms})
    return rows


# -- Home Assistant's matcher ----------------------------------------------------------------------

def run_hassil(examples):
    from hassil import TextSlotList, recognize

    intents = templates.load_intents("en")
    skip = list(getattr(intents, "skip_words", []) or [])
    rows = []
    for ex in examples:
        # the domain travels with each name as HA passes it: templates require it ("requires_context")
        names = [(d.name, d.name, {"domain": d.domain}) for d in ex.home.devices]
        lists = {"name": TextSlotList.from_tuples(names, allow_template=False),
                 "area": TextSlotList.from_strings(ex.home.areas, allow_template=False),
                 "floor": TextSlotList.from_strings([], allow_template=False)}
        result = recognize(ex.text, intents, slot_lists=lists, skip_words=skip, language="en")
        got = _from_hassil(result, ex)
        ok = _hassil_right(got, ex)
        rows.append({"ok": ok, "got": got, "opposite": bool(got and OPPOSITE.get(ex.slots["intent"]) == got["intent"])})
    return rows


def _from_hassil(result, ex):
    if result is None or result.intent.name not in templates.INTENT_MAP:
        return None
    ent = {k: v.value for k, v in result.entities.items()}
    mapped = templates.INTENT_MAP[result.intent.name]
    if isinstance(mapped, dict):
        domain = ent.get("domain")
        if "name" in ent:
            domain = next((d.domain for d in ex.home.devices if d.name == ent["name"]), domain)
        mapped = mapped.get(domain)
        if mapped is None:
            return None
    value = next((ent[k] for k in ("brightness", "position", "temperature", "percentage") if k in ent), None)
    return {"intent": mapped, "name": ent.get("name"), "area": ent.get("area"), "value": value}


def _hassil_right(got, ex):
    want = ex.slots
    if want["intent"] == "none" or ex.missing:
        return got is None
    if got is None or got["intent"] != want["intent"]:
        return False
    if want["value"] is not None and (got["value"] is None or abs(float(got["value"]) - float(want["value"])) > 1e-6):
        return False
    if ex.device is not None:
        return got["name"] == ex.device.name or (got["name"] is None and got["area"] == ex.device.area
                                                  and ex.device.name not in (ex.normalized or ""))
    return got["area"] == (want["area"] or got["area"])


# -- report ----------------------------------------------------------------------------------------

def _by_kind(examples, rows):
    out = {}
    for kind in corpus.KINDS:
        picked = [r for ex, r in zip(examples, rows) if ex.kind == kind]
        if picked:
            out[kind] = round(100.0 * sum(r["ok"] for r in picked) / len(picked), 1)
    return out


def summarize(examples, rows) -> dict:
    n = len(rows)
    return {"n": n, "accuracy": round(100.0 * sum(r["ok"] for r in rows) / max(1, n), 1),
            "by_kind": _by_kind(examples, rows), "opposite_actions": sum(r["opposite"] for r in rows)}


def _timing(values, threads) -> dict:
    ms = sorted(values) or [0.0]
    return {"threads": threads, "mean": round(statistics.mean(ms), 2), "median": round(ms[len(ms) // 2], 2),
            "p95": round(ms[int(0.95 * (len(ms) - 1))], 2), "max": round(ms[-1], 2)}


def main(argv=None) -> int:
    from edge_runtime.model.model import Model

    p = argparse.ArgumentParser(prog="python -m edge_runtime.training.evaluate_assist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="model file (default: the packaged model)")
    p.add_argument("--per-kind", type=int, default=40, help="held-out requests per kind (default 40)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--no-assistant", action="store_true", help="skip the end-to-end Assistant measurement")
    p.add_argument("--no-hassil", action="store_true", help="skip Home Assistant's matcher")
    p.add_argument("--failures", type=int, default=12, help="misses to print (default 12)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.per_kind < 1:
        p.error(f"--per-kind {args.per_kind}: expected >= 1")
    examples = heldout(args.per_kind, args.seed)
    report = {"per_kind": args.per_kind, "seed": args.seed}
    with Model(args.model, n_threads=args.threads, n_ctx=512) as model:
        report["model"] = model.path
        rows = run_slots(model, examples)
        report["slots"] = summarize(examples, rows)
        report["ms_per_command"] = _timing([r["ms"] for r in rows], args.threads)
        misses = [{"kind": ex.kind, "text": ex.text, "want": ex.reply, "got": r["got"]}
                  for ex, r in zip(examples, rows) if not r["ok"]]
        if not args.no_assistant:
            arows = run_assistant(model, examples)
            report["assistant"] = summarize(examples, arows)
            report["assistant"]["missing_confirm"] = sum(r["no_confirm"] for r in arows)
            report["assistant"]["errors"] = sum("error" in (r["got"] or {}) for r in arows)
            report["assistant"]["ms_per_command"] = _timing([r["ms"] for r in arows if r["ms"] is not None],
                                                            args.threads)
            amiss = [{"kind": ex.kind, "text": ex.text, "got": r["got"]} for ex, r in zip(examples, arows) if not r["ok"]]
    if not args.no_hassil:
        report["hassil"] = summarize(examples, run_hassil(examples))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {report['model']}; held-out: {len(examples)} requests, {args.per_kind} per kind, seed {args.seed}")
    header = "kind".ljust(14) + "".join(k.rjust(11) for k in ("slots", "assistant", "hassil") if k in report)
    print(header)
    for kind in corpus.KINDS:
        line = kind.ljust(14)
        for k in ("slots", "assistant", "hassil"):
            if k in report:
                line += f"{report[k]['by_kind'].get(kind, float('nan')):10.1f}%"
        print(line)
    line = "all".ljust(14)
    for k in ("slots", "assistant", "hassil"):
        if k in report:
            line += f"{report[k]['accuracy']:10.1f}%"
    print(line)
    print("opposite actions: " + ", ".join(f"{k} {report[k]['opposite_actions']}" for k in ("slots", "assistant", "hassil")
                                           if k in report))
    if "assistant" in report:
        print(f"unlock/garage/gate openings without confirm: {report['assistant']['missing_confirm']}; "
              f"assistant errors: {report['assistant']['errors']}")
    t = report["ms_per_command"]
    print(f"ms per command through the runtime at {t['threads']} thread(s): mean {t['mean']}, median {t['median']}, "
          f"p95 {t['p95']}, max {t['max']}")
    if "assistant" in report:
        t = report["assistant"]["ms_per_command"]
        print(f"assistant ms per command (interpret, end to end) at {t['threads']} thread(s): mean {t['mean']}, "
              f"median {t['median']}, p95 {t['p95']}, max {t['max']}")
    for m in misses[: args.failures]:
        print("  slots miss:", json.dumps(m))
    if "assistant" in report:
        for m in amiss[: args.failures]:
            print("  assistant miss:", json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
