#!/usr/bin/env bash
# The test command: runs the suite against the INSTALLED package (pip install .), from outside the
# source tree so that the uncompiled sources cannot shadow the built extension.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
exec python3 -m pytest -q -p no:cacheprovider --rootdir "$here" "$here" "$@"
