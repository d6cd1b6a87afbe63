"""The kernel case table: seeded inputs with odd shapes and extreme values, their binary
encoding for tests/kernel_driver.c, and a numpy reference for every op.

The numpy reference does the integer math exactly (int64) and the float rounding steps of the
quantizers with the same f32 operations as the C reference, so integer results and quantized
activations are compared bit for bit; float head outputs are compared against a float64 value
within FLOAT_RTOL of the sum of the absolute products (see `float_bound`, `q8_0_abs_terms`).
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np

from edge_runtime.engine import _engine

(OP_QUANT_I8, OP_I2S_GEMV, OP_I2S_GEMM, OP_F16_GEMV, OP_QUANT_Q8_0, OP_Q8_0_GEMV, OP_Q4_0_GEMV,
 OP_TQ1_GEMV, OP_TQ1_GEMM, OP_Q8_0_GEMM) = range(1, 11)
OP_NAMES = {
    OP_QUANT_I8: "quantize_row_i8",
    OP_I2S_GEMV: "i2s_gemv",
    OP_I2S_GEMM: "i2s_gemm",
    OP_F16_GEMV: "f16_gemv",
    OP_QUANT_Q8_0: "quantize_row_q8_0",
    OP_Q8_0_GEMV: "q8_0_gemv",
    OP_Q4_0_GEMV: "q4_0_gemv",
    OP_TQ1_GEMV: "tq1_gemv",
    OP_TQ1_GEMM: "tq1_gemm",
    OP_Q8_0_GEMM: "q8_0_gemm",
}
CASES_HEADER = struct.Struct("<8i")  # op, p0..p4, 0, 0
GEMM_OUT_FILL = 0x5A5A5A5A  # the driver's fill of i2s_gemm outputs; untouched entries keep it
# A float head output may differ from the float64 value of the exact sum by this fraction of the
# sum of the absolute products (for Q8_0/Q4_0, |d_w d_x| times each block's absolute products):
# the reference and every variant accumulate in f32, in different orders and lane splits.
FLOAT_RTOL = 2e-6

# the block layouts of neon_kernels/er_kernels.h, as the engine reports them (sizeof of its structs)
_QK8_0, _Q8_0_BYTES = _engine.BLOCK_LAYOUTS[_engine.GGML_TYPE_Q8_0]
_QK4_0, _Q4_0_BYTES = _engine.BLOCK_LAYOUTS[_engine.GGML_TYPE_Q4_0]
BLOCK_Q8_0 = np.dtype([("d", "<u2"), ("qs", "i1", (_QK8_0,))])
BLOCK_Q4_0 = np.dtype([("d", "<u2"), ("qs", "u1", (_QK4_0 // 2,))])
assert BLOCK_Q8_0.itemsize == _Q8_0_BYTES and BLOCK_Q4_0.itemsize == _Q4_0_BYTES


@dataclasses.dataclass(frozen=True)
class Case:
    """One kernel call: its header parameters, its input arrays in file order, and what the
    numpy reference says every variant must return."""

    name: str
    op: int
    params: tuple[int, ...]
    inputs: tuple[np.ndarray, ...]
    expected: dict[str, np.ndarray]
    exact: bool = True  # float outputs compared bit for bit (every float step is exact)

    def encode(self) -> bytes:
        header = list(self.params) + [0] * (7 - len(self.params))
        return CASES_HEADER.pack(self.op, *header) + b"".join(
            np.ascontiguousarray(a).tobytes() for a in self.inputs
        )


# ---- numpy reference ------------------------------------------------------------------------

def quantize_row_i8(x: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """s = 127 / max(max|x|, 1e-5) in f32; q = clamp(round_half_even(x * s)) as int8."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x)) if x.size else np.float32(0)
    amax = max(np.float32(amax), np.float32(1e-5))
    s = np.float32(127.0) / np.float32(amax)
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int8)
    return np.float32(s), q


