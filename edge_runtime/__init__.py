"""edge-runtime: run ternary (BitNet b1.58) language models on small boards, offline."""
from edge_runtime.errors import EdgeRuntimeError, ModelFormatError

__version__ = "0.1.0"
__all__ = ["Model", "JsonSchema", "ModelFormatError", "EdgeRuntimeError", "__version__"]


def __getattr__(name):
    # Model pulls in the compiled engine; importing it lazily keeps `convert` and friends usable
    # in environments that only need the file tools.
    if name == "Model":
        from edge_runtime.model.model import Model

        return Model
    if name == "JsonSchema":
        from edge_runtime.text.schema import JsonSchema

        return JsonSchema
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
