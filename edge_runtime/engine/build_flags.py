"""The C compiler flags of the extension, defined once: setup.py compiles with them, and so does
the kernel test driver (tests/engine/test_kernels.py), so the tests check the code as shipped.
Plain data: setup.py reads this file before the package can be imported."""

# The project's flags. No fused multiply-add contraction: the same float rounding on x86 and ARM.
C_FLAGS = ["-O3", "-std=c11", "-pthread", "-ffp-contract=off", "-fno-math-errno"]
WARNING_FLAGS = ["-Wall", "-Wno-unused-function"]
# What setuptools adds before them from the Python build's configuration (sysconfig OPT, the same on
# CPython's own builds and Debian's python3): a build outside setuptools must add them too.
PYTHON_BUILD_FLAGS = ["-DNDEBUG", "-fwrapv", "-O3"]
