"""`edge-runtime serve mqtt`: the command line — options, their checks, and the wiring of a
model, a GenerationService and an MqttServer. No serving logic lives here."""
import argparse
import re
import socket
import sys
import threading

from edge_runtime.serve import options
from edge_runtime.serve.ha_discovery import DEFAULT_HA_PREFIX
from edge_runtime.serve.mqtt import (DEFAULT_KEEPALIVE_S, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_METRICS_INTERVAL_S,
                                     MqttServer, MqttSettings)
from edge_runtime.serve.protocol import Limits
from edge_runtime.serve.service import GenerationService
from edge_runtime.serve.topics import PREFIX_RE, check_topics

DEFAULT_PREFIX = "edge"
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
_BROKER_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")


def parse_broker(text, tls=False):
    """"HOST[:PORT]" or "[IPv6][:PORT]" -> (host, port); the port defaults to 1883 (8883 with TLS)."""
    match = _BROKER_RE.fullmatch(text or "")
    port = int(match.group(2)) if match and match.group(2) else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    if not match or not 1 <= port <= 65535:
        raise ValueError(f"--broker {text!r}: expected HOST:PORT with a port from 1 to 65535 "
                         f"(e.g. localhost:1883 or [::1]:1883)")
    return match.group(1).strip("[]"), port


