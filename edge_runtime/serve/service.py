"""What every transport (MQTT, serial) shares: request validation, one generation at a time on the
model behind a bounded queue, cancellation, and the shape of replies.

Reply shapes (the protocol both transports document):
- chunk: {"id", "seq", "text"} while streaming;
- final: {"id", "done": true, "text", "finish_reason": "stop"|"length"|"cancelled"|"error",
  "usage", "timings"}, plus "error": {"code", "message"} when finish_reason is "error".

Transports call `parse_request` on the decoded JSON object, then `GenerationService.submit`; the
worker thread calls their `on_chunk(chunk)` and `on_done(final)` callbacks. An exception raised
by a callback is logged and never stops the worker.
"""
import collections
import dataclasses
import logging
import queue
import threading
import time

log = logging.getLogger("edge_runtime.serve.service")

# error codes (stable: clients switch on them)
E_BAD_REQUEST = "bad_request"
E_BUSY = "busy"
E_TOO_LARGE = "too_large"
E_DUPLICATE = "duplicate"
E_CONTEXT = "context_overflow"
E_INTERNAL = "internal"
E_SHUTDOWN = "shutting_down"

OPTION_TYPES = {
    "max_tokens": int, "temperature": (int, float), "top_k": int, "top_p": (int, float), "min_p": (int, float),
    "repeat_penalty": (int, float), "presence_penalty": (int, float), "frequency_penalty": (int, float),
    "seed": int, "stop": (str, list), "json_schema": dict, "stream": bool,
}
ROLES = ("system", "user", "assistant")


class RequestError(ValueError):
    """A request that cannot be served; `code` is one of the E_* strings above."""

    def __init__(self, code, message, request_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclasses.dataclass
class GenerationRequest:
    id: object                      # str or int, echoed in every reply
    prompt: str = None
    messages: list = None
    options: dict = dataclasses.field(default_factory=dict)
    stream: bool = True
    context: object = None          # transport data (e.g. MQTT response topic), untouched here
    received: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass
class Limits:
    max_prompt_chars: int = 16384
    max_tokens: int = 1024          # cap on a request's max_tokens
    default_max_tokens: int = 256
    queue_size: int = 4             # waiting requests behind the running one
    recent_ids: int = 1024          # ids remembered to answer duplicates once


def _request_id(obj):
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not (0 < len(rid) <= 128)):
        return None
    return rid


def parse_request(obj, limits: Limits = Limits(), context=None) -> GenerationRequest:
    """Validate a decoded JSON request. Raises RequestError (with the id when it had a usable one)."""
    if not isinstance(obj, dict):
        raise RequestError(E_BAD_REQUEST, f"a request must be a JSON object, got {type(obj).__name__}")
    rid = _request_id(obj)
    if rid is None:
        raise RequestError(E_BAD_REQUEST, "request needs an \"id\": a non-empty string (<= 128 chars) or an integer")

    def bad(msg):
        return RequestError(E_BAD_REQUEST, msg, rid)

    unknown = sorted(set(obj) - {"id", "prompt", "messages"} - set(OPTION_TYPES))
    if unknown:
        raise bad(f"unknown field(s): {', '.join(unknown)}")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise bad("give exactly one of \"prompt\" (a string) or \"messages\" (a list)")
    size = 0
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise bad("\"prompt\" must be a non-empty string")
        size = len(prompt)
    else:
        if not isinstance(messages, list) or not messages:
            raise bad("\"messages\" must be a non-empty list of {\"role\", \"content\"}")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or set(msg) - {"role", "content"} or msg.get("role") not in ROLES \
                    or not isinstance(msg.get("content"), str):
                raise bad(f"messages[{i}] must be {{\"role\": one of {list(ROLES)}, \"content\": string}}")
            size += len(msg["content"])
    if size > limits.max_prompt_chars:
        raise RequestError(E_TOO_LARGE, f"prompt of {size} characters is over the limit of {limits.max_prompt_chars}", rid)
    options = {}
    for key, typ in OPTION_TYPES.items():
        if key not in obj:
            continue
        val = obj[key]
        if isinstance(val, bool) and typ is not bool or not isinstance(val, typ):
            raise bad(f"\"{key}\" has the wrong type ({type(val).__name__})")
        options[key] = val
    stream = options.pop("stream", True)
    if "stop" in options:
        stop = options["stop"]
        stop = [stop] if isinstance(stop, str) else stop
        if not all(isinstance(s, str) and s for s in stop) or len(stop) > 8:
            raise bad("\"stop\" must be a string or a list of at most 8 non-empty strings")
        options["stop"] = stop
    mt = options.get("max_tokens", limits.default_max_tokens)
    if mt < 1 or mt > limits.max_tokens:
        raise bad(f"\"max_tokens\" must be 1..{limits.max_tokens}, got {mt}")
    options["max_tokens"] = mt
    for key, lo, hi in (("temperature", 0.0, 10.0), ("top_p", 0.0, 1.0), ("min_p", 0.0, 1.0),
                        ("repeat_penalty", 0.0, 10.0), ("top_k", 0, 1 << 20)):
        if key in options and not (lo <= options[key] <= hi):
            raise bad(f"\"{key}\" must be in [{lo}, {hi}], got {options[key]}")
    if "json_schema" in options:
        from edge_runtime.text.json_schema import check_schema

        try:
            check_schema(options["json_schema"])
        except ValueError as exc:
            raise bad(f"\"json_schema\": {exc}") from None
    return GenerationRequest(id=rid, prompt=prompt, messages=messages, options=options, stream=stream,
                             context=context)


