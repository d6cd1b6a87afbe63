"""The engine: the compiled extension over the C forward pass, thread pool, kernel dispatch and fp16
conversion (csrc/), and the CPU facts the engine sizes itself by."""
