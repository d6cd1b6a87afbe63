"""Model files: GGUF reading and writing, the tensor codecs, model-file checks, conversion."""