def pack_i2s(codes: np.ndarray) -> np.ndarray:
    """codes (rows, k) in 0..3 -> I2_S bytes (rows, k / 4): in each 128-weight group, byte j
    holds weight j at bits 7:6, j+32 at 5:4, j+64 at 3:2 and j+96 at 1:0."""
    rows, k = codes.shape
    c = codes.astype(np.uint8).reshape(rows, k // 128, 4, 32)
    packed = (c[:, :, 0] << 6) | (c[:, :, 1] << 4) | (c[:, :, 2] << 2) | c[:, :, 3]
    return packed.reshape(rows, k // 4)


TQ1_CHUNK = 160  # weights per 32-byte TQ1_S chunk: five strips of 32
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int64)


def tq1_row_bytes(k: int) -> int:
    return -(-k // TQ1_CHUNK) * 32


def pack_tq1(codes: np.ndarray) -> np.ndarray:
    """codes (rows, k) in 0..2 -> TQ1_S bytes (rows, tq1_row_bytes(k)): byte j of chunk c holds
    the codes c_p of weights 160c + 32p + j as ceil(256 * sum_p c_p 3^(4-p) / 243); the strips
    past k in the last chunk are code 1."""
    rows, k = codes.shape
    n_chunks = -(-k // TQ1_CHUNK)
    full = np.ones((rows, n_chunks * TQ1_CHUNK), np.int64)
    full[:, :k] = codes
    v = (full.reshape(rows, n_chunks, 5, 32) * _POW3[None, None, :, None]).sum(axis=2)
    return ((v * 256 + 242) // 243).astype(np.uint8).reshape(rows, n_chunks * 32)


def unpack_tq1(packed: np.ndarray, k: int) -> np.ndarray:
    """TQ1_S bytes (rows, tq1_row_bytes(k)) -> codes (rows, k): code p of a byte is the top
    base-3 digit of byte * 3^p mod 256, i.e. ((byte * 3^p mod 256) * 3) >> 8."""
    rows = packed.shape[0]
    b = packed.reshape(rows, -1, 1, 32).astype(np.int64)
    m = (b * _POW3[::-1][None, None, :, None]) % 256
    return ((m * 3) >> 8).reshape(rows, -1)[:, :k].astype(np.uint8)


def ternary_matmul(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(codes - 1) @ q in exact integer math; q (k,) or (n_tok, k) -> (rows,) or (n_tok, rows)."""
    w = codes.astype(np.int64) - 1
    out = q.astype(np.int64) @ w.T
    assert np.all(np.abs(out) < 2**31)
    return out.astype(np.int32)


def quantize_row_q8_0(x: np.ndarray) -> np.ndarray:
    """Blocks of 32: d = amax / 127 (f32), id = 1 / d (0 when d == 0), q = round_half_even(x * id);
    d stored as fp16 bits (round half to even)."""
    xb = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    amax = np.max(np.abs(xb), axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.clip(np.rint(xb * inv[:, None]), -128, 127).astype(np.int8)
    out = np.zeros(xb.shape[0], dtype=BLOCK_Q8_0)
    out["d"] = d.astype(np.float16).view(np.uint16)
    out["qs"] = q
    return out


def half(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float64)


def q8_0_terms(w: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Per-block terms d_w * d_x * sum(w_q * x_q), float64, shape (rows, blocks)."""
    isum = np.einsum("rbj,bj->rb", w["qs"].astype(np.int64), xq["qs"].astype(np.int64))
    return half(w["d"]) * half(xq["d"])[None, :] * isum


def q8_0_abs_terms(w: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """|d_w * d_x| * sum(|w_q * x_q|) per block: a SIMD kernel may sum a block's products in
    partial lanes and round each, so its error scales with these, not with the block's sum."""
    asum = np.einsum("rbj,bj->rb", np.abs(w["qs"].astype(np.int64)), np.abs(xq["qs"].astype(np.int64)))
    return np.abs(half(w["d"]) * half(xq["d"])[None, :]) * asum


def q4_0_values(w: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (rows, blocks) -> int weights (rows, blocks, 32): byte j holds weight j in the
    low nibble and weight j + 16 in the high nibble, value = nibble - 8."""
    lo = (w["qs"] & 0x0F).astype(np.int64) - 8
    hi = (w["qs"] >> 4).astype(np.int64) - 8
    return np.concatenate([lo, hi], axis=-1)


def q4_0_terms(w: np.ndarray, xq: np.ndarray) -> np.ndarray:
    isum = np.einsum("rbj,bj->rb", q4_0_values(w), xq["qs"].astype(np.int64))
    return half(w["d"]) * half(xq["d"])[None, :] * isum


def q4_0_abs_terms(w: np.ndarray, xq: np.ndarray) -> np.ndarray:
    asum = np.einsum("rbj,bj->rb", np.abs(q4_0_values(w)), np.abs(xq["qs"].astype(np.int64)))
    return np.abs(half(w["d"]) * half(xq["d"])[None, :]) * asum


def float_bound(terms: np.ndarray) -> np.ndarray:
    """Allowed |got - exact| per output row for float head results."""
    return FLOAT_RTOL * np.sum(np.abs(terms), axis=-1) + 1e-30


# ---- case builders --------------------------------------------------------------------------

def _quant_i8_case(name: str, x: np.ndarray) -> Case:
    x = np.asarray(x, dtype=np.float32)
    s, q = quantize_row_i8(x)
    return Case(name, OP_QUANT_I8, (x.size,), (x,), {"s": np.array([s], np.float32), "q": q})


def _gemv_case(name: str, codes: np.ndarray, q: np.ndarray) -> Case:
    rows, k = codes.shape
    q = np.asarray(q, dtype=np.int8)
    return Case(name, OP_I2S_GEMV, (rows, k), (pack_i2s(codes), q), {"out": ternary_matmul(codes, q)})


def _gemm_case(name: str, codes: np.ndarray, q: np.ndarray, ldq: int, ldo: int, rng) -> Case:
    rows, k = codes.shape
    n_tok = q.shape[0]
    qbuf = rng.integers(-128, 128, size=(n_tok, ldq), dtype=np.int8)  # padding must be ignored
    qbuf[:, :k] = q
    out = np.full((n_tok, ldo), GEMM_OUT_FILL, dtype=np.uint32).view(np.int32)
    out[:, :rows] = ternary_matmul(codes, q)
    return Case(name, OP_I2S_GEMM, (rows, k, n_tok, ldq, ldo), (pack_i2s(codes), qbuf), {"out": out})


def _tq1_gemv_case(name: str, packed: np.ndarray, k: int, q: np.ndarray) -> Case:
    rows = packed.shape[0]
    q = np.asarray(q, dtype=np.int8)
    return Case(name, OP_TQ1_GEMV, (rows, k), (packed, q), {"out": ternary_matmul(unpack_tq1(packed, k), q)})


def _tq1_gemm_case(name: str, packed: np.ndarray, k: int, q: np.ndarray, ldq: int, ldo: int, rng) -> Case:
    case = _gemm_case(name, unpack_tq1(packed, k), q, ldq, ldo, rng)
    return dataclasses.replace(case, op=OP_TQ1_GEMM, inputs=(packed, case.inputs[1]))


def _tq1_bytes(rng, rows: int, k: int, kind: str) -> np.ndarray:
    """'codes': packed random codes; 'bytes': every byte value, the 13 no writer emits included
    (the kernels must decode them as the reference does)."""
    if kind == "codes":
        return pack_tq1(rng.integers(0, 3, size=(rows, k), dtype=np.uint8))
    return rng.integers(0, 256, size=(rows, tq1_row_bytes(k)), dtype=np.uint8)


def _f16_case(name: str, w: np.ndarray, x: np.ndarray, exact: bool = False) -> Case:
    w = np.asarray(w, dtype=np.float16)
    x = np.asarray(x, dtype=np.float32)
    terms = w.astype(np.float64) * x.astype(np.float64)[None, :]
    return Case(name, OP_F16_GEMV, w.shape, (w.view(np.uint16), x),
                {"out": terms.sum(axis=1), "bound": float_bound(terms)}, exact)


def _q8_0_quant_case(name: str, x: np.ndarray) -> Case:
    x = np.asarray(x, dtype=np.float32)
    return Case(name, OP_QUANT_Q8_0, (x.size,), (x,), {"blocks": quantize_row_q8_0(x)})


def _head_case(name: str, op: int, w: np.ndarray, xq: np.ndarray, exact: bool = False) -> Case:
    rows, nb = w.shape
    terms = q8_0_terms(w, xq) if op == OP_Q8_0_GEMV else q4_0_terms(w, xq)
    abs_terms = q8_0_abs_terms(w, xq) if op == OP_Q8_0_GEMV else q4_0_abs_terms(w, xq)
    return Case(name, op, (rows, nb * 32), (w, xq),
                {"out": terms.sum(axis=1), "bound": float_bound(abs_terms)}, exact)


def _head_gemm_case(name: str, w: np.ndarray, xq: np.ndarray, ldo: int) -> Case:
    """Several tokens' Q8_0 head at once: xq (n_tok, blocks), out (n_tok, ldo)."""
    rows, nb = w.shape
    terms = np.stack([q8_0_terms(w, x) for x in xq])  # (n_tok, rows, blocks)
    abs_terms = np.stack([q8_0_abs_terms(w, x) for x in xq])
    return Case(name, OP_Q8_0_GEMM, (rows, nb * 32, len(xq), ldo), (w, xq),
                {"out": terms.sum(axis=2), "bound": float_bound(abs_terms), "ldo": ldo})


def _codes(rng, rows: int, k: int, with_threes: bool = True) -> np.ndarray:
    codes = rng.integers(0, 3, size=(rows, k), dtype=np.uint8)
    if with_threes:  # 3 never appears in a valid file; every variant must read it as +2
        codes[rng.random((rows, k)) < 0.05] = 3
    return codes


def _blocks_q8_0(rng, rows: int, nb: int, d: np.ndarray | None = None) -> np.ndarray:
    b = np.zeros((rows, nb), dtype=BLOCK_Q8_0)
    b["qs"] = rng.integers(-128, 128, size=(rows, nb, 32), dtype=np.int8)
    if d is None:
        d = rng.uniform(1e-3, 0.1, size=(rows, nb))
    b["d"] = np.asarray(d, dtype=np.float16).view(np.uint16)
    return b


def _blocks_q4_0(rng, rows: int, nb: int, d: np.ndarray | None = None) -> np.ndarray:
    b = np.zeros((rows, nb), dtype=BLOCK_Q4_0)
    b["qs"] = rng.integers(0, 256, size=(rows, nb, 16), dtype=np.uint8)
    if d is None:
        d = rng.uniform(1e-3, 0.1, size=(rows, nb))
    b["d"] = np.asarray(d, dtype=np.float16).view(np.uint16)
    return b


def build_cases(seed: int = 20250) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases: list[Case] = []

    # -- activation quantization: lengths with SIMD tails, ties, tiny values, zeros
    for n in (1, 7, 31, 33, 100, 2560):
        cases.append(_quant_i8_case(f"i8 normal n={n}", rng.normal(0, 2.0, n)))
    # amax 127 makes s exactly 1, so x = m + 0.5 are exact ties: round half to even
    ties = np.concatenate([[127.0], np.arange(-40, 40) + 0.5, [-127.0, 126.5, -126.5, -0.5, 0.5]])
    cases.append(_quant_i8_case("i8 ties n=86", rng.permutation(ties)))
    cases.append(_quant_i8_case("i8 ties n=2560", np.resize(ties, 2560)))
    cases.append(_quant_i8_case("i8 tiny below 1e-5 n=33", rng.uniform(-9e-6, 9e-6, 33)))
    tiny = rng.uniform(-1.2e-5, 1.2e-5, 100)
    tiny[:3] = [1e-5, -1e-5, 1e-40]  # the clamp boundary and a subnormal
    cases.append(_quant_i8_case("i8 near 1e-5 n=100", tiny))
    cases.append(_quant_i8_case("i8 zeros n=31", np.zeros(31)))
    cases.append(_quant_i8_case("i8 constant negative n=37", np.full(37, -3.0)))
    wide = rng.normal(0, 1e-3, 2560)
    wide[1234] = -1e4
    cases.append(_quant_i8_case("i8 one outlier n=2560", wide))

    # -- I2_S GEMV: odd shapes, code 3, extreme activations
    for rows, k, kind in ((1, 128, "random"), (3, 384, "random"), (7, 640, "random"), (17, 2560, "random"),
                          (64, 128, "random"), (129, 640, "random"), (5, 384, "zeros"),
                          (3, 640, "alternating")):
        codes = _codes(rng, rows, k)
        if kind == "random":
            q = rng.integers(-128, 128, size=k, dtype=np.int8)
        elif kind == "zeros":
            q = np.zeros(k, np.int8)
        else:
            q = np.where(np.arange(k) % 2 == 0, 127, -128).astype(np.int8)
        cases.append(_gemv_case(f"gemv {kind} rows={rows} k={k}", codes, q))
    # largest magnitudes the int16 accumulators can meet: every code 3 against -128, every 0 against 127
    cases.append(_gemv_case("gemv code3 x -128 rows=7 k=2560", np.full((7, 2560), 3, np.uint8),
                            np.full(2560, -128, np.int8)))
    cases.append(_gemv_case("gemv code0 x 127 rows=5 k=2560", np.zeros((5, 2560), np.uint8),
                            np.full(2560, 127, np.int8)))
    mixed = np.full((4, 2560), 3, np.uint8)
    mixed[1::2] = 0
    cases.append(_gemv_case("gemv code3/code0 x +-128 rows=4 k=2560", mixed,
                            np.where(np.arange(2560) % 3 == 0, -128, 127).astype(np.int8)))

    # -- I2_S GEMM: odd rows x tokens, padded strides, a row block boundary (rows 200 x k 2560)
    for rows, k, n_tok, ldq_pad, ldo_pad in ((1, 128, 1, 0, 0), (3, 384, 2, 16, 2), (7, 640, 3, 0, 0),
                                             (17, 2560, 5, 1, 3), (64, 128, 8, 72, 0), (129, 640, 13, 7, 2),
                                             (200, 2560, 3, 0, 1), (2, 384, 13, 3, 1),
                                             # tile GEMMs (amx): 16-token tiles and 32-row blocks,
                                             # with token and row tails, odd strides, and a k
                                             # beyond the tile kernel's stack buffer
                                             (32, 128, 16, 0, 0), (96, 640, 48, 5, 3),
                                             (70, 2560, 37, 1, 2), (48, 384, 33, 0, 0),
                                             (32, 8320, 16, 0, 0),
                                             # batched decode (amx: the small-batch tile path):
                                             # 2 and 4 tokens over whole 32-row blocks
                                             (32, 2560, 2, 0, 0), (64, 6912, 4, 3, 1)):
        codes = _codes(rng, rows, k)
        q = rng.integers(-128, 128, size=(n_tok, k), dtype=np.int8)
        cases.append(_gemm_case(f"gemm rows={rows} k={k} n_tok={n_tok} ldq=k+{ldq_pad} ldo=rows+{ldo_pad}",
                                codes, q, k + ldq_pad, rows + ldo_pad, rng))
    q = np.full((6, 2560), -128, np.int8)
    q[1::2] = 127
    cases.append(_gemm_case("gemm code3 x +-128 rows=5 k=2560 n_tok=6", np.full((5, 2560), 3, np.uint8),
                            q, 2560, 5, rng))
    q = np.full((32, 2560), -128, np.int8)
    q[1::2] = 127
    cases.append(_gemm_case("gemm code3 x +-128 rows=32 k=2560 n_tok=32", np.full((32, 2560), 3, np.uint8),
                            q, 2560, 32, rng))

    # -- TQ1_S GEMV: every tail of the last chunk (k mod 160 = 0, 32, 64, 96, 128 weights),
    # row tiles with a remainder, the int16 accumulators' extremes
    for rows, k, kind in ((1, 128, "codes"), (3, 384, "bytes"), (7, 640, "codes"), (17, 2560, "bytes"),
                          (5, 256, "codes"), (6, 512, "bytes"), (9, 1024, "codes"), (64, 128, "bytes"),
                          (129, 640, "codes"), (4, 6912, "bytes"), (13, 1152, "codes")):
        q = rng.integers(-128, 128, size=k, dtype=np.int8)
        cases.append(_tq1_gemv_case(f"tq1 gemv {kind} rows={rows} k={k}", _tq1_bytes(rng, rows, k, kind), k, q))
    for code, value in ((2, -128), (2, 127), (0, 127), (0, -128)):
        cases.append(_tq1_gemv_case(f"tq1 gemv code{code} x {value} rows=5 k=6912",
                                    pack_tq1(np.full((5, 6912), code, np.uint8)), 6912,
                                    np.full(6912, value, np.int8)))
    cases.append(_tq1_gemv_case("tq1 gemv zeros rows=3 k=384", _tq1_bytes(rng, 3, 384, "bytes"), 384,
                                np.zeros(384, np.int8)))

    # -- TQ1_S GEMM: repack blocks (96 rows at k 2560, 32 at k 6912) with remainders, token tails,
    # padded strides, and a row too long for the repack buffer (k 262272: the GEMV path)
    for rows, k, n_tok, ldq_pad, ldo_pad, kind in (
            (1, 128, 2, 0, 0, "codes"), (3, 384, 2, 16, 2, "bytes"), (17, 2560, 5, 1, 3, "codes"),
            (200, 2560, 3, 0, 1, "bytes"), (70, 6912, 9, 3, 2, "codes"), (33, 1152, 13, 7, 0, "bytes"),
            (96, 640, 48, 5, 3, "codes"), (48, 384, 33, 0, 0, "bytes"), (2, 262272, 2, 0, 1, "codes")):
        q = rng.integers(-128, 128, size=(n_tok, k), dtype=np.int8)
        cases.append(_tq1_gemm_case(f"tq1 gemm {kind} rows={rows} k={k} n_tok={n_tok} ldq=k+{ldq_pad} "
                                    f"ldo=rows+{ldo_pad}", _tq1_bytes(rng, rows, k, kind), k, q,
                                    k + ldq_pad, rows + ldo_pad, rng))
    q = np.full((6, 6912), -128, np.int8)
    q[1::2] = 127
    cases.append(_tq1_gemm_case("tq1 gemm code2 x +-128 rows=34 k=6912 n_tok=6",
                                pack_tq1(np.full((34, 6912), 2, np.uint8)), 6912, q, 6912, 34, rng))

    # -- F16 head GEMV (k need not be a multiple of 32 here: tails)
    for rows, k in ((1, 32), (3, 96), (7, 2560), (17, 100), (5, 7), (64, 640)):
        w = rng.normal(0, 0.05, size=(rows, k))
        cases.append(_f16_case(f"f16 rows={rows} k={k}", w, rng.normal(0, 1.0, size=k)))
    # small integers times powers of two: every f32 step exact, so every order gives the same bits
    w = rng.integers(-64, 65, size=(9, 256)) * 0.25
    x = rng.integers(-32, 33, size=256) * 0.5
    cases.append(_f16_case("f16 exact rows=9 k=256", w, x, exact=True))

    # -- Q8_0 activation quantization: per-block scales over a wide range, ties, zero blocks
    for k in (32, 64, 96, 2560):
        scale = np.repeat(10.0 ** rng.uniform(-3, 3, size=k // 32), 32)
        cases.append(_q8_0_quant_case(f"q8_0 quant k={k}", rng.normal(0, 1, k) * scale))
    blk = np.concatenate([[127.0], np.arange(-15, 15) + 0.5, [-126.5]])  # d = 1, exact ties
    special = np.concatenate([rng.permutation(blk), np.zeros(32), rng.uniform(-1e-6, 1e-6, 32),
                              np.full(32, -7.25), rng.normal(0, 300.0, 32)])
    cases.append(_q8_0_quant_case("q8_0 quant ties/zeros/tiny k=160", special))

    # -- Q8_0 and Q4_0 head GEMVs against Q8_0 activations
    for op, blocks in ((OP_Q8_0_GEMV, _blocks_q8_0), (OP_Q4_0_GEMV, _blocks_q4_0)):
        tag = OP_NAMES[op]
        for rows, k in ((1, 32), (3, 96), (7, 2560), (17, 640), (64, 256), (6, 128)):
            xq = quantize_row_q8_0(rng.normal(0, 1, k))
            cases.append(_head_case(f"{tag} rows={rows} k={k}", op, blocks(rng, rows, k // 32), xq))
        # scales 1/2 or 1: every term is a multiple of 1/4 below 2^22 in magnitude, so every f32
        # step is exact in any order and the int block sums are checked bit for bit
        nb = 8
        w = blocks(rng, 5, nb, d=2.0 ** rng.integers(-1, 1, size=(5, nb)))
        xq = _blocks_q8_0(rng, 1, nb, d=2.0 ** rng.integers(-1, 1, size=(1, nb)))[0]
        cases.append(_head_case(f"{tag} exact rows=5 k=256", op, w, xq, exact=True))
        w = blocks(rng, 3, nb, d=np.ones((3, nb)))
        w["qs"] = -128 if op == OP_Q8_0_GEMV else 0  # -128 * -128 and (0 - 8) * -128 everywhere
        xq = _blocks_q8_0(rng, 1, nb, d=np.ones((1, nb)))[0]
        xq["qs"] = -128
        cases.append(_head_case(f"{tag} extreme -128 rows=3 k=256", op, w, xq, exact=True))
    # a k beyond the tile head's stack buffer (256 blocks)
    cases.append(_head_case("q8_0_gemv rows=18 k=8224", OP_Q8_0_GEMV, _blocks_q8_0(rng, 18, 257),
                            quantize_row_q8_0(rng.normal(0, 1, 8224))))

    # -- Q8_0 head over several tokens (batched decode): row tails of the 16-row tiles, token
    # counts that are not powers of two, more tokens than one tile's 16 columns, padded strides
    for rows, k, n_tok, ldo_pad in ((1, 32, 1, 0), (17, 640, 3, 2), (33, 2560, 4, 1), (64, 256, 5, 0),
                                    (48, 128, 16, 3), (20, 96, 17, 0), (7, 2560, 8, 0), (18, 8224, 2, 1)):
        xq = np.stack([quantize_row_q8_0(rng.normal(0, 1, k)) for _ in range(n_tok)])
        cases.append(_head_gemm_case(f"q8_0_gemm rows={rows} k={k} n_tok={n_tok} ldo=rows+{ldo_pad}",
                                     _blocks_q8_0(rng, rows, k // 32), xq, rows + ldo_pad))
    return cases


def encode_cases(cases: list[Case]) -> bytes:
    return b"".join(c.encode() for c in cases)


def decode_results(blob: bytes) -> list[tuple[int, bytes]]:
    """The driver's results file -> [(op, payload bytes)]."""
    out, pos = [], 0
    while pos < len(blob):
        op, n = struct.unpack_from("<2i", blob, pos)
        pos += 8
        out.append((op, blob[pos:pos + n]))
        pos += n
    if pos != len(blob):
        raise ValueError(f"results file is truncated at byte {pos} of {len(blob)}")
    return out


def check_result(case: Case, payload: bytes) -> list[str]:
    """Differences between one driver result and the reference, as messages (empty = pass)."""
    e = case.expected
    if case.op == OP_QUANT_I8:
        s = np.frombuffer(payload[:4], np.float32)
        q = np.frombuffer(payload[4:], np.int8)
        errs = []
        if s.tobytes() != e["s"].tobytes():
            errs.append(f"s = {s[0]!r}, expected {e['s'][0]!r}")
        errs += _int_mismatch("q", q, e["q"])
        return errs
    if case.op in (OP_I2S_GEMV, OP_I2S_GEMM, OP_TQ1_GEMV, OP_TQ1_GEMM):
        got = np.frombuffer(payload, np.int32).reshape(e["out"].shape)
        return _int_mismatch("out", got, e["out"])
    if case.op == OP_Q8_0_GEMM:
        return _head_gemm_mismatch(e, payload)
    if case.op == OP_QUANT_Q8_0:
        got = np.frombuffer(payload, BLOCK_Q8_0)
        return (_int_mismatch("d (fp16 bits)", got["d"], e["blocks"]["d"])
                + _int_mismatch("qs", got["qs"], e["blocks"]["qs"]))
    got = np.frombuffer(payload, np.float32).astype(np.float64)
    if got.shape != e["out"].shape:
        return [f"{got.size} outputs, expected {e['out'].size}"]
    if case.exact:
        bad = np.nonzero(got != e["out"])[0]
    else:
        bad = np.nonzero(~(np.abs(got - e["out"]) <= e["bound"]))[0]
    return [f"out[{i}] = {got[i]!r}, expected {e['out'][i]!r} (allowed error {e['bound'][i]:.3g})"
            for i in bad[:5]]


def _int_mismatch(field: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.shape != want.shape:
        return [f"{field}: shape {got.shape}, expected {want.shape}"]
    bad = np.argwhere(got != want)
    msgs = [f"{field}[{tuple(int(v) for v in i)}] = {got[tuple(i)]}, expected {want[tuple(i)]}"
            for i in bad[:5]]
    if len(bad) > 5:
        msgs.append(f"... {len(bad)} mismatches in {field}")
    return msgs


def _head_gemm_mismatch(e: dict, payload: bytes) -> list[str]:
    """The gemm's (n_tok, ldo) block: near the exact value, padding untouched, and equal bit for bit
    to the variant's own one-token GEMV of each token (a token's logits do not depend on its batch)."""
    n_tok, rows = e["out"].shape
    ldo = e["ldo"]
    got = np.frombuffer(payload, np.float32)
    if got.size != n_tok * (ldo + rows):
        return [f"{got.size} outputs, expected {n_tok * (ldo + rows)}"]
    gemm = got[:n_tok * ldo].reshape(n_tok, ldo)
    single = got[n_tok * ldo:].reshape(n_tok, rows)
    errs = []
    fill = np.frombuffer(struct.pack("<I", GEMM_OUT_FILL), np.float32)[0]
    if gemm[:, rows:].view(np.uint32).size and np.any(gemm[:, rows:].view(np.uint32) != fill.view(np.uint32)):
        errs.append("q8_0_gemm wrote into the padding between tokens' rows")
    bits = gemm[:, :rows].view(np.uint32) != single.view(np.uint32)
    for t, r in np.argwhere(bits)[:5]:
        errs.append(f"token {t} row {r}: gemm {gemm[t, r]!r} != its own gemv {single[t, r]!r}")
    bad = np.argwhere(~(np.abs(gemm[:, :rows].astype(np.float64) - e["out"]) <= e["bound"]))
    for t, r in bad[:5]:
        errs.append(f"out[{t}, {r}] = {gemm[t, r]!r}, expected {e['out'][t, r]!r} "
                    f"(allowed error {e['bound'][t, r]:.3g})")
    return errs
