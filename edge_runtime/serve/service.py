"""The transport-free service core: as many generations at a time as the model has slots (one
worker thread each; with several, the model decodes them together), up to `Limits.queue_size`
requests waiting behind them, cancellation, duplicate ids, the final reply.

Transports parse requests with edge_runtime.serve.protocol.parse_request, then call
`GenerationService.submit`; the worker thread calls their `on_chunk(chunk)` and `on_done(final)`
callbacks (shapes in edge_runtime.serve.protocol). An exception raised by a callback is logged and
never stops the worker. Every submitted request gets exactly one `on_done`.
"""
import collections
import logging
import queue
import threading
import time

from edge_runtime.errors import EdgeRuntimeError, ModelClosedError, ModelFormatError
from edge_runtime.serve.protocol import (E_BAD_REQUEST, E_BUSY, E_CONTEXT, E_DUPLICATE, E_INTERNAL, E_SHUTDOWN,
                                         GenerationRequest, Limits, RequestError, cancelled_reply, error_reply)
from edge_runtime.text.json_schema import BudgetError

log = logging.getLogger("edge_runtime.serve.service")


class _Job:
    __slots__ = ("req", "on_chunk", "on_done", "cancelled")

    def __init__(self, req, on_chunk, on_done):
        self.req, self.on_chunk, self.on_done = req, on_chunk, on_done
        self.cancelled = False


def reply_key_of(req):
    """The namespace of a request's id: two clients may use one id on different reply topics."""
    return getattr(req.context, "reply_key", None)


