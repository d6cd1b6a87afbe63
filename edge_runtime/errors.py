"""Exception types that reach users: a bad model file, or a runtime failure they can act on."""


class ModelFormatError(ValueError):
    """A model file (GGUF, safetensors, config) is malformed or not a model we can run.

    The message names the file, the field/tensor and what was expected.
    """


class EdgeRuntimeError(RuntimeError):
    """A user-facing failure that is not a malformed file (missing path, unwritable output, ...)."""


class ModelClosedError(EdgeRuntimeError):
    """The model was closed (Model.close()) before or during the call; it cannot run again."""
