"""GGUF v2/v3 files: the vocabulary of types (types.py), a validating memory-mapped reader
(reader.py), an atomic streaming writer (writer.py) and the block codecs (codecs.py) the runtime
and the converter need. Everything is importable from here."""

from edge_runtime.formats.gguf.types import (  # noqa: F401
    _BLOCK_LAYOUT, DEFAULT_ALIGNMENT, GGUF_MAGIC, I2S_GROUP, I2S_TRAILER, MAX_ARRAY_NESTING, MAX_DIMS,
    Q4_0_BLOCK, Q8_0_BLOCK, SUPPORTED_VERSIONS, TQ1_0_BLOCK, TQ1_CHUNK, TQ1_TRAILER, TQ2_0_BLOCK, GGMLType, TensorInfo,
    ValueType, ValueTypeSpec, tensor_nbytes, tq1_row_bytes, type_name,
)
from edge_runtime.formats.gguf.reader import GGUFReader, StringArray  # noqa: F401
from edge_runtime.formats.gguf.writer import GGUFWriter, TensorData, infer_value_type  # noqa: F401
from edge_runtime.formats.gguf.codecs import (  # noqa: F401
    bf16_to_f32, dequantize, dequantize_q4_0, dequantize_q8_0, encode_f16, i2s_scale, pack_i2s, quantize,
    quantize_q4_0, quantize_q8_0, ternary_to_tq1_0, ternary_to_tq2_0, tq1_0_to_ternary, tq2_0_to_ternary, unpack_i2s,
    pack_tq1, unpack_tq1, tq1_scale, ternary_scale, pack_ternary, unpack_ternary,
)
