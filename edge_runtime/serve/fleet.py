"""Fleet requests answered once: a claim on <prefix>/fleet/claim before generating.

The broker hands each message on the shared subscription $share/<group>/<prefix>/fleet/request to
one board, but the same request published twice (a client's retry, two clients with one id) may
reach two boards. So before a board runs a group request it publishes a claim
{"key": [reply topic, id], "device", "fp", "nonce"} (QoS 1) on the claim topic, which every board
of the group subscribes to, and waits for the claims to come back: the FIRST claim the broker
delivers for a key wins. A broker forwards the messages of one topic to every subscriber in the
order it received them (mosquitto does), so every board sees the same first claim and exactly
one runs the request; the others drop their copy (same fingerprint) or answer `duplicate` (a
different request reusing the id). Claims are remembered for CLAIM_WINDOW_S; a claim not seen
back within CLAIM_WAIT_S (broker trouble) lets the board serve its copy anyway.
"""
import collections
import json
import os
import threading
import time

CLAIM_WINDOW_S = 600.0           # a key claimed this recently is answered by its first claimant only
CLAIM_WAIT_S = 5.0               # longest wait for our own claim to come back before serving anyway
MAX_KEYS = 4096


def claim_key(reply_topic, request_id):
    return json.dumps([reply_topic, request_id], ensure_ascii=False, separators=(",", ":"))


class FleetClaims:
    """The claims seen on the claim topic and this board's requests waiting for theirs."""

    def __init__(self, device, window_s=CLAIM_WINDOW_S, wait_s=CLAIM_WAIT_S, max_keys=MAX_KEYS, clock=time.monotonic):
        self.device = device
        self.window_s, self.wait_s, self.max_keys = window_s, wait_s, max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._winners = collections.OrderedDict()   # key -> (device, fp, time)
        self._pending = {}                          # key -> (item, fp, nonce, time)

    def _prune(self, now):
        while self._winners:
            key, (_, _, seen) = next(iter(self._winners.items()))
            if now - seen <= self.window_s and len(self._winners) <= self.max_keys:
                break
            self._winners.popitem(last=False)

    def propose(self, key, fp, item):
        """A group request arrived. Returns ("claim", claim payload) when this board should claim it
        (the item waits), ("claimed", device, same) when a board already claimed the key, or
        ("waiting", self.device, same) when this board's own claim for the key is in flight."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            if key in self._winners:
                device, winner_fp, _ = self._winners[key]
                return ("claimed", device, winner_fp == fp)
            if key in self._pending:
                return ("waiting", self.device, self._pending[key][1] == fp)
            nonce = os.urandom(8).hex()
            self._pending[key] = (item, fp, nonce, now)
            return ("claim", {"key": json.loads(key), "device": self.device, "fp": fp, "nonce": nonce})

    def on_claim(self, obj):
        """A claim arrived (ours or another board's). Returns None, or (item, "serve") when our
        waiting item won, or (item, "lost", winner device, same fingerprint) when another board's
        claim came first."""
        if not (isinstance(obj, dict) and isinstance(obj.get("key"), list) and len(obj["key"]) == 2
                and isinstance(obj.get("device"), str) and isinstance(obj.get("fp"), str)
                and isinstance(obj.get("nonce"), str)):
            raise ValueError("a claim is {\"key\": [reply topic, id], \"device\", \"fp\", \"nonce\"}")
        key = claim_key(*obj["key"])
        now = self._clock()
        with self._lock:
            self._prune(now)
            if key in self._winners:
                return None          # a later claim: the first one stands
            self._winners[key] = (obj["device"], obj["fp"], now)
            waiting = self._pending.pop(key, None)
        if waiting is None:
            return None
        item, fp, nonce, _ = waiting
        if obj["device"] == self.device and obj["nonce"] == nonce:
            return (item, "serve")
        return (item, "lost", obj["device"], obj["fp"] == fp)

    def overdue(self):
        """Items whose claim did not come back within wait_s (serve them: at least once)."""
        now = self._clock()
        with self._lock:
            late = [key for key, (_, _, _, since) in self._pending.items() if now - since > self.wait_s]
            return [self._pending.pop(key)[0] for key in late]

    def drain(self):
        """Every waiting item (at shutdown)."""
        with self._lock:
            items = [entry[0] for entry in self._pending.values()]
            self._pending.clear()
            return items

    @property
    def waiting(self):
        return len(self._pending)
