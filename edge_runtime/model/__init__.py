"""The model: the one public entry to generation."""
from edge_runtime.model.model import Model

__all__ = ["Model"]