class GenerationService:
    """`model.slots` worker threads (one by default) run requests on `model`; up to
    limits.queue_size wait (0: none wait, a request is refused busy while every slot runs one)."""

    def __init__(self, model, limits: Limits = Limits()):
        if not isinstance(limits.queue_size, int) or limits.queue_size < 0:
            raise ValueError(f"Limits.queue_size must be an integer >= 0, got {limits.queue_size!r}")
        self.model = model
        self.limits = limits
        self._queue = queue.Queue()    # bounded by the admission count below, not by maxsize
        self._lock = threading.Lock()
        self._admitted = 0             # accepted and not yet answered: running + waiting
        self._running = {}             # worker thread ident -> the job it runs
        self.workers = max(1, int(getattr(model, "slots", 1)))
        self._recent = collections.OrderedDict()   # (repr id, repr reply key) -> fingerprint
        self._stop = threading.Event()
        self._threads = []
        self.served = 0
        self.last_decode_tok_s = 0.0
        self.last_prompt_tok_s = 0.0
        self.started = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        if not self._threads:
            for i in range(self.workers):
                t = threading.Thread(target=self._run, name=f"edge-runtime-generate-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def stop(self, cancel_running=True, timeout=30.0):
        """Refuse new work, answer queued requests with shutting_down, cancel (or finish) the running
        one. True when the worker has ended within `timeout` (the model is then free to close)."""
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
                if self._running:
                    for job in self._running.values():
                        job.cancelled = True
                    self.model.cancel()
        if not self._threads:
            return True
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def queue_depth(self):
        return sum(1 for job in list(self._queue.queue) if job is not None)

    @property
    def busy(self):
        return bool(self._running)

    @property
    def running(self):
        return len(self._running)

    # -- requests ----------------------------------------------------------------------------
    def submit(self, req: GenerationRequest, on_chunk, on_done):
        """Queue a request. Raises RequestError (busy / duplicate / shutting_down) without queuing.

        A duplicate is an id already received with the same reply key among the last
        limits.recent_ids requests; `same_request` on the error says the fingerprints match."""
        if self._stop.is_set():
            raise RequestError(E_SHUTDOWN, "the service is shutting down", req.id)
        key = (repr(req.id), repr(reply_key_of(req)))
        with self._lock:
            if key in self._recent:
                earlier = self._recent[key]
                same = earlier is not None and earlier == req.fingerprint
                raise RequestError(E_DUPLICATE, f"request id {req.id!r} was already used for another request on "
                                                f"this reply topic/session (ids must be unique among the last "
                                                f"{self.limits.recent_ids}); send a fresh id", req.id,
                                   same_request=same)
            if self._admitted > self.limits.queue_size + self.workers - 1:
                raise RequestError(E_BUSY, f"busy: {self.limits.queue_size} requests already waiting behind "
                                           f"the running {'one' if self.workers == 1 else 'ones'}", req.id)
            job = _Job(req, on_chunk, on_done)
            self._admitted += 1
            self._queue.put_nowait(job)
            self._recent[key] = req.fingerprint
            while len(self._recent) > self.limits.recent_ids:
                self._recent.popitem(last=False)

    @staticmethod
    def _matches(job, request_id, reply_key):
        return job.req.id == request_id and type(job.req.id) is type(request_id) \
            and reply_key_of(job.req) == reply_key

    def cancel(self, request_id, reply_key):
        """Cancel the queued or running request with this id and reply key (the requester's:
        another client's cancel names another key); True if it was found."""
        with self._lock:
            for ident, cur in self._running.items():
                if self._matches(cur, request_id, reply_key):
                    cur.cancelled = True
                    self._cancel_model(ident)
                    return True
            # a queued job is marked; the worker answers it as cancelled without running it
            for job in list(self._queue.queue):
                if job is not None and self._matches(job, request_id, reply_key):
                    job.cancelled = True
                    return True
        return False

    # -- worker ------------------------------------------------------------------------------
    def _cancel_model(self, ident):
        """Stop the generation the worker `ident` runs (with one slot: the only one)."""
        if self.workers == 1:
            self.model.cancel()
        else:
            self.model.cancel(thread=ident)

    def _finish(self, job, final):
        with self._lock:
            self._admitted -= 1
        try:
            job.on_done(final)
        except Exception:  # a transport callback must never kill the worker
            log.exception("on_done callback failed for request %r", job.req.id)

    def _run(self):
        while True:
            job = self._queue.get()
            if job is None:
                break
            if job.cancelled or self._stop.is_set():
                self._finish(job, cancelled_reply(job.req.id) if job.cancelled else
                             error_reply(job.req.id, E_SHUTDOWN, "the service is shutting down"))
                continue
            ident = threading.get_ident()
            with self._lock:
                self._running[ident] = job
            try:
                final = self._generate(job)
            except BudgetError as exc:  # the request's own limit, found before any token: no traceback
                log.warning("request %r refused: %s", job.req.id, exc)
                final = error_reply(job.req.id, E_BAD_REQUEST, str(exc))
            except Exception as exc:
                log.exception("generation failed for request %r", job.req.id)
                code = error_code_of(exc)
                final = error_reply(job.req.id, code, str(exc))
            finally:
                with self._lock:
                    self._running.pop(ident, None)
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
                    self._cancel_model(threading.get_ident())
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
                "running": self.running, "slots": self.workers,
                "queue_depth": self.queue_depth, "served": self.served,
                "decode_tok_s": self.last_decode_tok_s, "prompt_tok_s": self.last_prompt_tok_s,
                "rss_bytes": rss_bytes(), "state_bytes": self.model.state_bytes, "uptime_s": round(time.monotonic() - self.started, 1),
                "cpu_temp_c": cpu_temperature()}


def error_code_of(exc):
    """The reply code of a failed generation: a fault of the model file or of the runtime is never
    reported as the client's (bad_request is only for what the request got wrong)."""
    if type(exc).__name__ == "ContextOverflowError":
        return E_CONTEXT
    if isinstance(exc, ModelClosedError):
        return E_SHUTDOWN
    if isinstance(exc, (ModelFormatError, EdgeRuntimeError)):
        return E_INTERNAL
    return E_BAD_REQUEST if isinstance(exc, (ValueError, TypeError)) else E_INTERNAL


def cpu_temperature(path="/sys/class/thermal/thermal_zone0/temp"):
    """CPU temperature in °C where the board exposes it, else None."""
    try:
        with open(path) as f:
            return round(int(f.read().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None