def add_arguments(p: argparse.ArgumentParser):
    p.description = ("Answer prompts published on an MQTT broker: requests on <prefix>/<device>/request, "
                     "replies on <prefix>/<device>/response/<id> or on an MQTT 5 Response Topic under "
                     "<prefix>/reply/ (see README: Serving over MQTT).")
    options.add_model_arguments(p)
    g = p.add_argument_group("broker")
    g.add_argument("--broker", default=None, metavar="HOST:PORT",
                   help="MQTT broker (default: board config or localhost:1883; port 8883 with TLS)")
    g.add_argument("--mqtt-version", choices=("5", "3.1.1"), default="5", help="protocol version (default 5)")
    g.add_argument("--username", default=None)
    g.add_argument("--password", default=None, help="visible in the process list: prefer --password-file")
    g.add_argument("--password-file", default=None, metavar="FILE", help="file whose first line is the password")
    g.add_argument("--tls-ca", default=None, metavar="FILE", help="CA certificate(s) to verify the broker; enables TLS")
    g.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (enables TLS)")
    g.add_argument("--tls-key", default=None, metavar="FILE", help="client private key (with --tls-cert)")
    g.add_argument("--keepalive", type=options.int_in(1, 65535), default=None, metavar="S",
                   help=f"keepalive seconds, 1..65535 (default: board config or {DEFAULT_KEEPALIVE_S})")
    t = p.add_argument_group("topics")
    t.add_argument("--device-id", default=None, help="topic level naming this device (default: the hostname)")
    t.add_argument("--prefix", default=None, help=f"topic prefix (default: board config or {DEFAULT_PREFIX!r})")
    t.add_argument("--group", default=None,
                   help="also take requests from $share/GROUP/<prefix>/fleet/request (answered once per group)")
    t.add_argument("--reply-namespace", action="append", default=None, metavar="FILTER",
                   help="also publish replies to MQTT 5 Response Topics matching this topic filter (repeatable; "
                        "default: only <prefix>/reply/#)")
    t.add_argument("--metrics-interval", type=options.float_in(0, 86400), default=DEFAULT_METRICS_INTERVAL_S,
                   metavar="S", help="seconds between retained metrics, 0..86400 (0 = only on connect; default 30)")
    t.add_argument("--ha-discovery", action="store_true", help="publish Home Assistant discovery configs")
    t.add_argument("--ha-prefix", default=DEFAULT_HA_PREFIX, help="Home Assistant discovery prefix")
    lim = p.add_argument_group("limits")
    lim.add_argument("--queue-size", type=options.limit_type("queue_size"), default=Limits.queue_size,
                     help=f"requests that may wait behind the running one, 0..10000 (0 = none: busy while one "
                          f"runs; default {Limits.queue_size})")
    lim.add_argument("--max-prompt-chars", type=options.limit_type("max_prompt_chars"),
                     default=Limits.max_prompt_chars,
                     help=f"longest prompt in characters, 1..1048576 (default {Limits.max_prompt_chars})")
    lim.add_argument("--max-tokens", type=options.limit_type("max_tokens"), default=Limits.max_tokens,
                     help=f"cap on a request's max_tokens, 1..65536 (default {Limits.max_tokens})")
    lim.add_argument("--max-payload-bytes", type=options.int_in(256, 16 << 20), default=DEFAULT_MAX_PAYLOAD_BYTES,
                     help=f"largest request payload, 256..16777216 (default {DEFAULT_MAX_PAYLOAD_BYTES})")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging (with paho's) and tracebacks")


def _read_password(args):
    if args.password is not None and args.password_file is not None:
        raise ValueError("give --password or --password-file, not both")
    if args.password_file is None:
        return args.password
    try:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--password-file {args.password_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if not password:
        raise ValueError(f"--password-file {args.password_file}: the first line (the password) is empty")
    return password


def _check_file(option, path):
    import os

    if path is not None and not os.path.isfile(path):
        raise ValueError(f"{option} {path}: no such file")


def settings_from_args(args, board=None) -> MqttSettings:
    """Every check of the command line that needs no broker and no model."""
    mq = board.mqtt if board is not None else None
    password = _read_password(args)
    if password is not None and args.username is None:
        raise ValueError("--password/--password-file needs --username")
    for option, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        _check_file(option, path)
    if args.tls_key and not args.tls_cert:
        raise ValueError("--tls-key needs --tls-cert")
    tls = bool(args.tls_ca or args.tls_cert)
    host, port = parse_broker(args.broker or (mq.broker if mq else "localhost"), tls)
    device = args.device_id if args.device_id is not None else socket.gethostname().split(".")[0]
    prefix = args.prefix if args.prefix is not None else (mq.prefix if mq else DEFAULT_PREFIX)
    group = args.group if args.group is not None else (mq.group or None if mq else None)
    namespace = [f"{prefix}/reply/#", *(args.reply_namespace or [])]
    topics = check_topics(prefix, device, group or None, namespace)
    keepalive = args.keepalive if args.keepalive is not None else (mq.keepalive if mq else DEFAULT_KEEPALIVE_S)
    if not PREFIX_RE.fullmatch(args.ha_prefix):
        raise ValueError(f"--ha-prefix {args.ha_prefix!r}: expected a topic prefix without wildcards")
    return MqttSettings(
        host=host, port=port, topics=topics, client_id=f"edge-runtime-{device}", mqtt_version=args.mqtt_version,
        keepalive=keepalive, username=args.username, password=password,
        tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
        max_payload_bytes=args.max_payload_bytes, metrics_interval=args.metrics_interval,
        ha_discovery=args.ha_discovery, ha_prefix=args.ha_prefix)


def limits_from_args(args) -> Limits:
    return Limits(max_prompt_chars=args.max_prompt_chars, max_tokens=args.max_tokens,
                  default_max_tokens=min(Limits.default_max_tokens, args.max_tokens), queue_size=args.queue_size)


def main(args) -> int:
    options.configure_logging(getattr(args, "debug", False))
    try:  # a command line that cannot work is a usage error: one line, exit code 2, before the model loads
        board = options.find_board(args)
        settings = settings_from_args(args, board)
        limits = limits_from_args(args)
    except ValueError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"edge-runtime serve mqtt: error: {exc}", file=sys.stderr)
        return 2
    model = options.load_model(args, board)
    service = GenerationService(model, limits).start()
    stop = threading.Event()
    try:
        with options.stop_on_signals(stop):
            MqttServer(service, settings).run(stop)  # stops the service on the way out
    finally:
        options.close_after(service, model)
    return 0
