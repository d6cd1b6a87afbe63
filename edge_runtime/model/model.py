"""The user-facing model: load a BitNet b1.58 GGUF, generate text, chat.

Return shapes follow llama-cpp-python (text_completion / chat.completion dicts) so existing code
ports unchanged, plus our "timings". With one slot (the default) one generation runs at a time per
Model (a lock guards the engine); with `slots=N`, up to N requests from different threads decode
together (edge_runtime/model/slots.py). Each slot's KV cache keeps the tokens of its previous
request so a follow-up that shares a prefix (the next chat turn) evaluates only its new tokens;
`prompt_cache=DIR` adds snapshots of earlier prompts that survive other prompts and restarts
(edge_runtime/model/prompt_cache.py).
"""
import collections
import contextlib
import mmap
import os
import threading
import time

import numpy as np

from edge_runtime.engine import _engine
from edge_runtime.engine.cpu import default_threads
from edge_runtime.errors import EdgeRuntimeError, ModelClosedError, ModelFormatError
from edge_runtime.formats.model_file import open_model_file
from edge_runtime.model.load_checks import build_tokenizer, check_finite_norms
from edge_runtime.model.prompt_cache import DEFAULT_CACHE_MB
from edge_runtime.model.slots import Batcher, DirectPath, SlotTable, prefill
from edge_runtime.model.responses import ChatShape, CompletionShape, assemble

# Prompt tokens per forward batch. The tile GEMMs reuse each unpacked weight block across a
# batch; on the AMX path 128 gives 1.7x the GEMM throughput of 32 (measured on a 2B4T-shaped
# model). Scratch grows with it: about 17.5 MiB at 128 for 2B4T.
DEFAULT_BATCH = 128
KERNEL_ENV = "EDGE_RUNTIME_KERNEL"
# Prompt tokens a step of the batch takes while other requests decode: a long prompt goes in
# chunks so their next tokens are not held up by all of it.
DEFAULT_PREFILL_CHUNK = 16


class MemoryNeed(collections.namedtuple(
        "MemoryNeed", "model_bytes n_ctx n_layers n_kv_heads head_dim scratch_bytes")):
    """A load's memory: the file, the KV cache's shape at n_ctx, and the engine's scratch bytes."""


class ContextOverflowError(EdgeRuntimeError, ValueError):
    """The prompt (plus at least one generated token) does not fit the context window."""


class NonFiniteLogitsError(EdgeRuntimeError):
    """The forward pass produced NaN or infinite logits: the model's weights are broken (a fault of the
    file, not of the request)."""


MADV_POPULATE_READ = 22  # <linux/mman.h>, the same on every architecture; Python 3.11's mmap lacks it


