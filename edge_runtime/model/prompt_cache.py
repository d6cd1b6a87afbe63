"""A prompt cache of several KV snapshots keyed by token prefix, LRU within a byte budget, kept in
memory and (optionally) mirrored to a directory so a restart is warm.

A snapshot holds the f16 K and V rows of positions [0, n) of a prompt, every layer. Row p depends
only on tokens[0..p], so any prefix of a snapshot is valid for a prompt that shares it: a lookup
returns the entry with the longest common prefix and the engine continues from there, bit for bit
as if it had evaluated the prefix itself.

Snapshot file (`<model id>-<tokens digest>.erkv`, written to a temporary name, fsynced, renamed):

    offset 0   "ERKV"  magic
           4   u32     format version (SNAPSHOT_VERSION)
           8   u32     header length H
          12   u32     CRC-32 of the header bytes
          16   u64     data length D
          24   H bytes header, UTF-8 JSON: runtime, model identity (size, mtime_ns, digest of the
                       first and last MiB), n_layers, kv_dim, n_tokens, tokens, data_crc32
               pad     zeros up to a multiple of 64
               D bytes K (n_layers, n_tokens, kv_dim) then V, little-endian f16

All integers little-endian. A file whose header, identity, shape, length or data CRC does not
match is never used: it is skipped with a log line (and deleted when it names this model).
At start the headers are read; a background thread then maps (read-only) and checks the data of the
newest snapshots within the budget, so the first request after a restart finds them in memory (a
request that needs one still being read waits for that read rather than starting its own).
"""
import collections
import contextlib
import hashlib
import json
import logging
import mmap
import os
import queue
import struct
import threading
import zlib

import numpy as np

log = logging.getLogger("edge_runtime.model.prompt_cache")

MAGIC = b"ERKV"
SNAPSHOT_VERSION = 1
SUFFIX = ".erkv"
_PREFIX = struct.Struct("<4sIIIQ")
_ALIGN = 64
_ID_SPAN = 1 << 20  # bytes hashed at each end of the model file
DEFAULT_MIN_TOKENS = 32
CRC_CHUNK = 8 << 20  # bytes checksummed between two looks at waiting requests (preload)
DEFAULT_CACHE_MB = 512  # budget when neither the caller nor a board config gives one


