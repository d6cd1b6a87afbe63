"""Build of edge-runtime: one Cython extension over the C sources in neon_kernels/.

Every kernel variant the target can run is compiled in (each file enables its own ISA with a
pragma) and the runtime picks one at start-up. A failed compile fails the build: there is no
pure-Python fallback.
"""
import glob
import os
import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# the hand-written kernels, then the engine's C core (forward pass, thread pool, dispatch, fp16)
ENGINE_CSRC = os.path.join("edge_runtime", "engine", "csrc")
C_SOURCES = sorted(glob.glob(os.path.join("neon_kernels", "*.c"))) + sorted(glob.glob(os.path.join(ENGINE_CSRC, "*.c")))

# the flags live in one place, shared with the kernel test driver
FLAGS = runpy.run_path(os.path.join(HERE, "edge_runtime", "engine", "build_flags.py"))
extra_compile_args = FLAGS["C_FLAGS"] + FLAGS["WARNING_FLAGS"]
if os.environ.get("EDGE_RUNTIME_DEBUG_BUILD"):
    extra_compile_args += ["-O0", "-g"]

ext = Extension(
    "edge_runtime.engine._engine",
    sources=["edge_runtime/engine/_engine.pyx"] + C_SOURCES,
    include_dirs=["neon_kernels", ENGINE_CSRC],
    # a changed header rebuilds the extension
    depends=sorted(glob.glob(os.path.join("neon_kernels", "*.h")) + glob.glob(os.path.join(ENGINE_CSRC, "*.h"))),
    extra_compile_args=extra_compile_args,
    extra_link_args=["-pthread", "-lm"],
)
# token masks for JSON-schema constrained decoding
mask_ext = Extension(
    "edge_runtime.text._mask",
    sources=["edge_runtime/text/_mask.pyx", "edge_runtime/text/csrc/er_mask.c"],
    include_dirs=["edge_runtime/text/csrc"],
    extra_compile_args=extra_compile_args,
)

setup(
    ext_modules=cythonize([ext, mask_ext], language_level=3, compiler_directives={"embedsignature": True}),
)
