"""Held-out accuracy of the embedded home-assistant model, measured through the runtime (not torch).

    python -m edge_runtime.training.evaluate_runtime [-m MODEL] [--n 300] [--seed 1] [--json]

For n held-out device commands (phrasings never seen in training) it asks the model greedily, in the
chat format, twice: with `json_schema=COMMAND_SCHEMA` (the reply must name the right device, room
and action) and without a constraint (the reply must parse as a JSON object).
"""
import argparse
import json
import sys
import time

from edge_runtime.training import corpus

FIELDS = ("device", "room", "action")


def heldout_commands(n, seed):
    """n held-out examples whose expected reply is a device command."""
    out, batch = [], max(2 * n, 64)
    while len(out) < n:
        out = [e for e in corpus.generate("heldout", batch, seed) if e.command is not None][:n]
        batch *= 2
    return out


def evaluate(model, examples, max_tokens=48):
    right = parsed = 0
    failures = []
    t0 = time.perf_counter()
    for ex in examples:
        constrained = model.create_chat_completion(ex.messages, max_tokens=max_tokens, temperature=0.0,
                                                   repeat_penalty=1.0, json_schema=corpus.COMMAND_SCHEMA)
        got = corpus.parse_command(constrained["choices"][0]["message"]["content"]) or {}
        ok = all(got.get(f) == ex.command.get(f) for f in FIELDS)
        right += ok
        free = model.create_chat_completion(ex.messages, max_tokens=max_tokens, temperature=0.0,
                                            repeat_penalty=1.0)
        text = free["choices"][0]["message"]["content"]
        parsed += corpus.parse_command(text) is not None
        if not ok and len(failures) < 10:
            failures.append({"prompt": ex.messages[-1]["content"], "want": ex.command, "got": got})
    n = len(examples)
    return {"n": n, "constrained_accuracy": right / n, "unconstrained_json_rate": parsed / n,
            "seconds": round(time.perf_counter() - t0, 1), "failures": failures}


def main(argv=None):
    from edge_runtime.model.model import Model

    p = argparse.ArgumentParser(prog="python -m edge_runtime.training.evaluate_runtime", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="model file (default: the packaged model)")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with Model(args.model, n_threads=args.threads, n_ctx=512) as model:
        result = evaluate(model, heldout_commands(args.n, args.seed))
        result["model"] = model.path
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {result['model']}")
        print(f"held-out commands: {result['n']}")
        print(f"with json_schema: device/room/action right {100 * result['constrained_accuracy']:.1f}%")
        print(f"without constraint: replies that parse as JSON {100 * result['unconstrained_json_rate']:.1f}%")
        print(f"time {result['seconds']} s")
        for f in result["failures"]:
            print("  miss:", json.dumps(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