def model_identity(path):
    """What ties a snapshot to one model file: size, mtime and a digest of its first and last MiB."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(_ID_SPAN))
        if st.st_size > 2 * _ID_SPAN:
            f.seek(st.st_size - _ID_SPAN)
        h.update(f.read(_ID_SPAN))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": h.hexdigest()}


def runtime_tag():
    from edge_runtime import __version__

    return f"edge-runtime {__version__} kv-f16"


def common_prefix(a, b):
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Entry:
    __slots__ = ("tokens", "k", "v", "path", "nbytes", "load_lock", "wanted")

    def __init__(self, tokens, k=None, v=None, path=None, nbytes=0):
        self.tokens, self.k, self.v, self.path, self.nbytes = tuple(tokens), k, v, path, nbytes
        self.load_lock = threading.Lock()  # one read of the file at a time
        self.wanted = False                # a request waits for this entry's read


class PromptCache:
    """Snapshots of prompts' KV rows for one model. `n_layers`/`kv_dim` give the row shape;
    `budget_bytes` bounds the snapshots' total size (memory and directory alike); prompts whose new
    part (beyond the best existing entry) is shorter than `min_tokens` are not stored."""

    def __init__(self, n_layers, kv_dim, budget_bytes, directory=None, model_path=None,
                 min_tokens=DEFAULT_MIN_TOKENS):
        if budget_bytes < 0:
            raise ValueError(f"prompt cache budget must be >= 0 bytes, got {budget_bytes}")
        self.n_layers, self.kv_dim = int(n_layers), int(kv_dim)
        self.budget_bytes = int(budget_bytes)
        self.min_tokens = max(1, int(min_tokens))
        self.directory = os.fspath(directory) if directory is not None else None
        self._entries = collections.OrderedDict()  # tokens -> _Entry, least recently used first
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._writes = None
        self._closing = False
        self._demand = 0                   # requests running their prompts (the preload waits)
        self._demand_cv = threading.Condition()
        self._preloader = None
        self.preloaded = threading.Event()  # set once the snapshots found at start are in memory
        if self.directory is not None:
            if model_path is None:
                raise ValueError("a prompt cache directory needs the model path (snapshots are tied to it)")
            os.makedirs(self.directory, exist_ok=True)
            self.identity = model_identity(model_path)
            self.runtime = runtime_tag()
            self._id_prefix = self.identity["digest"][:12]
            self._writes = queue.Queue()
            self._writer = threading.Thread(target=self._write_loop, name="edge-runtime-prompt-cache",
                                            daemon=True)
            self._writer.start()
            self._scan()
            if self._entries:
                self._preloader = threading.Thread(target=self._preload, name="edge-runtime-prompt-preload",
                                                   daemon=True)
                self._preloader.start()
        if self._preloader is None:
            self.preloaded.set()

    # -- sizes -----------------------------------------------------------------------------------
    def row_bytes(self):
        return 2 * self.n_layers * self.kv_dim * 2  # K and V, f16

    @property
    def used_bytes(self):
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self):
        return len(self._entries)

    # -- lookup and store ------------------------------------------------------------------------
    @contextlib.contextmanager
    def demand(self):
        """Held while a request runs its prompt: the preload of the snapshots found at start waits
        (between checksum chunks) so that the two cores go to the request, unless the request
        waits for the very snapshot being read."""
        with self._demand_cv:
            self._demand += 1
        try:
            yield
        finally:
            with self._demand_cv:
                self._demand -= 1
                self._demand_cv.notify_all()

    def _yield_to_requests(self, entry):
        with self._demand_cv:
            while self._demand and not entry.wanted and not self._closing:
                self._demand_cv.wait(0.05)

    def lookup(self, tokens):
        """(n, k, v): the longest cached prefix of tokens with its K/V rows (n_layers, >= n, kv_dim),
        or (0, None, None)."""
        while True:
            with self._lock:
                best, n = None, 0
                for entry in self._entries.values():
                    c = common_prefix(entry.tokens, tokens)
                    if c > n:
                        best, n = entry, c
                if best is None:
                    self.misses += 1
                    return 0, None, None
                self._entries.move_to_end(best.tokens)
            if best.k is None:
                with self._demand_cv:
                    best.wanted = True     # the preload, if reading it, goes on for this request
                    self._demand_cv.notify_all()
            if best.k is None and not self._load(best):
                continue  # the file was bad and is forgotten: try the next best
            self.hits += 1
            return n, best.k, best.v

    def wants(self, tokens):
        """Whether storing tokens would add at least min_tokens rows beyond what is cached."""
        if len(tokens) < self.min_tokens or len(tokens) * self.row_bytes() > self.budget_bytes:
            return False
        with self._lock:
            best = max((common_prefix(e.tokens, tokens) for e in self._entries.values()), default=0)
        return len(tokens) - best >= self.min_tokens

    def store(self, tokens, k, v):
        """Keep the K/V rows (n_layers, len(tokens), kv_dim) of tokens; entries that are prefixes of
        tokens are dropped, then least recently used ones until the budget holds."""
        tokens = tuple(int(t) for t in tokens)
        expected = (self.n_layers, len(tokens), self.kv_dim)
        if k.shape != expected or v.shape != expected:
            raise ValueError(f"snapshot rows {k.shape}/{v.shape}, expected {expected}")
        entry = _Entry(tokens, k, v, nbytes=k.nbytes + v.nbytes)
        if entry.nbytes > self.budget_bytes:
            return False
        dropped = []
        with self._lock:
            for key in [key for key in self._entries if common_prefix(key, tokens) == len(key)]:
                dropped.append(self._entries.pop(key))
            while self._entries and sum(e.nbytes for e in self._entries.values()) + entry.nbytes > self.budget_bytes:
                dropped.append(self._entries.popitem(last=False)[1])
            self._entries[tokens] = entry
        if self._writes is not None:
            entry.path = os.path.join(self.directory, f"{self._id_prefix}-{_digest(tokens)}{SUFFIX}")
            self._writes.put(("write", entry))
            for old in dropped:
                if old.path is not None and old.path != entry.path:
                    self._writes.put(("delete", old))
        return True

    def flush(self):
        """Wait until every snapshot handed to the directory is on disk."""
        if self._writes is not None:
            self._writes.join()

    def close(self):
        self._closing = True
        with self._demand_cv:
            self._demand_cv.notify_all()
        if self._preloader is not None:
            self._preloader.join(30.0)
        if self._writes is not None:
            self.flush()
            self._writes.put(None)
            self._writer.join(10.0)
            self._writes = None

    # -- the directory ---------------------------------------------------------------------------
    def _write_loop(self):
        while True:
            item = self._writes.get()
            try:
                if item is None:
                    return
                op, entry = item
                if op == "write":
                    self._write(entry)
                else:
                    _remove(entry.path)
            except Exception:  # a full disk must not stop serving: the entry stays in memory
                log.exception("prompt cache: writing %s failed", getattr(item[1], "path", "?"))
            finally:
                self._writes.task_done()

    def _header(self, entry, data_crc):
        return json.dumps({"runtime": self.runtime, "model": self.identity, "n_layers": self.n_layers,
                           "kv_dim": self.kv_dim, "n_tokens": len(entry.tokens), "tokens": list(entry.tokens),
                           "data_crc32": data_crc}, separators=(",", ":")).encode("utf-8")

    def _write(self, entry):
        k = np.ascontiguousarray(entry.k, dtype="<u2")
        v = np.ascontiguousarray(entry.v, dtype="<u2")
        data_crc = zlib.crc32(v, zlib.crc32(k))
        header = self._header(entry, data_crc)
        pad = -(_PREFIX.size + len(header)) % _ALIGN
        tmp = f"{entry.path}.tmp.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(_PREFIX.pack(MAGIC, SNAPSHOT_VERSION, len(header), zlib.crc32(header), k.nbytes + v.nbytes))
                f.write(header)
                f.write(b"\0" * pad)
                f.write(memoryview(k).cast("B"))
                f.write(memoryview(v).cast("B"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, entry.path)
        except BaseException:
            _remove(tmp)
            raise
        _fsync_dir(self.directory)

    def _crc32(self, data, entry=None):
        """The CRC-32 of data in chunks (the pages fault in outside the GIL); for the preload (entry
        given) it pauses between chunks while requests run their prompts."""
        crc = 0
        for i in range(0, len(data), CRC_CHUNK):
            if entry is not None:
                self._yield_to_requests(entry)
            crc = zlib.crc32(data[i:i + CRC_CHUNK], crc)
        return crc

    def _read_header(self, path):
        """The header dict of a snapshot file and its data offset, or a reason it is unusable."""
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                prefix = f.read(_PREFIX.size)
                if len(prefix) < _PREFIX.size:
                    return None, "truncated before the header"
                magic, version, hlen, hcrc, dlen = _PREFIX.unpack(prefix)
                if magic != MAGIC:
                    return None, "not a snapshot (bad magic)"
                if version != SNAPSHOT_VERSION:
                    return None, f"format version {version}, this runtime reads {SNAPSHOT_VERSION}"
                if hlen > 64 << 20:
                    return None, f"header length {hlen} is implausible"
                raw = f.read(hlen)
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        if len(raw) != hlen or zlib.crc32(raw) != hcrc:
            return None, "header truncated or corrupt (CRC mismatch)"
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None, "header is not JSON"
        offset = _PREFIX.size + hlen + (-(_PREFIX.size + hlen) % _ALIGN)
        if header.get("model") != self.identity:
            return None, "foreign: made for another model file"
        if header.get("runtime") != self.runtime:
            return None, f"made by {header.get('runtime')!r}, this is {self.runtime!r}"
        tokens = header.get("tokens")
        n = header.get("n_tokens")
        if (header.get("n_layers") != self.n_layers or header.get("kv_dim") != self.kv_dim
                or not isinstance(tokens, list) or n != len(tokens) or n < 1
                or not all(isinstance(t, int) and t >= 0 for t in tokens)):
            return None, "shape or token list does not match this model"
        if dlen != n * self.row_bytes() or size != offset + dlen:
            return None, f"truncated or padded: {size} bytes, expected {offset + n * self.row_bytes()}"
        return (header, offset), None

    def _scan(self):
        """Index this model's snapshots (headers only), oldest first, within the budget."""
        found = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if ".tmp." in name and name.split(".tmp.")[0].endswith(SUFFIX):
                if name.startswith(self._id_prefix) and not _pid_alive(name):
                    _remove(path)  # left behind by a write that did not finish
                continue
            if not name.endswith(SUFFIX):
                continue
            got, why = self._read_header(path)
            if got is None:
                log.warning("prompt cache: ignoring %s: %s", path, why)
                if name.startswith(self._id_prefix) and not why.startswith("foreign"):
                    _remove(path)
                continue
            header, _ = got
            found.append((os.path.getmtime(path), tuple(header["tokens"]), path))
        found.sort()
        total = 0
        for _, tokens, path in reversed(found):  # the newest win the budget
            nbytes = len(tokens) * self.row_bytes()
            if total + nbytes > self.budget_bytes:
                log.info("prompt cache: %s is over the %d-byte budget; removing it", path, self.budget_bytes)
                _remove(path)
                continue
            total += nbytes
            self._entries[tokens] = _Entry(tokens, path=path, nbytes=nbytes)
            self._entries.move_to_end(tokens, last=False)
        if self._entries:
            log.info("prompt cache: %d snapshot(s) of this model in %s (%.1f MiB)", len(self._entries),
                     self.directory, total / 2**20)

    def _preload(self):
        """Read the snapshots found at start into memory, the most recently written first, giving way
        to requests (``demand``): one that arrives meanwhile reads its own snapshot and runs its
        prompt without this thread's checksums competing for the cores."""
        try:
            with self._lock:
                pending = list(reversed(self._entries.values()))
            for entry in pending:
                if self._closing:
                    return
                with self._lock:
                    current = self._entries.get(entry.tokens) is entry
                if current:  # not dropped since the start
                    self._yield_to_requests(entry)
                    self._load(entry, background=True)
        except Exception:  # noqa: BLE001 - a failed preload only leaves the reads to first use
            log.exception("prompt cache: preloading the snapshots failed")
        finally:
            self.preloaded.set()

    def _load(self, entry, background=False):
        """Read and check a snapshot's data once (a concurrent caller waits for that read); a bad one
        is forgotten (and its file removed). Returns whether the entry's rows are in memory."""
        with entry.load_lock:
            if entry.k is not None:
                return True
            if entry.path is None:
                return False
            return self._read_entry(entry, background)

    def _read_entry(self, entry, background=False):
        got, why = self._read_header(entry.path)
        data = None
        if got is not None:
            header, offset = got
            try:
                data = _map_data(entry.path, offset)
            except (OSError, ValueError) as exc:
                why = f"unreadable ({getattr(exc, 'strerror', None) or exc})"
            else:
                if tuple(header["tokens"]) != entry.tokens:
                    why = "its tokens changed since the start"
                elif len(data) != len(entry.tokens) * self.row_bytes() or \
                        self._crc32(data, entry if background else None) != header["data_crc32"]:
                    why = "data truncated or corrupt (CRC mismatch)"
                else:
                    why = None
        if why is not None:
            log.warning("prompt cache: ignoring %s: %s", entry.path, why)
            with self._lock:
                self._entries.pop(entry.tokens, None)
            _remove(entry.path)
            return False
        rows = np.frombuffer(data, dtype="<u2").reshape(2, self.n_layers, len(entry.tokens), self.kv_dim)
        entry.k, entry.v = rows[0], rows[1]
        return True


def _map_data(path, offset):
    """The data part of a snapshot file, mapped read-only: no copy into the heap, which halves the
    time of the first request after a restart; the pages fault in during the checksum, outside the
    GIL. A snapshot is only ever replaced by a rename and removed by an unlink, so the mapped pages
    stay valid."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= offset:
            return memoryview(b"")
        mm = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    return memoryview(mm)[offset:]


def _digest(tokens):
    return hashlib.blake2b(np.asarray(tokens, dtype="<u4").tobytes(), digest_size=10).hexdigest()


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("prompt cache: cannot remove %s: %s", path, exc.strerror or exc)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(tmp_name):
    try:
        pid = int(tmp_name.split(".tmp.")[1].split(".")[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
