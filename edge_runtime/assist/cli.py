"""`edge-runtime assist`: one request against a home, printed as one JSON line and (with --broker) done.

    edge-runtime assist --broker localhost:1883 -p "turn off the landing light"
    edge-runtime assist --home home.json --dry-run -p "unlock the front door"

The last line of stdout is the result: the action call (or ``"action": null`` and why), and under
``"published"`` what went on the wire. A result flagged ``"confirm": true`` (unlocking, opening a garage
door or gate, disarming) is published only with --yes; otherwise ``"published"`` is empty and
``"executed"`` false.
"""

from __future__ import annotations

import json
import sys


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--broker", help="HOST:PORT of the MQTT broker the devices announce themselves on")
    src.add_argument("--home", help="a JSON file {discovery topic: config} (nothing is published)")
    p.add_argument("-p", "--prompt", required=True, help="the request, e.g. 'turn off the landing light'")
    p.add_argument("-m", "--model", default=None, help="model file (default: the embedded model)")
    p.add_argument("-t", "--threads", type=int, default=1, help="threads for the model (default 1)")
    p.add_argument("--discovery-prefix", default="homeassistant",
                   help="Home Assistant discovery prefix (default homeassistant)")
    p.add_argument("--username", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--tls-ca", default=None, help="CA file: connect with TLS")
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds without a new retained config before the home counts as loaded (default 1)")
    p.add_argument("--yes", action="store_true", help="confirm a flagged action (unlock, open a garage door)")
    p.add_argument("--dry-run", action="store_true", help="interpret only; publish nothing")


def main(args) -> int:
    from edge_runtime.assist.assistant import Assistant
    from edge_runtime.assist.home import Home

    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    if args.home:
        home = Home.from_file(args.home)
    else:
        home = Home.from_broker(args.broker, username=args.username, password=args.password,
                                tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                prefix=args.discovery_prefix, settle=args.settle)
    model = None
    if args.model:
        from edge_runtime.model import Model
        model = Model(args.model, n_threads=args.threads, n_ctx=1024)
    try:
        with Assistant(home, model=model, n_threads=args.threads) as assistant:
            result = assistant.interpret(args.prompt)
            published, executed = [], False
            act = result.get("action") not in (None, "query")
            if act and args.broker and not args.dry_run and (args.yes or not result.get("confirm")):
                published = assistant.execute(result, confirmed=args.yes)
                executed = True
            out = dict(result, published=published, executed=executed)
            print(json.dumps(out, ensure_ascii=False))
            sys.stdout.flush()
    finally:
        if model is not None:
            model.close()
        home.close()
    return 0
