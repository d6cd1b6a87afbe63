"""`edge-runtime` command line: run, chat, info, convert, bench, serve {mqtt,serial,wyoming}, ask-serial, deploy,
assist.

Exit codes: 0 success, 2 usage error (argparse), 1 runtime error. Errors are one line on stderr;
--debug shows the traceback.
"""
import argparse
import importlib
import json
import os
import sys

from edge_runtime.board.device_config import KERNEL_HELP

# subcommands implemented in their own modules: (name, module, help)
EXTERNAL_COMMANDS = [
    ("convert", "edge_runtime.formats.convert", "write an edge-runtime GGUF from a Hugging Face dir or a TQ2_0 GGUF"),
    ("ask-serial", "edge_runtime.serve.serial_client", "ask a question over a serial port (client side)"),
    ("deploy", "edge_runtime.board.deploy", "copy, install and start edge-runtime on a board over SSH"),
    ("assist", "edge_runtime.assist.cli", "act on a request: Home Assistant devices announced over MQTT"),
]
SERVE_COMMANDS = [
    ("mqtt", "edge_runtime.serve.mqtt_cli", "answer prompts published on an MQTT broker"),
    ("serial", "edge_runtime.serve.serial_cli", "answer prompts arriving on a serial port"),
    ("wyoming", "edge_runtime.assist.wyoming_cli", "be Home Assistant's conversation agent over the Wyoming protocol"),
]


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def _add_model_args(p, model_required=False):
    p.add_argument("-m", "--model", required=model_required,
                   help="model file (GGUF); default: the small model shipped with the package")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: number of big cores)")
    p.add_argument("--ctx", type=int, default=2048, help="context size in tokens (default 2048)")
    p.add_argument("--kernel", default=None, help=KERNEL_HELP)
    p.add_argument("--mlock", action="store_true", help="lock the model in RAM")
    p.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")


def _add_sampling_args(p):
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="maximum tokens to generate")
    p.add_argument("--temp", type=float, default=0.8, help="temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--json-schema", default=None, help="JSON schema file constraining the output")


def _load_model(args):
    from edge_runtime.board.loading import load_model

    return load_model(args.model, n_threads=args.threads, n_ctx=args.ctx, use_mlock=args.mlock,
                      use_mmap=not args.no_mmap, kernel=args.kernel, seed=getattr(args, "seed", None))


def _sampling_kwargs(args):
    schema = None
    if args.json_schema:
        try:
            with open(args.json_schema, encoding="utf-8") as f:
                schema = json.load(f)
        except (OSError, ValueError) as exc:
            raise CliError(f"--json-schema {args.json_schema}: {exc}") from None
    return dict(max_tokens=args.max_tokens, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                min_p=args.min_p, repeat_penalty=args.repeat_penalty, seed=args.seed, stop=args.stop,
                json_schema=schema)