def error_reply(request_id, code, message):
    return {"id": request_id, "done": True, "text": "", "finish_reason": "error",
            "error": {"code": code, "message": message}}


class _Job:
    __slots__ = ("req", "on_chunk", "on_done", "cancelled")

    def __init__(self, req, on_chunk, on_done):
        self.req, self.on_chunk, self.on_done = req, on_chunk, on_done
        self.cancelled = False


class GenerationService:
    """One worker thread runs requests one at a time on `model`; up to limits.queue_size wait."""

    def __init__(self, model, limits: Limits = Limits()):
        self.model = model
        self.limits = limits
        self._queue = queue.Queue(maxsize=limits.queue_size)
        self._lock = threading.Lock()
        self._current = None
        self._recent = collections.OrderedDict()
        self._stop = threading.Event()
        self._thread = None
        self.served = 0
        self.last_decode_tok_s = 0.0
        self.last_prompt_tok_s = 0.0
        self.started = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-runtime-generate", daemon=True)
            self._thread.start()
        return self

    def stop(self, cancel_running=True, timeout=30.0):
        """Refuse new work, answer queued requests with shutting_down, cancel (or finish) the running one."""
        self._stop.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:  # None is the worker's end marker from an earlier stop()
                self._finish(job, error_reply(job.req.id, E_SHUTDOWN, "the service is shutting down"))
        if cancel_running:
            with self._lock:
                if self._current is not None:
                    self._current.cancelled = True
                    self.model.cancel()
        if self._thread is not None:
            self._queue.put(None) if not self._queue.full() else None
            self._thread.join(timeout)

    @property
    def queue_depth(self):
        return self._queue.qsize()

    @property
    def busy(self):
        return self._current is not None

    # -- requests ----------------------------------------------------------------------------
    def submit(self, req: GenerationRequest, on_chunk, on_done):
        """Queue a request. Raises RequestError (busy / duplicate / shutting_down) without queuing."""
        if self._stop.is_set():
            raise RequestError(E_SHUTDOWN, "the service is shutting down", req.id)
        key = (repr(req.id), repr(getattr(req.context, "reply_key", None)))
        with self._lock:
            if key in self._recent:
                raise RequestError(E_DUPLICATE, f"request id {req.id!r} was already received", req.id)
            job = _Job(req, on_chunk, on_done)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise RequestError(E_BUSY, f"busy: {self._queue.maxsize} requests already waiting", req.id) from None
            self._recent[key] = True
            while len(self._recent) > self.limits.recent_ids:
                self._recent.popitem(last=False)

    @staticmethod
    def _matches(job, request_id, reply_key):
        return job.req.id == request_id and (
            reply_key is None or getattr(job.req.context, "reply_key", None) == reply_key)

    def cancel(self, request_id, reply_key=None):
        """Cancel a queued or running request; True if it was found. With reply_key, only the
        request of that client (two clients may reuse an id on different reply topics)."""
        with self._lock:
            cur = self._current
            if cur is not None and self._matches(cur, request_id, reply_key):
                cur.cancelled = True
                self.model.cancel()
                return True
            # a queued job is marked; the worker answers it as cancelled without running it
            for job in list(self._queue.queue):
                if job is not None and self._matches(job, request_id, reply_key):
                    job.cancelled = True
                    return True
        return False

    # -- worker ------------------------------------------------------------------------------
    def _finish(self, job, final):
        try:
            job.on_done(final)
        except Exception:  # a transport callback must never kill the worker
            log.exception("on_done callback failed for request %r", job.req.id)

    def _run(self):
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                break
            if job.cancelled:
                self._finish(job, {"id": job.req.id, "done": True, "text": "", "finish_reason": "cancelled",
                                   "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                                   "timings": {}})
                continue
            with self._lock:
                self._current = job
            try:
                final = self._generate(job)
            except Exception as exc:
                log.exception("generation failed for request %r", job.req.id)
                code = E_CONTEXT if type(exc).__name__ == "ContextOverflowError" else (
                    E_BAD_REQUEST if isinstance(exc, (ValueError, TypeError)) else E_INTERNAL)
                final = error_reply(job.req.id, code, str(exc))
            finally:
                with self._lock:
                    self._current = None
            self.served += 1
            self._finish(job, final)

    def _generate(self, job):
        req = job.req
        opts = dict(req.options)
        if req.messages is not None:
            stream = self.model.create_chat_completion(req.messages, stream=True, **opts)
            piece_of = lambda c: c["choices"][0].get("delta", {}).get("content", "")  # noqa: E731
        else:
            stream = self.model.create_completion(req.prompt, stream=True, **opts)
            piece_of = lambda c: c["choices"][0].get("text", "")  # noqa: E731
        parts, seq, finish, usage, timings = [], 0, "error", None, {}
        try:
            for chunk in stream:
                if job.cancelled:
                    self.model.cancel()
                piece = piece_of(chunk)
                if piece:
                    parts.append(piece)
                    if req.stream:
                        try:
                            job.on_chunk({"id": req.id, "seq": seq, "text": piece})
                        except Exception:
                            log.exception("on_chunk callback failed for request %r", req.id)
                    seq += 1
                fr = chunk["choices"][0].get("finish_reason")
                if fr is not None:
                    finish, usage, timings = fr, chunk.get("usage"), chunk.get("timings") or {}
        finally:
            stream.close()
        if job.cancelled:
            finish = "cancelled"
        self.last_decode_tok_s = timings.get("decode_tok_s", self.last_decode_tok_s)
        self.last_prompt_tok_s = timings.get("prompt_tok_s", self.last_prompt_tok_s)
        return {"id": req.id, "done": True, "text": "".join(parts), "finish_reason": finish,
                "usage": usage or {}, "timings": timings}

    def status(self):
        from edge_runtime.engine.cpu import rss_bytes

        return {"model": self.model.name, "kernel": self.model.kernel, "busy": self.busy,
                "queue_depth": self.queue_depth, "served": self.served,
                "decode_tok_s": self.last_decode_tok_s, "prompt_tok_s": self.last_prompt_tok_s,
                "rss_bytes": rss_bytes(), "uptime_s": round(time.monotonic() - self.started, 1),
                "cpu_temp_c": cpu_temperature()}


def load_model_for_board(path, board=None, *, threads=None, n_ctx=None, no_mmap=False, mlock=False, kernel=None,
                         seed=None):
    """The Model a service runs: command-line values first, then the board config (threads, n_ctx,
    CPU affinity, mmap/mlock, memory budget), then defaults."""
    from edge_runtime.model.model import Model, default_model_path

    path = path or default_model_path()
    if path is None:
        raise ValueError("give -m MODEL (this build ships no default model)")
    use_mmap, use_mlock, budget_mb = not no_mmap, bool(mlock), None
    if board is not None:
        from edge_runtime.board.device_config import apply_affinity, effective_threads

        apply_affinity(board.cpu_affinity)
        threads = threads or effective_threads(board)
        n_ctx = n_ctx or board.n_ctx
        use_mmap = use_mmap and board.use_mmap
        use_mlock = use_mlock or board.use_mlock
        budget_mb = board.memory_budget_mb
    return Model(path, n_threads=threads, n_ctx=n_ctx or 2048, use_mmap=use_mmap, use_mlock=use_mlock,
                 kernel=kernel, seed=seed, memory_budget_mb=budget_mb)


def cpu_temperature(path="/sys/class/thermal/thermal_zone0/temp"):
    """CPU temperature in °C where the board exposes it, else None."""
    try:
        with open(path) as f:
            return round(int(f.read().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None
