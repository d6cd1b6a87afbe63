"""Command-line pieces every `serve` transport shares: range-checked option types (a value out of
range is an argparse usage error, exit code 2), the model and board options, the model factory,
and SIGTERM/SIGINT handling."""
import argparse
import contextlib
import logging
import signal
import sys
import threading

from edge_runtime.board.device_config import KERNEL_HELP
from edge_runtime.model.prompt_cache import DEFAULT_CACHE_MB
from edge_runtime.serve.protocol import LIMIT_RANGES, NUMBER_RANGES, range_text

log = logging.getLogger("edge_runtime.serve")

THREADS_RANGE = (1, 1024)          # as a board config's `threads`
CTX_RANGE = (16, 131072)           # as a board config's `n_ctx`
CACHE_MB_RANGE = (0, 1024 * 1024)  # as a board config's `prompt_cache_mb`
SLOTS_RANGE = (1, 64)              # rows of logits one engine batch returns (MAX_BATCH_WANT)


def int_in(low, high=None):
    """argparse type: an integer in low..high (no upper bound when high is None)."""
    expected = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low, high, low_inclusive=True):
    """argparse type: a finite number in [low, high] (or (low, high])."""
    expected = f"a number in {'[' if low_inclusive else '('}{low:g}, {high:g}]"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (low <= value if low_inclusive else low < value) or not value <= high:  # NaN fails here
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def request_field_type(name, high=None):
    """argparse type for an option that sets a request field: the field's range (protocol.py)."""
    typ, low, hi, low_inclusive = NUMBER_RANGES[name]
    hi = hi if high is None else high
    return int_in(low, hi) if typ is int else float_in(low, hi, low_inclusive)


def limit_type(name):
    return int_in(*LIMIT_RANGES[name])


def field_range(name, high=None):
    return range_text(name, high)


def add_model_arguments(p):
    p.add_argument("-m", "--model", default=None,
                   help="model file (GGUF); default: the small home-assistant model shipped with the package")
    p.add_argument("--config", default=None, metavar="BOARD",
                   help="board config (a name from device_configs/ or a .toml file): threads, n_ctx, CPU "
                        "affinity, mmap/mlock and the memory budget, plus the transport's section, are the "
                        "defaults; options on the command line win")
    p.add_argument("-t", "--threads", type=int_in(*THREADS_RANGE), default=None,
                   help=f"threads {THREADS_RANGE[0]}..{THREADS_RANGE[1]} (default: board config or big cores)")
    p.add_argument("--ctx", type=int_in(*CTX_RANGE), default=None,
                   help=f"context size in tokens, {CTX_RANGE[0]}..{CTX_RANGE[1]} (default: board config or 2048)")
    p.add_argument("--kernel", default=None, help=KERNEL_HELP)
    p.add_argument("--mlock", action="store_true", help="lock the model in RAM")
    p.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")
    p.add_argument("--prompt-cache", default=None, metavar="DIR",
                   help="keep KV snapshots of earlier prompts in memory and in DIR: a prompt that shares a "
                        "prefix with one (a long system prompt) starts from it, also after a restart")
    p.add_argument("--cache-mb", type=int_in(*CACHE_MB_RANGE), default=None, metavar="MB",
                   help=f"prompt-cache budget in MiB, {CACHE_MB_RANGE[0]}..{CACHE_MB_RANGE[1]} (memory and "
                        f"directory alike; default: the board config's prompt_cache_mb, else "
                        f"{DEFAULT_CACHE_MB})")
    p.add_argument("--slots", type=int_in(*SLOTS_RANGE), default=1, metavar="N",
                   help=f"requests that decode together in one pass over the weights, {SLOTS_RANGE[0]}.."
                        f"{SLOTS_RANGE[1]} (each has its own KV cache of --ctx tokens; default 1)")


def find_board(args):
    if getattr(args, "config", None) is None:
        return None
    from edge_runtime.board.device_config import find_config

    return find_config(args.config)


def load_model(args, board=None, seed=None):
    """The Model a service runs, from its command-line options and board config
    (edge_runtime.board.loading.load_model)."""
    from edge_runtime.board.loading import load_model as load

    model = load(args.model, board=board, n_threads=args.threads, n_ctx=args.ctx, use_mmap=not args.no_mmap,
                 use_mlock=bool(args.mlock), kernel=args.kernel, seed=seed,
                 prompt_cache=getattr(args, "prompt_cache", None), cache_mb=getattr(args, "cache_mb", None),
                 slots=getattr(args, "slots", 1))
    try:
        model.tokenizer  # a file without one loads (for eval_logits) but cannot serve text: refuse now
    except BaseException:
        model.close()
        raise
    return model


def close_after(service, model, timeout=10.0):
    """Stop the service, then close the model — only if the worker has ended: closing a model
    under a running generation would free what it uses."""
    if service is not None and not service.stop(cancel_running=True, timeout=timeout):
        log.warning("the generation did not stop within %.0f s; leaving the model open for the exit", timeout)
        return
    if model is not None:
        model.close()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGTERM and SIGINT set `stop` (the server then shuts down cleanly) instead of killing us."""
    def handler(signum, frame):
        log.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def configure_logging(debug):
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
