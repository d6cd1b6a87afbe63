"""End to end against the reference: a tiny random BitNetForCausalLM built with transformers, saved
as a Hugging Face checkpoint, converted with `edge-runtime convert`, loaded by edge-runtime.

Two comparisons, and why their tolerances are honest:

1. Against the reference made to store what we store: its K (after RoPE) and V rounded to f16 as
   our KV cache holds them, and - for a q8_0 head - the head's input quantized to q8_0 blocks as our
   head kernel does. Every BitLinear then sees the same int8 activations and ternary weights, so
   what is left is float summation order: the bound is 1e-4 of the logits' spread (std); we measure
   ~3e-6. This holds for transformers' BitLinear (the class of the released 2B4T checkpoint), whose
   arithmetic is exact: int8 codes times ternary weights, summed in float below 2^24, one division.
   AutoBitLinear instead multiplies the dequantized activations (x_q / s, rounded to f32) by the
   weights, and that rounding alone occasionally tips a later layer's int8 code, so it is compared
   with the bound of 2. only.
2. Against the plain reference (f32 K/V). The f16 cache changes each K/V value by up to 2^-11
   relative; the next BitLinear rounds its input to int8 (steps of max/127), and a 2^-11 relative
   change moves values near a rounding boundary to the neighbouring code - so a few percent of
   activations differ by one step, the same size as the quantization noise the model already lives
   with. On these random models that gives max |logit error| of ~3% of the logits' std; the bound is
   8%, argmax must agree at every position, and greedy decoding must agree token for token.

The reference's (tied) embedding is set to exactly what the file stores (f16-rounded or
q8_0-dequantized), so no weight differs between the two sides.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers_hf import load_reference, make_tiny_bitnet_dir, make_tiny_tokenizer_json  # noqa: E402

from edge_runtime.formats.convert import main as convert_main  # noqa: E402
from edge_runtime.formats.gguf import GGUFReader, dequantize  # noqa: E402
from edge_runtime.model.model import Model  # noqa: E402

VOCAB = 300
N_TOKENS = 32


class Args:
    def __init__(self, **kw):
        self.__dict__.update(dict(to="i2_s", name=None, progress=False, head="f16"), **kw)


def convert(src, dst, head):
    rc = convert_main(Args(input=str(src), output=str(dst), head=head))
    assert rc == 0
    return str(dst)


def reference_with_file_embeddings(ckpt, gguf_path):
    """The transformers model, with its (tied) embedding set to exactly what the file stores."""
    ref = load_reference(ckpt, dtype="float32")
    with GGUFReader(gguf_path) as r:
        info = r.tensors["token_embd.weight"]
        emb = dequantize(info.ggml_type, r.tensor_bytes("token_embd.weight"), *info.shape).astype(np.float32)
    with torch.no_grad():
        ref.model.embed_tokens.weight.copy_(torch.from_numpy(emb))
        assert ref.lm_head.weight.data_ptr() == ref.model.embed_tokens.weight.data_ptr(), "embeddings must be tied"
    return ref


def torch_logits(ref, tokens):
    with torch.no_grad():
        return ref(torch.tensor([tokens])).logits[0].float().numpy()


def torch_greedy(ref, prompt, n, stop_ids):
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(ref(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt in stop_ids:
                break
            seq.append(nxt)
    return seq[len(prompt):]


CASES = [
    # (checkpoint kind, linear class, head type)
    ("packed", "bitlinear", "f16"),      # the released 2B4T format (BitLinear divides by weight_scale)
    ("packed", "bitlinear", "q8_0"),
    ("packed", "autobitlinear", "f16"),  # AutoBitLinear offline multiplies by weight_scale
    ("masters", "bitlinear", "f16"),     # float masters, ternarized per tensor (the -bf16 release)
]


def emulate_our_storage(ref, monkeypatch, head):
    """Make the reference keep K/V in f16 (and quantize a q8_0 head's input), as the engine does."""
    import transformers.models.bitnet.modeling_bitnet as mb
    from edge_runtime.formats.gguf import dequantize_q8_0, quantize_q8_0

    rope = mb.apply_rotary_pos_emb

    def rope_then_f16(q, k, cos, sin, *a, **kw):
        q2, k2 = rope(q, k, cos, sin, *a, **kw)
        return q2, k2.half().float()

    monkeypatch.setattr(mb, "apply_rotary_pos_emb", rope_then_f16)
    handles = [layer.self_attn.v_proj.register_forward_hook(lambda mod, inp, out: out.half().float())
               for layer in ref.model.layers]
    if head == "q8_0":
        def q8_input(mod, args):
            x = args[0].float().numpy()
            flat = x.reshape(-1, x.shape[-1])
            deq = dequantize_q8_0(quantize_q8_0(flat), *flat.shape).reshape(x.shape)
            return (torch.from_numpy(np.ascontiguousarray(deq, dtype=np.float32)),)
        handles.append(ref.lm_head.register_forward_pre_hook(q8_input))
    return handles


EXACT_CASES = [c for c in CASES if c[:2] == ("packed", "bitlinear")]


def build_case(tmp_path, kind, linear_class, head):
    ckpt = make_tiny_bitnet_dir(tmp_path / "hf", kind=kind, linear_class=linear_class, seed=11, vocab=VOCAB,
                                tokenizer_json=make_tiny_tokenizer_json(VOCAB))
    gguf = convert(ckpt, tmp_path / f"model-{head}.gguf", head)
    rng = np.random.default_rng(5)
    tokens = [1] + [int(t) for t in rng.integers(3, VOCAB - 3, size=N_TOKENS - 1)]
    return ckpt, gguf, head, tokens


@pytest.fixture(params=CASES, ids=["-".join(c) for c in CASES])
def case(request, tmp_path):
    return build_case(tmp_path, *request.param)


@pytest.fixture(params=EXACT_CASES, ids=["-".join(c) for c in EXACT_CASES])
def exact_case(request, tmp_path):
    return build_case(tmp_path, *request.param)


def test_logits_match_reference_storing_what_we_store(exact_case, monkeypatch):
    ckpt, gguf, head, tokens = exact_case
    ref = reference_with_file_embeddings(ckpt, gguf)
    handles = emulate_our_storage(ref, monkeypatch, head)
    want = torch_logits(ref, tokens)
    for h in handles:
        h.remove()
    for kernel in ("scalar", None):
        with Model(gguf, n_ctx=128, n_threads=2, kernel=kernel) as m:
            got = m.eval_logits(tokens)
        err = np.abs(got - want).max()
        assert err <= 1e-4 * want.std(), f"{kernel}: max |logit error| {err:.3g} vs std {want.std():.3g}"


def test_logits_and_greedy_tokens_match_plain_reference(case):
    ckpt, gguf, head, tokens = case
    ref = reference_with_file_embeddings(ckpt, gguf)
    want = torch_logits(ref, tokens)
    with Model(gguf, n_ctx=128, n_threads=2) as m:
        got = m.eval_logits(tokens)
        err = np.abs(got - want).max()
        assert err <= 0.08 * want.std(), f"max |logit error| {err:.4g} > 0.08 * std {want.std():.4g}"
        assert (got.argmax(-1) == want.argmax(-1)).all()

        # 32 greedy tokens through the generation path (temperature 0, no penalties)
        stop_ids = {m.tokenizer.eos_id, m.tokenizer.eot_id} - {None}
        prompt = tokens[:8]
        expected = torch_greedy(ref, prompt, N_TOKENS, stop_ids)
        assert len(expected) >= N_TOKENS // 2, "pick a seed whose continuation is long enough to mean something"
        out = m.create_completion(prompt, max_tokens=N_TOKENS, temperature=0.0, repeat_penalty=1.0)
        assert out["choices"][0]["text"] == m.detokenize(expected).decode("utf-8", errors="replace")
        n_stop = 1 if len(expected) < N_TOKENS else 0  # the end-of-text token counts as generated
        assert out["usage"]["completion_tokens"] == len(expected) + n_stop
        assert out["choices"][0]["finish_reason"] == ("stop" if n_stop else "length")
