"""The whole process stays within file + run state (KV cache and scratch) + 64 MiB. The model here
has the real 128256-token Llama-3 vocabulary (what the tokenizer tables cost grows with) on a small
body, so the 64 MiB of everything else is what is measured: Python, numpy, the tokenizer tables
and whatever loading leaves behind. Tables of Python objects (~70 MiB for this vocabulary) fail it.

The same measurement on the 2B4T shape (1.19 GB file) is the command in README's Benchmarks section.
"""
import json
import os
import subprocess
import sys

import pytest
from conftest import TESTS_DIR, subprocess_env

OVERHEAD_MIB = 64

MEASURE = r"""
import json, sys
from edge_runtime.model.model import Model
model = Model(sys.argv[1], n_ctx=512, n_threads=1)
model.create_chat_completion([{"role": "user", "content": "Turn on the kitchen light, please. " * 6}],
                             max_tokens=16, temperature=0)
# VmHWM, not ru_maxrss: the latter keeps the RSS of the pytest process this child was forked from
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak": hwm * 1024,
                  "state": model.state_bytes, "tables": model.tokenizer.table_nbytes}))
"""


@pytest.fixture(scope="module")
def llama3_vocab_model(tmp_path_factory):
    from edge_runtime.formats.random_model import write_random_model
    from edge_runtime.text.tokenizer import Tokenizer

    tok = Tokenizer.from_tokenizer_json(os.path.join(TESTS_DIR, "data", "llama3-tokenizer.json.xz"),
                                        bos_id=128000, eos_id=128001, eot_id=128009)
    path = tmp_path_factory.mktemp("budget") / "llama3-vocab.gguf"
    return write_random_model(str(path), shape="tiny", head="q8_0", tokenizer=tok)


def test_peak_rss_within_file_plus_state_plus_64_mib(llama3_vocab_model):
    proc = subprocess.run([sys.executable, "-c", MEASURE, llama3_vocab_model], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    file_size = os.path.getsize(llama3_vocab_model)
    budget = file_size + m["state"] + OVERHEAD_MIB * 2**20
    mib = 2**20
    print(f"peak RSS {m['peak'] / mib:.1f} MiB; budget: file {file_size / mib:.1f} + state {m['state'] / mib:.1f} "
          f"+ {OVERHEAD_MIB} = {budget / mib:.1f} MiB; tokenizer tables {m['tables'] / mib:.1f} MiB")
    assert m["peak"] <= budget
    assert m["tables"] < 16 * mib  # flat arrays: bytes of 128256 tokens, 280k merges