def cmd_run(args):
    model = _load_model(args)
    kw = _sampling_kwargs(args)
    if args.chat:
        messages = []
        if args.system:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": args.prompt})
        stream = model.create_chat_completion(messages, stream=True, **kw)
        pieces = (c["choices"][0]["delta"].get("content", "") for c in stream)
    else:
        stream = model.create_completion(args.prompt, stream=True, **kw)
        pieces = (c["choices"][0]["text"] for c in stream)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_chat(args):
    model = _load_model(args)
    kw = _sampling_kwargs(args)
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    while True:
        try:
            if interactive:
                line = input("> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    break
                line = line.rstrip("\n")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit"):
            break
        messages.append({"role": "user", "content": line})
        reply = []
        stream = model.create_chat_completion(messages, stream=True, **kw)
        try:
            for chunk in stream:
                piece = chunk["choices"][0]["delta"].get("content", "")
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            # Ctrl-C ends this reply, not the program
            stream.close()
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def cmd_info(args):
    from edge_runtime.formats.gguf import type_name
    from edge_runtime.engine import _engine
    from edge_runtime.formats.model_file import open_model_file

    path = args.model_path or args.model
    if not path:
        from edge_runtime.model.model import default_model_path

        path = default_model_path()
        if not path:
            raise CliError("no model given and this build ships no default model")
    from edge_runtime.board.memory import kv_cache_bytes

    mf = open_model_file(path)
    c = mf.config
    kv_bytes = kv_cache_bytes(args.ctx, c.n_layers, c.n_kv_heads, c.head_dim)
    types = {}
    for info in mf.reader.tensors.values():
        types[info.ggml_type] = types.get(info.ggml_type, 0) + 1
    kernel = os.environ.get("EDGE_RUNTIME_KERNEL") or "auto"
    try:
        chosen = _engine.select_kernel(kernel)
    except _engine.KernelUnavailableError as exc:
        chosen = f"unavailable ({exc})"
    info = {
        "path": path, "file_size": mf.file_size, "architecture": c.arch, "name": c.name,
        "n_vocab": c.n_vocab, "dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads,
        "n_kv_heads": c.n_kv_heads, "head_dim": c.head_dim, "ffn_dim": c.ffn_dim, "n_ctx_train": c.n_ctx_train,
        "rope_theta": c.rope_theta, "norm_eps": c.norm_eps, "head_type": c.head_type, "tied_embeddings": c.tied,
        "tensor_types": {type_name(t): n for t, n in sorted(types.items())},
        "n_tensors": len(mf.reader.tensors), "ctx": args.ctx, "kv_cache_bytes": kv_bytes,
        "memory_needed_bytes": mf.file_size + kv_bytes, "kernel": chosen,
        "kernels_available": _engine.available_kernels(),
    }
    try:
        from edge_runtime.board.device_config import detect_board

        info["board"], info["board_reason"] = detect_board()
    except Exception as exc:  # board detection is advisory
        info["board"], info["board_reason"] = None, str(exc)
    mf.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            if k.endswith("_bytes") or k == "file_size":
                v = f"{v} ({v / 2**20:.1f} MiB)"
            print(f"{k:<{width}}  {v}")
    return 0




def cmd_bench(args):
    from edge_runtime.board.bench import main as bench_main

    return bench_main(args)


def _external(module_name, attr):
    mod = importlib.import_module(module_name)
    return getattr(mod, attr)


def build_parser():
    p = argparse.ArgumentParser(prog="edge-runtime", description="Run ternary (BitNet b1.58) models on small boards.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="generate from a prompt and stream it to stdout")
    _add_model_args(r)
    r.add_argument("-p", "--prompt", required=True)
    _add_sampling_args(r)
    r.add_argument("--chat", action="store_true", help="wrap the prompt in the chat format")
    r.add_argument("--system", default=None, help="system prompt (with --chat)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("chat", help="interactive multi-turn chat (Ctrl-C stops a reply, Ctrl-D quits)")
    _add_model_args(c)
    _add_sampling_args(c)
    c.add_argument("--system", default=None, help="system prompt")
    c.set_defaults(func=cmd_chat)

    i = sub.add_parser("info", help="describe a model file and what it needs on this machine")
    i.add_argument("model_path", nargs="?", help="model file")
    i.add_argument("-m", "--model", default=None)
    i.add_argument("--ctx", type=int, default=2048, help="context size to size the KV cache for")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="measure prompt and decode speed")
    from edge_runtime.board.bench import add_arguments as bench_args

    bench_args(b)
    b.set_defaults(func=cmd_bench)

    for name, module, help_text in EXTERNAL_COMMANDS:
        client = name == "ask-serial"
        _add_external(sub, name, module, help_text, "add_client_arguments" if client else "add_arguments",
                      "client_main" if client else "main")

    s = sub.add_parser("serve", help="serve prompts to other devices")
    ssub = s.add_subparsers(dest="transport", metavar="TRANSPORT")
    ssub.required = True
    for name, module, help_text in SERVE_COMMANDS:
        sp = _add_external(ssub, name, module, help_text, "add_arguments", "main")
        if name == "mqtt" and sp is not None:
            _add_assist_option(sp)
        if name == "serial" and sp is not None:
            _add_serial_assist_option(sp)
    return p


def _add_serial_assist_option(sp):
    """`serve serial --assist`: {"id", "assist": TEXT} lines act on a home (cli is the only layer that
    knows both serve and assist)."""
    g = sp.add_argument_group("assistant")
    g.add_argument("--assist", action="store_true",
                   help="also answer {\"id\", \"assist\": TEXT} lines (and {\"id\", \"confirm\": true}) "
                        "with the assistant; needs --home or --broker")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--home", metavar="FILE", help="the home's discovery configs as a JSON file "
                                                        "(interpret only: nothing is published)")
    where.add_argument("--broker", metavar="HOST:PORT", help="the MQTT broker the home's devices announce "
                                                                "themselves on (actions are published there)")
    g.add_argument("--discovery-prefix", default="homeassistant",
                   help="Home Assistant discovery prefix (default homeassistant)")
    run = sp.get_default("func")

    def serve_with_assist(args, run=run):
        if not args.assist:
            if args.home or args.broker:
                raise CliError("--home and --broker are options of --assist")
            return run(args)
        if not (args.home or args.broker):
            raise CliError("--assist needs --home FILE or --broker HOST:PORT")
        from edge_runtime.assist.assistant import Assistant
        from edge_runtime.assist.desk import AssistDesk
        from edge_runtime.assist.home import Home

        home = Home.from_file(args.home) if args.home else Home.from_broker(args.broker,
                                                                           prefix=args.discovery_prefix)
        assistant = desk = None
        try:
            assistant = Assistant(home)
            desk = AssistDesk(assistant, execute=bool(args.broker)).start()

            def on_line(msg, key, reply):
                desk.submit(msg, key, reply, text_field="assist")

            return run(args, verbs={"assist": on_line, "confirm": on_line})
        finally:
            if desk is not None:
                desk.stop()
            if assistant is not None:
                assistant.close()
            home.close()

    sp.set_defaults(func=serve_with_assist)


def _add_assist_option(sp):
    """`serve mqtt --assist`: the home assistant beside the generation service (cli is the only layer
    that knows both)."""
    g = sp.add_argument_group("assistant")
    g.add_argument("--assist", action="store_true",
                   help="also act on {\"id\", \"text\"} requests on <prefix>/<device-id>/assist, using the "
                        "Home Assistant MQTT discovery devices on the same broker")
    g.add_argument("--discovery-prefix", default="homeassistant",
                   help="Home Assistant discovery prefix for --assist (default homeassistant)")
    run = sp.get_default("func")

    def serve_with_assist(args, run=run):
        if not args.assist:
            return run(args)
        from edge_runtime.assist.mqtt_service import start_from_serve_args

        assistant = start_from_serve_args(args)
        try:
            return run(args)
        finally:
            assistant.close()

    sp.set_defaults(func=serve_with_assist)


def _add_external(sub, name, module, help_text, add_name, main_name):
    """A subcommand implemented in its own module. If the module cannot be imported (a missing
    dependency), the command still exists and says why it cannot run."""
    sp = sub.add_parser(name, help=help_text)
    try:
        add_args, run = _external(module, add_name), _external(module, main_name)
    except ImportError as exc:
        reason = f"'{name}' is unavailable: {exc}"
        sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

        def unavailable(args, reason=reason):
            raise CliError(reason)

        sp.set_defaults(func=unavailable)
        return None
    add_args(sp)
    sp.set_defaults(func=run)
    return sp


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        return 0 if rc is None else int(rc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        from edge_runtime.errors import EdgeRuntimeError, ModelFormatError

        known = (CliError, EdgeRuntimeError, ModelFormatError, ValueError, OSError, TypeError)
        prefix = "" if isinstance(exc, known) else f"{type(exc).__name__}: "
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"edge-runtime: error: {prefix}{msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
