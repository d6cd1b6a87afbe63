"""Response shapes (llama-cpp-python's text_completion and chat.completion dicts) and the one
assembly that turns a generation into a stream of chunks or a single reply for either shape.

A generation yields (piece, finish, usage, timings): text pieces with finish None, then one final
tuple with the finish reason, the usage counts and the timings."""
import time
import uuid

from edge_runtime.errors import EdgeRuntimeError


class CompletionShape:
    def __init__(self, model_name):
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model_name

    def _head(self, obj):
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def opening(self):
        return None

    def piece(self, text):
        return {**self._head("text_completion"),
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]}

    def last(self, finish, usage, timings):
        return {**self._head("text_completion"),
                "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "timings": timings}

    def whole(self, text, finish, usage, timings):
        return {**self._head("text_completion"),
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "timings": timings}


class ChatShape(CompletionShape):
    def __init__(self, model_name):
        super().__init__(model_name)
        self.id = "chat" + self.id

    def opening(self):
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}

    def piece(self, text):
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}

    def last(self, finish, usage, timings):
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                "usage": usage, "timings": timings}

    def whole(self, text, finish, usage, timings):
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "timings": timings}


def assemble(gen, shape, stream):
    """A generator of chunks (stream) or the single reply dict, in `shape`."""
    if stream:
        def streamer():
            try:
                opening = shape.opening()
                if opening is not None:
                    yield opening
                for piece, finish, usage, timings in gen:
                    if finish is not None:
                        yield shape.last(finish, usage, timings)
                        return
                    if piece:
                        yield shape.piece(piece)
                raise EdgeRuntimeError("generation ended without a final state")
            finally:
                gen.close()
        return streamer()
    parts = []
    for piece, finish, usage, timings in gen:
        if finish is not None:
            return shape.whole("".join(parts), finish, usage, timings)
        parts.append(piece)
    raise EdgeRuntimeError("generation ended without a final state")
