"""Held-out evaluation of `edge-runtime serve wyoming`, driven as Home Assistant drives it.

    python -m edge_runtime.training.evaluate_wyoming [-m MODEL] [--per-kind 20] [--seed 1] [--json]

Starts the service (no home: slots as the user said them, which Home Assistant then resolves against
its own entities), sends every held-out request of ``evaluate_assist.heldout`` as a Wyoming
``transcript`` with the ``wyoming`` package's own TCP client, one connection per request as HA's
conversation agent opens them, and scores the first terminal event:

- a command is right when the event is an ``intent`` naming the Home Assistant intent its expected
  slots map to, with the same ``domain``/``state`` slots and numbers, and ``name``/``area`` holding the
  expected words (at most one extra word, as ``evaluate_assist.slots_right`` allows);
- a request Home Assistant has no intent for (out of scope, heating and cooling modes) is right when
  no intent comes back (``not-recognized``, or the handle program's ``handled``);
- an unlock or a garage/gate opening must first be held for confirmation (``not-handled`` asking to
  confirm); the evaluation then says "yes" in the same conversation and scores the intent that follows.

A device the home does not have is a command like any other here: without a home, the service names
it as said and Home Assistant answers that it has no such device.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time

from edge_runtime.assist.ha_intents import HaIntent, ha_intent
from edge_runtime.training import evaluate_assist

TERMINAL = ("intent", "not-recognized", "handled", "not-handled", "error")
_TEXT_SLOTS = ("name", "area")


def expected_intent(ex):
    """The HaIntent the example's expected slots stand for, or None when HA has no intent for it."""
    got = ha_intent(ex.slots, ex.normalized)
    return got if isinstance(got, HaIntent) else None


# words that make a state question one about the temperature (HA answers those with its own intent)
_TEMPERATURE_WORDS = frozenset({"temperature", "temp"})


def event_right(event_type: str, data: dict, want: HaIntent | None) -> bool:
    if want is None:
        return event_type in ("not-recognized", "handled")
    if (event_type == "intent" and data.get("name") == "HassClimateGetTemperature" and want.name == "HassGetState"
            and str(want.slots.get("name", "")).lower() in _TEMPERATURE_WORDS):
        # "what's the temperature in the annex": HA's temperature question, for the same area
        got = {e["name"]: e["value"] for e in data.get("entities", [])}
        return str(got.get("area") or "").lower() == str(want.slots.get("area") or "").lower()
    if event_type != "intent" or data.get("name") != want.name:
        return False
    got = {e["name"]: e["value"] for e in data.get("entities", [])}
    for key, value in want.slots.items():
        if key in _TEXT_SLOTS:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if abs(float(got.get(key)) - float(value)) > 1e-6:
                    return False
            except (TypeError, ValueError):
                return False
        elif got.get(key) != value:
            return False
    extra = set(got) - set(want.slots) - set(_TEXT_SLOTS)
    if extra:
        return False
    said = [w for k in _TEXT_SLOTS for w in evaluate_assist._content(str(got.get(k) or "").lower())]
    expected = [w for k in _TEXT_SLOTS for w in evaluate_assist._content(str(want.slots.get(k) or "").lower())]
    return all(w in said for w in expected) and len(said) <= len(expected) + 1


def _package_file():
    import edge_runtime

    return edge_runtime.__file__


class Service:
    """`edge-runtime serve wyoming` on a free local port, with `args` (command-line options) added."""

    def __init__(self, args=(), env=None):
        cmd = [sys.executable, "-m", "edge_runtime", "serve", "wyoming", "--uri", "tcp://127.0.0.1:0", *args]
        if env is None:
            # the service runs the same edge_runtime as this evaluation (a source tree or the installed one)
            root = os.path.dirname(os.path.dirname(os.path.abspath(_package_file())))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.log, self.port = [], None
        deadline = time.monotonic() + 120
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("serve wyoming did not start:\n" + "".join(self.log))
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._drain.start()

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)
        self._drain.join(5)


async def _say(port, text, context):
    from wyoming.asr import Transcript
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcript(text, context=context, language="en").event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None:
                return "closed", {}
            if event.type in TERMINAL:
                return event.type, event.data or {}


async def _ask(port, text, conversation):
    """The request's final event, and whether the service first asked to confirm it (then the
    user says "yes" in the same conversation, as a HA satellite would pass it on)."""
    event_type, data = await _say(port, text, {"conversation_id": conversation})
    context = data.get("context") or {}
    if event_type == "not-handled" and context.get("confirm"):
        event_type, data = await _say(port, "yes", context)
        return event_type, data, True
    return event_type, data, False


def guarded(ex) -> bool:
    """An unlock, or an opening of a garage door or gate: the service must ask first."""
    intent = ex.slots["intent"]
    if intent == "unlock":
        return True
    device = ex.device
    return intent in ("open", "position") and device is not None and \
        getattr(device, "device_class", None) in ("garage", "gate")


def run(examples, port):
    rows = []
    for i, ex in enumerate(examples):
        want = expected_intent(ex)
        started = time.perf_counter()
        event_type, data, confirmed = asyncio.run(_ask(port, ex.text, f"eval-{i}"))
        ms = 1000 * (time.perf_counter() - started)
        ok = event_right(event_type, data, want)
        unasked = ok and event_type == "intent" and guarded(ex) and not confirmed
        rows.append({"kind": ex.kind, "text": ex.text, "ok": ok and not unasked, "unasked": unasked,
                     "confirmed": confirmed, "ms": ms,
                     "want": None if want is None else {"name": want.name, "slots": want.slots},
                     "got": {"type": event_type, "name": data.get("name"),
                             "slots": {e["name"]: e["value"] for e in data.get("entities", [])}}})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", help="model file (default: the embedded one)")
    p.add_argument("--per-kind", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--failures", type=int, default=10, help="misses to print")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    examples = evaluate_assist.heldout(args.per_kind, args.seed)
    service = Service(["-t", str(args.threads)] + (["-m", args.model] if args.model else []))
    try:
        rows = run(examples, service.port)
    finally:
        service.close()
    kinds = sorted({r["kind"] for r in rows}, key=[r["kind"] for r in rows].index)
    by_kind = {k: sum(r["ok"] for r in rows if r["kind"] == k) / sum(r["kind"] == k for r in rows) for k in kinds}
    right = sum(r["ok"] for r in rows)
    summary = {"requests": len(rows), "right": right, "accuracy": right / len(rows), "by_kind": by_kind,
               "asked_to_confirm": sum(r["confirmed"] for r in rows),
               "guarded_not_asked": sum(r["unasked"] for r in rows),
               "ms_median": sorted(r["ms"] for r in rows)[len(rows) // 2]}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"serve wyoming, {os.path.basename(args.model or 'embedded model')}; held-out: {len(rows)} requests, "
          f"{args.per_kind} per kind, seed {args.seed}")
    for k in kinds:
        print(f"  {k:<14} {100 * by_kind[k]:5.1f}%")
    print(f"  {'all':<14} {100 * summary['accuracy']:5.1f}%  ({right} of {len(rows)})")
    print(f"asked to confirm first (then 'yes'): {summary['asked_to_confirm']}; unlocks and garage/gate "
          f"openings that came back without asking: {summary['guarded_not_asked']}")
    print(f"ms per request over Wyoming (median): {summary['ms_median']:.1f}")
    for r in [r for r in rows if not r["ok"]][:args.failures]:
        print("  miss:", json.dumps({k: r[k] for k in ("kind", "text", "want", "got")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