def default_model_path():
    """The small model that ships inside the package, or None if this build has none."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    if os.path.isdir(here):
        for name in sorted(os.listdir(here)):
            if name.endswith(".gguf"):
                return os.path.join(here, name)
    return None


class Model:
    def __init__(self, path=None, n_threads=None, n_ctx=2048, use_mmap=True, use_mlock=False, seed=None,
                 n_batch=DEFAULT_BATCH, kernel=None, verbose=False, memory_guard=None, prompt_cache=None,
                 cache_mb=None, slots=1, prefill_chunk=DEFAULT_PREFILL_CHUNK):
        if path is None:
            path = default_model_path()
            if path is None:
                raise EdgeRuntimeError("no model path given and this build ships no default model")
        path = os.fspath(path)
        if not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        if n_threads is None:
            n_threads = default_threads()
        if not isinstance(n_threads, int) or n_threads < 1:
            raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
        if not isinstance(n_batch, int) or n_batch < 1:
            raise ValueError(f"n_batch must be a positive integer, got {n_batch!r}")
        max_slots = min(n_batch, n_ctx, _engine.MAX_BATCH_WANT)
        if not isinstance(slots, int) or not 1 <= slots <= max_slots:
            raise ValueError(f"slots must be an integer from 1 to {max_slots} (n_batch, n_ctx), got {slots!r}")
        if cache_mb is None:
            cache_mb = DEFAULT_CACHE_MB
        if not isinstance(cache_mb, (int, float)) or cache_mb < 0:
            raise ValueError(f"cache_mb must be a number >= 0, got {cache_mb!r}")
        if prompt_cache is False:
            prompt_cache = None
        self.cache_bytes = int(cache_mb * 2**20) if prompt_cache is not None else 0
        self.path = path
        self.verbose = verbose
        self._mf = open_model_file(path)
        self.config = self._mf.config
        self.file_size = self._mf.file_size
        cfg = self.config
        self.memory = None
        try:
            # everything a file can get wrong is found here, so a model that loads can serve
            self._tokenizer = build_tokenizer(self._mf)
            check_finite_norms(self._mf)
            _engine.release_free_heap()  # the tokenizer build's temporaries: keeps the process in budget
            if memory_guard is not None:
                self.memory = memory_guard(self.memory_need(n_ctx, n_batch, slots, self.cache_bytes))
            if n_ctx > _engine.MAX_EXTENT:  # a caller's value, not the file's: not a ModelFormatError
                raise ValueError(f"n_ctx must be an integer in 1..{_engine.MAX_EXTENT}, got {n_ctx}")
        except BaseException:
            self._mf.close()
            raise
        buffer = self._mf.reader.buffer
        if not use_mmap:
            # read the file into private memory: the engine then uses no file-backed pages
            buffer = bytearray(buffer)
        elif isinstance(buffer, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED"):
            try:
                buffer.madvise(mmap.MADV_WILLNEED)
                # and map every page now (Linux >= 5.14; elsewhere EINVAL, ignored): the first request
                # after a start does not fault the weights in
                buffer.madvise(getattr(mmap, "MADV_POPULATE_READ", MADV_POPULATE_READ))
            except OSError:
                pass
        self._buffer = buffer
        self.mlocked = False
        if use_mlock:
            _engine.mlock_buffer(buffer)
            self.mlocked = True

        tensors = {}
        for name, info in self._mf.reader.tensors.items():
            rows = int(info.shape[0]) if len(info.shape) > 1 else 1
            cols = int(info.shape[-1])
            scale = self._mf.i2s_scale(name) if info.ggml_type in _engine.TERNARY_TYPES else None
            tensors[name] = (int(info.offset), int(info.ggml_type), rows, cols, scale)
        engine_cfg = dict(n_vocab=cfg.n_vocab, dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                          n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, ffn_dim=cfg.ffn_dim,
                          rope_theta=float(cfg.rope_theta), norm_eps=float(cfg.norm_eps))
        if kernel is None:
            kernel = os.environ.get(KERNEL_ENV) or None
        try:
            self._engine = _engine.Engine(buffer, engine_cfg, tensors, n_ctx, min(n_batch, n_ctx), n_threads,
                                          kernel, n_seq=slots)
        except _engine.KernelUnavailableError as exc:
            raise EdgeRuntimeError(f"{KERNEL_ENV}/kernel: {exc}") from None
        except ValueError as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
        self.n_ctx = n_ctx
        self.kernel = self._engine.kernel
        self.n_threads = self._engine.n_threads
        self._seed = seed
        self._lock = threading.RLock()
        self.slots = slots
        self._slots = SlotTable(slots)
        self._path = DirectPath(self._engine) if slots == 1 else \
            Batcher(self._engine, min(n_batch, n_ctx), prefill_chunk)
        self.prompt_cache = None
        if prompt_cache is not None:
            from edge_runtime.model.prompt_cache import PromptCache

            directory = None if prompt_cache is True else os.fspath(prompt_cache)
            self.prompt_cache = PromptCache(cfg.n_layers, cfg.n_kv_heads * cfg.head_dim, self.cache_bytes,
                                            directory=directory, model_path=path)
        self.last_eval_tokens = 0    # how many tokens the last request had to evaluate for its prompt
        self._closed = False
        self._active = 0                      # generations and evaluations running now
        self._active_lock = threading.Lock()
        self._token_bytes = None
        self._known_replies = collections.OrderedDict()  # reply text -> the token ids generated for it
        self.name = cfg.name or os.path.basename(path)

    def memory_need(self, n_ctx, n_batch=DEFAULT_BATCH, slots=1, cache_bytes=0):
        """What a load at n_ctx allocates besides the file: given to the caller's memory guard
        (edge_runtime.board.loading.guard) before the engine allocates anything. The other slots'
        KV sequences and the prompt cache's snapshots count as scratch."""
        c = self.config
        wide = max(c.dim, c.ffn_dim, c.n_heads * c.head_dim)
        scratch = 4 * n_batch * (8 * wide + 2 * c.ffn_dim) + 4 * c.n_vocab * 2 + (16 << 20)
        scratch += (slots - 1) * 2 * c.n_layers * c.n_kv_heads * c.head_dim * n_ctx * 2 + cache_bytes
        return MemoryNeed(self._mf.file_size, n_ctx, c.n_layers, c.n_kv_heads, c.head_dim, int(scratch))

    # ------------------------------------------------------------------------------------------
    # resources
    # ------------------------------------------------------------------------------------------
    def close(self):
        """Free the model. From another thread during a generation: every running generation is
        aborted (its caller gets ModelClosedError) and the engine is freed only once its running C
        call has returned. The file is unmapped now, or by the last generation on its way out."""
        self._closed = True
        slots = getattr(self, "_slots", None)
        if slots is not None:
            for slot in slots.slots:
                slot.cancel.set()
        eng = getattr(self, "_engine", None)
        if eng is not None:
            eng.abort(True)
        path = getattr(self, "_path", None)
        if path is not None:
            path.close()  # the batch thread stops; requests waiting on it get ModelClosedError
        cache = getattr(self, "prompt_cache", None)
        if cache is not None:
            cache.close()
        if eng is not None:
            eng.close()  # kept as the attribute: a closed engine raises ModelClosedError, None would not
        active_lock = getattr(self, "_active_lock", None)
        if active_lock is None:
            self._release_file()
            return
        with active_lock:
            if self._active == 0:
                self._release_file()

    def _begin(self):
        """A generation or evaluation starts: ModelClosedError once the model is closed."""
        with self._active_lock:
            if self._closed:
                raise self._closed_error()
            self._active += 1

    def _end(self):
        with self._active_lock:
            self._active -= 1
            if self._active == 0 and self._closed:  # closed while this ran: unmap on the way out
                self._release_file()

    def _release_file(self):
        self._buffer = None
        mf = getattr(self, "_mf", None)
        if mf is not None:
            mf.close()
            self._mf = None

    def _closed_error(self):
        return ModelClosedError(f"{self.path}: the model was closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_vocab(self):
        return self.config.n_vocab

    @property
    def state_bytes(self):
        return self._engine.state_bytes

    # ------------------------------------------------------------------------------------------
    # tokens
    # ------------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise ModelFormatError(f"{self.path}: the file carries no tokenizer (tokenizer.ggml.tokens): "
                                   "it can evaluate token ids (eval_logits) but not generate text")
        return self._tokenizer

    def tokenize(self, text: bytes, add_bos=True, special=False):
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens):
        return self.tokenizer.decode(tokens)

    def _end_ids(self):
        tok = self.tokenizer
        ids = set()
        for i in (tok.eos_id, tok.eot_id):
            if i is not None:
                ids.add(int(i))
        return ids

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------
    def eval_logits(self, tokens, all_logits=True):
        """Logits for a fresh sequence of token ids (no cache reuse): (n, vocab) or (vocab,)."""
        self._check_fits(len(tokens), 0)
        with self._lock:
            self._begin()
            try:
                slot = self._slots.acquire(tokens)
                try:
                    slot.tokens = []
                    out = self._path.exclusive(lambda: self._engine.eval(tokens, 0, all_logits=all_logits,
                                                                         seq=slot.seq))
                    slot.tokens = list(tokens)
                    return out
                finally:
                    self._slots.release(slot)
            finally:
                self._end()

    @property
    def _cache_tokens(self):
        """Tokens held by the first slot (the only one unless slots > 1)."""
        return self._slots.slots[0].tokens

    def _check_fits(self, n_prompt, n_more):
        if n_prompt < 1:
            raise ValueError("the prompt is empty")
        if n_prompt + n_more > self.n_ctx:
            raise ContextOverflowError(
                f"prompt of {n_prompt} tokens does not fit the context of {self.n_ctx} tokens "
                f"(raise n_ctx/--ctx, shorten the prompt, or pass truncate=True)")

    def reset(self):
        """Forget the cached prompt of every free slot: the next request evaluates its prompt from
        the start (snapshots in the prompt cache stay)."""
        with self._lock:
            for slot in self._slots.slots:
                if not slot.busy:
                    slot.tokens = []

    def cancel(self, thread=None):
        """Stop the running generations (from any thread) within one token; with `thread` (an
        ident), only the one that thread runs. The engine's abort flag is atomic and its state is
        freed only under the GIL, so this is safe against close()."""
        hit = False
        for slot in self._slots.running():
            if thread is None or slot.thread == thread:
                slot.cancel.set()
                hit = True
        eng = getattr(self, "_engine", None)
        if hit and self.slots == 1 and eng is not None:
            eng.abort(True)  # one slot: also stop a long prompt in the middle
        return hit

    # ------------------------------------------------------------------------------------------
    # generation
    # ------------------------------------------------------------------------------------------
    def _generate(self, slot, prompt_tokens, max_tokens, sampling, stop, json_schema, timings):
        """Yields (token_id, text_piece, finish_reason_or_None). Text pieces are complete UTF-8."""
        from edge_runtime.text.sampling import Sampler, SamplingError

        tok = self.tokenizer
        end_ids = self._end_ids()
        sampler = Sampler(sampling, self.n_vocab)
        constraint = None
        if json_schema is not None:
            from edge_runtime.text.json_schema import JsonSchemaConstraint

            if self._token_bytes is None:
                self._token_bytes = [tok.token_bytes(i) for i in range(self.n_vocab)]
                self._special_ids = [i for i in range(self.n_vocab) if tok.is_control(i)]
            constraint = JsonSchemaConstraint(json_schema, self._token_bytes, end_ids, special_ids=self._special_ids)
            # refuse up front a budget (max_tokens, or the context left) below the shortest document
            constraint.check_budget(min(max_tokens, self.n_ctx - len(prompt_tokens) + 1))
        decoder = tok.stream_decoder()
        stops = [s for s in (stop or []) if s]
        hold = max((len(s) for s in stops), default=0)
        pending = ""     # decoded text not yet released (may be the start of a stop string)
        history = list(prompt_tokens)

        t0 = time.perf_counter()
        path = self._path
        try:
            logits = prefill(self, slot, prompt_tokens, lambda toks, pos: path.prefill(slot, toks, pos))
        except InterruptedError:
            slot.tokens = []
            if self._closed:
                raise self._closed_error() from None
            yield None, "", "cancelled"
            return
        self.last_eval_tokens = slot.last_eval_tokens
        t1 = time.perf_counter()
        timings["prompt_ms"] = (t1 - t0) * 1e3
        timings["prompt_tokens_evaluated"] = slot.last_eval_tokens
        n_gen = 0
        finish = "length"
        stopped_by_string = False
        while n_gen < max_tokens:
            if slot.cancel.is_set():
                if self._closed:
                    raise self._closed_error()
                finish = "cancelled"
                break
            allowed = None
            if constraint is not None:  # tokens that may still be sampled, this one included
                allowed = constraint.allowed_mask(min(max_tokens - n_gen, self.n_ctx - len(slot.tokens) + 1))
            try:
                token = sampler.sample(logits, history, allowed)
            except SamplingError as exc:
                if np.isfinite(logits).all():
                    raise
                raise NonFiniteLogitsError(
                    f"{self.path}: the model produced non-finite logits ({exc}); its weights are broken") from None
            n_gen += 1
            if timings.get("ttft_ms") is None:
                timings["ttft_ms"] = (time.perf_counter() - t0) * 1e3
            if token in end_ids:
                finish = "stop"
                break
            if constraint is not None:
                constraint.advance(token)
            history.append(token)
            pending += decoder.feed(token)
            if constraint is not None and constraint.is_complete():
                mask = np.array(constraint.allowed_mask(min(max_tokens - n_gen, self.n_ctx - len(slot.tokens))),
                                dtype=bool)
                mask[list(end_ids)] = False
                if not mask.any():
                    # the document is complete and only an end token may follow: stop here
                    # instead of spending a forward pass (or the last max_tokens) to sample it
                    yield token, pending, None
                    pending = ""
                    finish = "stop"
                    break
            if stops:
                hit = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
                if hit >= 0:
                    yield token, pending[:hit], None
                    pending = ""
                    finish = "stop"
                    stopped_by_string = True
                    break
                # hold back what could still become the start of a stop string
                cut = len(pending) - (hold - 1)
                release, pending = (pending[:cut], pending[cut:]) if cut > 0 else ("", pending)
                yield token, release, None
            else:
                yield token, pending, None
                pending = ""
            if n_gen >= max_tokens:
                break
            if len(slot.tokens) + 1 > self.n_ctx:
                finish = "length"
                break
            try:
                logits = path.decode(slot, token, len(slot.tokens))
            except InterruptedError:
                if self._closed:
                    raise self._closed_error() from None
                finish = "cancelled"
                break
            slot.tokens.append(token)
        if not stopped_by_string:
            pending += decoder.flush()
            if pending:
                yield None, pending, None
        t2 = time.perf_counter()
        timings["decode_ms"] = (t2 - t1) * 1e3
        timings["completion_tokens"] = n_gen
        yield None, "", finish

    def _prepare_prompt(self, prompt, max_tokens, truncate):
        if isinstance(prompt, (list, tuple)):
            tokens = [int(t) for t in prompt]
        elif isinstance(prompt, (str, bytes)):
            tokens = self.tokenize(prompt if isinstance(prompt, bytes) else prompt.encode("utf-8"), add_bos=True)
        else:
            raise TypeError(f"prompt must be str, bytes or a list of token ids, got {type(prompt).__name__}")
        return self._fit(tokens, max_tokens, truncate)

    def _fit(self, tokens, max_tokens, truncate):
        if not tokens:
            raise ValueError("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            if not truncate:
                self._check_fits(len(tokens), 1)
            keep = max(1, self.n_ctx - max(1, min(max_tokens, self.n_ctx // 2)))
            bos = self.tokenizer.bos_id
            if tokens[0] == bos:
                tokens = [bos] + tokens[len(tokens) - keep + 1:]
            else:
                tokens = tokens[len(tokens) - keep:]
        return tokens

    def _sampling(self, temperature, top_k, top_p, min_p, repeat_penalty, seed, presence_penalty,
                  frequency_penalty):
        from edge_runtime.text.sampling import SamplingParams

        if seed is None:
            seed = self._seed
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                              repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                              frequency_penalty=frequency_penalty, seed=seed)

    def _run(self, tokens, max_tokens, sampling, stop, json_schema):
        """Yields (piece, finish, usage, timings) on a slot (under the model lock with one slot)."""
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
        if isinstance(stop, str):
            stop = [stop]
        # one slot: requests run one after another; several: up to `slots` at once, batched
        with (self._lock if self.slots == 1 else contextlib.nullcontext()):
            self._begin()
            slot = self._slots.acquire(tokens)
            released = False

            def leave():
                self._path.leave(slot)
                self._slots.release(slot)
                self._end()

            try:
                if self._closed:
                    raise self._closed_error()
                if self.slots == 1:
                    self._engine.abort(False)
                for item in self._run_on(slot, tokens, max_tokens, sampling, stop, json_schema):
                    if item[1] is not None:
                        # free the slot before the final chunk: a consumer may stop iterating there
                        released = True
                        leave()
                    yield item
            finally:
                if not released:
                    leave()

    def _run_on(self, slot, tokens, max_tokens, sampling, stop, json_schema):
        timings = {"ttft_ms": None}
        n_completion = 0
        generated, text = [], []
        for token, piece, finish in self._generate(slot, tokens, max_tokens, sampling, stop, json_schema,
                                                   timings):
            if finish is None:
                if token is not None:
                    generated.append(token)
                text.append(piece)
            else:
                self._remember_reply("".join(text), generated)
                n_completion = timings.get("completion_tokens", 0)
                usage = {"prompt_tokens": len(tokens), "completion_tokens": n_completion,
                         "total_tokens": len(tokens) + n_completion}
                yield "", finish, usage, self._timings(timings, n_completion)
                return
            yield piece, None, None, None

    def _remember_reply(self, text, generated):
        """Keep the token ids of a reply whose text they decode to exactly (see encode_chat)."""
        stripped = text.strip()
        if not generated or not stripped or self.tokenizer.decode(generated) != text.encode("utf-8"):
            return
        if stripped != text:
            return  # the chat format strips content; only exact matches can be reused safely
        self._known_replies[stripped] = list(generated)
        self._known_replies.move_to_end(stripped)
        while len(self._known_replies) > 8:
            self._known_replies.popitem(last=False)

    @staticmethod
    def _timings(t, n_completion):
        prompt_ms = t.get("prompt_ms", 0.0)
        decode_ms = t.get("decode_ms", 0.0)
        n_eval = t.get("prompt_tokens_evaluated", 0)
        return {
            "prompt_ms": round(prompt_ms, 3),
            "prompt_tokens_evaluated": n_eval,
            "prompt_tok_s": round(n_eval / (prompt_ms / 1e3), 3) if prompt_ms > 0 else 0.0,
            "decode_ms": round(decode_ms, 3),
            "decode_tok_s": round(max(n_completion - 1, 0) / (decode_ms / 1e3), 3) if decode_ms > 0 else 0.0,
            "ttft_ms": round(t["ttft_ms"], 3) if t.get("ttft_ms") is not None else round(prompt_ms, 3),
        }

    def create_completion(self, prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                          repeat_penalty=1.1, seed=None, stop=None, json_schema=None, stream=False,
                          presence_penalty=0.0, frequency_penalty=0.0, truncate=False):
        sampling = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, seed, presence_penalty,
                                  frequency_penalty)
        tokens = self._prepare_prompt(prompt, max_tokens, truncate)
        gen = self._run(tokens, max_tokens, sampling, stop, json_schema)
        return assemble(gen, CompletionShape(self.name), stream)

    def create_chat_completion(self, messages, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95,
                               min_p=0.05, repeat_penalty=1.1, seed=None, stop=None, json_schema=None,
                               stream=False, presence_penalty=0.0, frequency_penalty=0.0, truncate=False):
        from edge_runtime.text.chat_format import encode_chat

        sampling = self._sampling(temperature, top_k, top_p, min_p, repeat_penalty, seed, presence_penalty,
                                  frequency_penalty)
        tokens = self._fit(encode_chat(self.tokenizer, messages, add_generation_prompt=True,
                                       known_replies=self._known_replies), max_tokens, truncate)
        gen = self._run(tokens, max_tokens, sampling, stop, json_schema)
        return assemble(gen, ChatShape(self.name), stream)

    def __call__(self, prompt, **kw):
        return self.create_completion(prompt, **kw)

    def info(self):
        c = self.config
        return {"path": self.path, "name": self.name, "kernel": self.kernel, "n_threads": self.n_threads,
                "n_ctx": self.n_ctx, "n_vocab": c.n_vocab, "dim": c.dim, "n_layers": c.n_layers,
                "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads, "ffn_dim": c.ffn_dim, "head_type": c.head_type,
                "state_bytes": self.state_bytes, "file_size": self.file_size}
