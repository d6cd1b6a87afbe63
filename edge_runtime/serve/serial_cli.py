"""`edge-runtime serve serial`: the command line — options, their checks, and the wiring of a
model, a GenerationService and a SerialServer."""
import logging
import sys
import threading

from edge_runtime.serve import options
from edge_runtime.serve.protocol import Limits
from edge_runtime.serve.serial import DEFAULT_BAUD, DEFAULT_MAX_LINE, SerialServer
from edge_runtime.serve.service import GenerationService

log = logging.getLogger("edge_runtime.serve.serial")

BAUD_RANGE = (50, 12_000_000)
MAX_LINE_RANGE = (64, 16 << 20)


def add_arguments(p):
    p.description = ("Answer prompts arriving on a serial port: newline-delimited JSON (or plain text "
                     "with --text). The port is waited for and reopened if it vanishes; SIGTERM "
                     "cancels the running reply and exits 0.")
    options.add_model_arguments(p)
    p.add_argument("--port", default=None, metavar="DEV", help="serial device, e.g. /dev/ttyUSB0, /dev/serial0")
    p.add_argument("--baud", type=options.int_in(*BAUD_RANGE), default=None,
                   help=f"baud rate, {BAUD_RANGE[0]}..{BAUD_RANGE[1]} (default: board config or {DEFAULT_BAUD})")
    p.add_argument("--text", action="store_true", default=None,
                   help="plain-text mode for a terminal: a line in, the answer out, ended by an empty line")
    p.add_argument("--rtscts", action="store_true", help="hardware flow control (RTS/CTS)")
    p.add_argument("--xonxoff", action="store_true", help="software flow control (XON/XOFF)")
    p.add_argument("--crc", action="store_true",
                   help="require a CRC-32 on every JSON line (replies always carry one)")
    p.add_argument("--max-line", type=options.int_in(*MAX_LINE_RANGE), default=DEFAULT_MAX_LINE, metavar="BYTES",
                   help=f"longest accepted line, {MAX_LINE_RANGE[0]}..{MAX_LINE_RANGE[1]}; longer ones are "
                        f"discarded (default {DEFAULT_MAX_LINE})")
    p.add_argument("-n", "--max-tokens", type=options.limit_type("max_tokens"), default=None,
                   help=f"max_tokens of requests that do not say, 1..65536 (default {Limits.default_max_tokens})")
    p.add_argument("--max-request-tokens", type=options.limit_type("max_tokens"), default=None,
                   help=f"largest max_tokens a request may ask for, 1..65536 (default {Limits.max_tokens})")
    p.add_argument("--queue", type=options.limit_type("queue_size"), default=None,
                   help=f"requests waiting behind the running one, 0..10000 (0 = none: a request sent while "
                        f"another runs is answered busy; default {Limits.queue_size})")
    p.add_argument("--temp", type=options.request_field_type("temperature"), default=None,
                   help=f"temperature of text-mode requests, {options.field_range('temperature')} (default 0.8)")
    p.add_argument("--seed", type=options.request_field_type("seed"), default=None,
                   help=f"sampling seed, {options.field_range('seed')}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _usage_error(message):
    print(f"edge-runtime serve serial: error: {message}", file=sys.stderr)
    return 2


def main(args, verbs=None):
    """`verbs`: more request kinds for the SerialServer (the assistant's, given by the CLI)."""
    options.configure_logging(args.verbose)
    try:
        config = options.find_board(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    port = args.port or (config.serial.port if config else None)
    if not port:
        return _usage_error("no serial port: give --port DEV (or a --config whose [serial] port is set)")
    baud = args.baud or (config.serial.baud if config else DEFAULT_BAUD)
    text = bool(args.text) or bool(config and config.serial.text)
    defaults = Limits()
    limits = Limits(max_tokens=args.max_request_tokens or defaults.max_tokens,
                    default_max_tokens=args.max_tokens or defaults.default_max_tokens,
                    queue_size=defaults.queue_size if args.queue is None else args.queue)
    if limits.default_max_tokens > limits.max_tokens:
        return _usage_error(f"--max-tokens {limits.default_max_tokens} is above --max-request-tokens "
                            f"{limits.max_tokens}")
    text_options = {} if args.temp is None else {"temperature": args.temp}

    stop = threading.Event()
    model = service = None
    with options.stop_on_signals(stop):
        try:
            model = options.load_model(args, config, seed=args.seed)
            service = GenerationService(model, limits).start()
            log.info("model %s loaded (%d threads, kernel %s)", model.name, model.n_threads, model.kernel)
            server = SerialServer(service, port, baud, text=text, rtscts=args.rtscts, xonxoff=args.xonxoff,
                                  max_line=args.max_line, require_crc=args.crc, text_options=text_options,
                                  limits=limits, verbs=verbs)
            rc = server.run(stop)
            log.info("stopped")
            return rc
        finally:
            options.close_after(service, model)
