"""JSON-schema constrained decoding (the implementation lives in edge_runtime.text.schema).

Kept as the import path used by the model, the services and the CLI.
"""

from edge_runtime.text.schema import (  # noqa: F401
    BudgetError, JsonSchema, JsonSchemaConstraint, SchemaError, canonical_json, check_schema,
    validate)

__all__ = ["JsonSchema", "JsonSchemaConstraint", "SchemaError", "BudgetError", "check_schema",
           "validate", "canonical_json"]
