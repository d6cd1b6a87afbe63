"""Train the embedded home-assistant model: a tiny BitNet b1.58 with the 2B4T architecture.

Dev tooling, not a runtime dependency (needs torch, transformers, tokenizers, safetensors and
accelerate, which transformers requires to load a BitNet checkpoint).

    python -m edge_runtime.training.train_tiny --out DIR --seed 0 [--steps N] [--threads T]

Steps: generate the corpus (edge_runtime.training.corpus) -> train a byte-level BPE tokenizer on
it -> build a transformers BitNetForCausalLM whose
projections are AutoBitLinear in "online" mode (ternary weights and int8 activations in the forward pass, straight-through gradients to f32
master weights) -> train with AdamW, loss on assistant reply tokens only -> evaluate greedy
replies on held-out phrasings -> save a packed "offline" checkpoint directory -> reload it with
BitNetForCausalLM.from_pretrained and check its greedy outputs equal the trained model's.

Checkpoint directory: config.json (quantization_config offline/autobitlinear), model.safetensors
(each projection: uint8 [out/4, in] packed with transformers' pack_weights + f32 weight_scale =
mean|W|, which the layer multiplies its output by; embeddings and norms f32 masters; the output
head is tied to the embeddings and not stored), generation_config.json, tokenizer.json,
tokenizer_config.json, training_summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_runtime.training import corpus

SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")
BOS, EOS, EOT = SPECIAL_TOKENS
# Llama-3's pre-tokenizer split: contractions, letter runs with one leading non-letter, numbers
# in groups of up to three digits, punctuation runs, newlines, other whitespace.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}: "
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)
QUANT_ONLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
QUANT_OFFLINE = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
GGUF_LIMIT_BYTES = 16 * 1024 * 1024


@dataclass
class Settings:
    out: str
    seed: int = 0
    steps: int = 2200
    threads: int = 1
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.05
    hidden: int = 256
    ffn: int = 768
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 2048
    context: int = 2048
    joined_rate: float = 0.0
    word_cut_rate: float = 0.0
    tokenizer_examples: int = 30000
    eval_n: int = 220
    log: str | None = None


class Log:
    """Prints a line and appends it to the log file, if any."""

    def __init__(self, path: str | None):
        self.path = path
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


# ----------------------------------------------------------------------------------------------
# Tokenizer

def build_tokenizer(examples: list[corpus.Example], vocab_size: int):
    """Byte-level BPE trained on the segments the chat encoder tokenizes separately."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_tokenizer_texts(examples), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    return tokenizer


def _tokenizer_texts(examples: list[corpus.Example]):
    for example in examples:
        for message in example.messages:
            yield _header(message["role"])
            yield message["content"].strip()
            yield _header(message["role"]) + message["content"].strip()
        yield _header("assistant")
        yield example.reply


def _header(role: str) -> str:
    return f"{role.capitalize()}: "


def save_tokenizer_files(tokenizer, out: Path) -> None:
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOT, "pad_token": EOS,
        "model_max_length": 2048, "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


class ChatEncoder:
    """Token ids of a conversation in the 2B4T chat format, with a mask of the tokens to learn.

    Each message is ``header ids + content ids + <|eot_id|>`` where the header ("User: ") and
    the stripped content are tokenized separately, as the model's chat encoder does. With
    ``joined=True`` the system/user lines are tokenized as one string instead (as a plain-text
    prompt would be), so the model also answers prompts built that way.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos = tokenizer.token_to_id(BOS)
        self.eos = tokenizer.token_to_id(EOS)
        self.eot = tokenizer.token_to_id(EOT)
        self._cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        cached = self._cache.get(text)
        if cached is None:
            cached = self.tokenizer.encode(text, add_special_tokens=False).ids
            self._cache[text] = cached
        return cached

    def prompt(self, messages: list[dict], joined: bool = False,
               cut: tuple[random.Random, float] | None = None) -> tuple[list[int], list[int]]:
        tokens, learn = [self.bos], [0]
        for message in messages:
            role, content = message["role"], message["content"].strip()
            if role == "assistant":
                head, body = self.ids(_header(role)), self.ids(content)
                tokens += head + body + [self.eot]
                learn += [0] * len(head) + [1] * (len(body) + 1)
            else:
                if joined:
                    line = self.ids(_header(role) + content)
                elif cut is not None and role == "user":
                    line = self.ids(_header(role)) + self.cut_ids(content, *cut)
                else:
                    line = self.ids(_header(role)) + self.ids(content)
                tokens += line + [self.eot]
                learn += [0] * (len(line) + 1)
        head = self.ids(_header("assistant"))
        return tokens + head, learn + [0] * len(head)

    def cut_ids(self, content: str, rng: random.Random, rate: float) -> list[int]:
        """Ids of the request with each word (not a number) cut in two at a random letter with
        probability ``rate``, the parts tokenized apart.

        The model copies names from the request into its reply. A name it never saw in training
        comes cut by the merges into pieces it rarely saw as parts of a word, while the words of the
        training homes, frequent enough to be merged whole, would teach it only to copy whole-word
        tokens. Requests whose words also come in smaller pieces teach it to copy piece by piece
        (BPE-dropout, done with a seeded generator so a run is reproducible)."""
        out: list[int] = []
        for i, word in enumerate(content.split(" ")):
            lead = " " if i else ""
            if len(word) > 2 and not word.isdigit() and rng.random() < rate:
                at = rng.randrange(1, len(word))
                out += self.ids(lead + word[:at]) + self.ids(word[at:])
            else:
                out += self.ids(lead + word)
        return out

    def example(self, example: corpus.Example, joined: bool = False,
                cut: tuple[random.Random, float] | None = None) -> tuple[list[int], list[int]]:
        tokens, learn = self.prompt(example.messages, joined, cut)
        reply = self.ids(example.reply.strip())
        return tokens + reply + [self.eot], learn + [1] * (len(reply) + 1)


# ----------------------------------------------------------------------------------------------
# Model

def model_config(settings: Settings, encoder: ChatEncoder, vocab_size: int):
    from transformers import BitNetConfig

    for name, size in (("hidden", settings.hidden), ("ffn", settings.ffn)):
        if size % 128:
            raise ValueError(f"--{name} {size}: expected a multiple of 128 (I2_S packs 128 weights per group)")
    if settings.hidden % settings.heads or settings.heads % settings.kv_heads:
        raise ValueError(f"--heads {settings.heads} / --kv-heads {settings.kv_heads}: heads must divide "
                         f"--hidden {settings.hidden} and kv-heads must divide heads")
    return BitNetConfig(
        vocab_size=vocab_size, hidden_size=settings.hidden, intermediate_size=settings.ffn,
        num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
        num_key_value_heads=settings.kv_heads, hidden_act="relu2",
        max_position_embeddings=settings.context, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=encoder.bos, eos_token_id=encoder.eos, pad_token_id=None,
        initializer_range=0.02, attention_bias=False)


def build_model(config):
    """BitNetForCausalLM with every projection replaced by an online (QAT) AutoBitLinear."""
    import torch
    from transformers import BitNetForCausalLM, BitNetQuantConfig
    from transformers.integrations.bitnet import AutoBitLinear, replace_with_bitnet_linear

    model = BitNetForCausalLM(config)
    # A freshly constructed model ignores quantization_config (only from_pretrained applies
    # it), so the projections are swapped here; the tied output head stays a plain Linear.
    replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"],
                               quantization_config=BitNetQuantConfig(**_quant_kwargs(QUANT_ONLINE)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AutoBitLinear):
                module.weight.normal_(0.0, config.initializer_range)
    if model.lm_head.weight is not model.model.embed_tokens.weight:
        raise RuntimeError("BitNetForCausalLM did not tie lm_head to embed_tokens")
    return model


def _quant_kwargs(quant: dict) -> dict:
    return {k: v for k, v in quant.items() if k != "quant_method"}


def projection_modules(model):
    from transformers.integrations.bitnet import AutoBitLinear

    return [(name, module) for name, module in model.named_modules() if isinstance(module, AutoBitLinear)]


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied head counted once


def gguf_size_estimate(model) -> int:
    """Bytes of the GGUF tensors: I2_S projections (n/4 + 32 each), f16 embeddings, f32 norms,
    plus a generous 256 KiB for metadata and the tokenizer."""
    total = 0
    projections = {id(m.weight) for _, m in projection_modules(model)}
    for name, param in model.named_parameters():
        if id(param) in projections:
            total += param.numel() // 4 + 32
        elif name.endswith("embed_tokens.weight"):
            total += param.numel() * 2
        else:
            total += param.numel() * 4
    return total + 256 * 1024


# ----------------------------------------------------------------------------------------------
# Training

def make_batch(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded ids and next-token labels (-100 where nothing is learned). Causal attention
    never lets a real token see the padding after it, so no attention mask is needed."""
    import torch

    width = max(len(tokens) for tokens, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (tokens, learn) in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        for position in range(1, len(tokens)):
            if learn[position]:
                labels[row, position - 1] = tokens[position]
    return ids, labels


def learning_rate(settings: Settings, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _batches(encoder: ChatEncoder, examples: list[corpus.Example], settings: Settings):
    """Batches of encoded rows in a seeded order. Every 16 batches' worth of examples are sorted
    by length and cut into batches (less padding), then those batches are shuffled."""
    order = random.Random(settings.seed + 7)
    group = 16 * settings.batch
    for start in range(0, settings.steps * settings.batch, group):
        chunk = examples[start:start + group]
        rows = [encoder.example(ex, joined=order.random() < settings.joined_rate,
                                cut=(order, settings.word_cut_rate) if settings.word_cut_rate else None)
                for ex in chunk]
        rows.sort(key=lambda row: len(row[0]))
        batches = [rows[i:i + settings.batch] for i in range(0, len(rows), settings.batch)]
        order.shuffle(batches)
        yield from batches


def train_model(model, encoder: ChatEncoder, examples: list[corpus.Example], settings: Settings,
                log: Log) -> list[float]:
    import torch
    import torch.nn.functional as F

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.95), eps=1e-8)
    model.train()
    losses: list[float] = []
    window: list[float] = []
    started = time.monotonic()
    tokens_seen = 0
    for step, rows in enumerate(_batches(encoder, examples, settings)):
        ids, labels = make_batch(rows, encoder.eos)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step)
        hidden = model.model(input_ids=ids).last_hidden_state
        # Only reply positions carry a loss, so only they go through the (tied) output head.
        learn = labels.view(-1) != -100
        logits = model.lm_head(hidden.reshape(-1, hidden.shape[-1])[learn])
        loss = F.cross_entropy(logits, labels.view(-1)[learn])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"training loss became {value} at step {step}; lower --lr ({settings.lr})")
        losses.append(value)
        window.append(value)
        tokens_seen += int(ids.numel())
        if (step + 1) % max(1, min(50, settings.steps // 10)) == 0 or step + 1 == settings.steps:
            elapsed = time.monotonic() - started
            log(f"step {step + 1:5d}/{settings.steps}  loss {sum(window) / len(window):.4f}  "
                f"lr {learning_rate(settings, step):.2e}  {elapsed:7.1f}s  {tokens_seen / elapsed:6.0f} tok/s")
            window = []
    return losses


# ----------------------------------------------------------------------------------------------
# Evaluation

def greedy_reply(model, prompt_ids: list[int], stop_ids: set[int], max_new: int) -> list[int]:
    """Greedy continuation (argmax, first index on ties) until a stop token or max_new tokens."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        generated: list[int] = []
        next_id = int(out.logits[0, -1].argmax())
        while next_id not in stop_ids and len(generated) < max_new:
            generated.append(next_id)
            out = model(input_ids=torch.tensor([[next_id]]), past_key_values=out.past_key_values,
                        use_cache=True)
            next_id = int(out.logits[0, -1].argmax())
    return generated


def evaluate(model, encoder: ChatEncoder, examples: list[corpus.Example], max_new: int = 64) -> dict:
    """Greedy unconstrained replies scored against the expected slots: ``json`` = the reply parses as
    slots, ``intent`` = the intent is right, ``exact`` = every slot is right. (The runtime's own
    evaluation, with the constraint, is edge_runtime.training.evaluate_assist.)"""
    from edge_runtime.assist import slots

    model.eval()
    stop = {encoder.eot, encoder.eos}
    scores = {"n": 0, "json": 0, "intent": 0, "exact": 0}
    failures = []
    for example in examples:
        prompt, _ = encoder.prompt(example.messages)
        reply = encoder.tokenizer.decode(greedy_reply(model, prompt, stop, max_new))
        parsed = slots.parse_slots(reply)
        scores["n"] += 1
        scores["json"] += parsed is not None
        scores["intent"] += parsed is not None and parsed["intent"] == example.slots["intent"]
        ok = parsed == example.slots
        scores["exact"] += ok
        if not ok and len(failures) < 8:
            failures.append((example.normalized, example.reply, reply))
    scores["failures"] = failures
    return scores


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / max(1, whole):.1f}%"


# ----------------------------------------------------------------------------------------------
# Checkpoint

def save_checkpoint(model, config, tokenizer, out: Path) -> None:
    """Packed offline checkpoint that BitNetForCausalLM.from_pretrained loads."""
    import torch
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    tensors = {}
    projections = dict(projection_modules(model))
    for name, tensor in model.state_dict().items():
        module_name = name.rsplit(".", 1)[0]
        if name == "lm_head.weight" or module_name in projections:
            continue
        tensors[name] = tensor.detach().float().contiguous().clone()
    for name, module in projections.items():
        ternary, scale = ternarize(module.weight.detach())
        tensors[name + ".weight"] = pack_weights(ternary.clone()).contiguous()
        tensors[name + ".weight_scale"] = scale.reshape(1).float()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    saved = config.to_dict()
    saved.update(architectures=["BitNetForCausalLM"], quantization_config=dict(QUANT_OFFLINE),
                 dtype="float32", use_cache=True)
    (out / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    generation = {"bos_token_id": config.bos_token_id,
                  "eos_token_id": [config.eos_token_id, tokenizer.token_to_id(EOT)],
                  "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    save_tokenizer_files(tokenizer, out)


def ternarize(weight):
    """W -> (round(W / mean|W|) clamped to {-1, 0, 1}, mean|W|), the way AutoBitLinear's online
    mode rounds (multiplying by the reciprocal of the clamped mean) so the packed codes equal
    the ones the trained model used."""
    w = weight.float()
    scale = w.abs().mean().clamp(min=1e-5)
    return (w * (1.0 / scale)).round().clamp(-1, 1), scale


def load_checkpoint(out: Path):
    import transformers
    from transformers import BitNetForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model, info = BitNetForCausalLM.from_pretrained(str(out), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise RuntimeError(f"{out}: checkpoint does not load cleanly: {problems}")
    return model.eval()


def check_reload(model, encoder: ChatEncoder, out: Path, prompts: list[list[dict]], log: Log) -> dict:
    """Greedy outputs of the reloaded checkpoint must equal the trained model's (both eval)."""
    import torch

    model.eval()
    reloaded = load_checkpoint(out)
    stop = {encoder.eot, encoder.eos}
    same = 0
    worst_logit_gap = 0.0
    for messages in prompts:
        prompt, _ = encoder.prompt(messages)
        a = greedy_reply(model, prompt, stop, 48)
        b = greedy_reply(reloaded, prompt, stop, 48)
        same += a == b
        if a != b:
            log(f"  reload mismatch on {messages[-1]['content']!r}: {encoder.tokenizer.decode(a)!r} "
                f"vs {encoder.tokenizer.decode(b)!r}")
        with torch.no_grad():
            ids = torch.tensor([prompt + a])
            gap = (model(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max()
        worst_logit_gap = max(worst_logit_gap, float(gap))
    return {"prompts": len(prompts), "same_greedy": same, "max_logit_gap": worst_logit_gap}


# ----------------------------------------------------------------------------------------------
# Driver

def run(settings: Settings) -> dict:
    """Train, evaluate, save and check one model; torch's global settings are restored after."""
    import torch
    import transformers

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    verbosity = transformers.logging.get_verbosity()
    compiled = torch._dynamo.config.disable
    try:
        torch.set_num_threads(settings.threads)
        torch.use_deterministic_algorithms(True)
        # transformers wraps the BitNet quantizers in torch.compile; every new batch width recompiles
        # them, which costs more than it saves on rows this short (measured: 1608 vs 1971 tok/s)
        torch._dynamo.config.disable = True
        return _run(settings)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch._dynamo.config.disable = compiled
        transformers.logging.set_verbosity(verbosity)


def _run(settings: Settings) -> dict:
    import torch

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(settings.log)
    started = time.monotonic()
    torch.manual_seed(settings.seed)
    log(f"settings {json.dumps(asdict(settings), sort_keys=True)}")

    corpus_started = time.monotonic()
    train_examples = corpus.generate("train", settings.steps * settings.batch, settings.seed)
    tokenizer_examples = train_examples[: settings.tokenizer_examples]
    log(f"corpus: {len(train_examples)} training examples in {time.monotonic() - corpus_started:.0f}s")
    tokenizer = build_tokenizer(tokenizer_examples, settings.vocab)
    encoder = ChatEncoder(tokenizer)
    vocab_size = tokenizer.get_vocab_size()
    log(f"tokenizer: {vocab_size} tokens (asked {settings.vocab}); ids bos {encoder.bos} "
        f"eos {encoder.eos} eot {encoder.eot}")

    config = model_config(settings, encoder, vocab_size)
    model = build_model(config)
    params = parameter_count(model)
    ternary = sum(m.weight.numel() for _, m in projection_modules(model))
    size = gguf_size_estimate(model)
    log(f"model: {params:,} parameters ({ternary:,} ternary), GGUF estimate {size / 2**20:.2f} MiB")
    if size > GGUF_LIMIT_BYTES:
        raise ValueError(f"model would be {size / 2**20:.2f} MiB as GGUF; the limit is "
                         f"{GGUF_LIMIT_BYTES / 2**20:.0f} MiB: shrink --hidden/--ffn/--layers/--vocab")

    train_started = time.monotonic()
    losses = train_model(model, encoder, train_examples, settings, log)
    train_seconds = time.monotonic() - train_started

    heldout = corpus.generate("heldout", settings.eval_n, settings.seed + 1000, kinds=corpus.KINDS)
    train_check = corpus.generate("train", max(4, settings.eval_n // 3), settings.seed + 3000)
    metrics = {}
    for name, examples in (("heldout", heldout), ("train", train_check)):
        scores = evaluate(model, encoder, examples)
        metrics[name] = {k: v for k, v in scores.items() if k != "failures"}
        n = scores["n"]
        log(f"{name} (greedy, unconstrained): n={n}  json {_percent(scores['json'], n)}  intent "
            f"{_percent(scores['intent'], n)}  all slots {_percent(scores['exact'], n)}")
        for said, expected, got in scores["failures"][:4]:
            log(f"  miss: {said!r} -> {got!r} (expected {expected!r})")

    save_checkpoint(model, config, tokenizer, out)
    probes = [ex.messages for ex in heldout[:8] + train_check[:4]]
    reload = check_reload(model, encoder, out, probes, log)
    log(f"reload: {reload['same_greedy']}/{reload['prompts']} greedy outputs equal, "
        f"max logit gap {reload['max_logit_gap']:.2e}")

    tail = losses[-max(1, len(losses) // 20):]
    summary = {
        "settings": asdict(settings), "parameters": params, "ternary_parameters": ternary,
        "vocab_size": vocab_size, "gguf_estimate_bytes": size,
        "loss_first": losses[0] if losses else None,
        "loss_last_5pct": sum(tail) / len(tail) if losses else None,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "metrics": metrics, "reload": reload,
        "torch": torch.__version__,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"saved {out}  wall {summary['wall_seconds']:.0f}s (training {train_seconds:.0f}s)")
    if reload["same_greedy"] != reload["prompts"]:
        raise RuntimeError(f"{out}: reloaded checkpoint's greedy outputs differ from the trained "
                           f"model's on {reload['prompts'] - reload['same_greedy']} prompts")
    return summary


def parse_args(argv: list[str] | None) -> Settings:
    defaults = Settings(out="")
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.training.train_tiny",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    for field_name, value in asdict(defaults).items():
        if field_name in ("out", "log"):
            continue
        flag = "--" + field_name.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--log", default=None, help="also append the progress lines to this file")
    args = parser.parse_args(argv)
    settings = Settings(**vars(args))
    for name in ("steps", "threads", "batch", "layers", "heads", "kv_heads", "vocab", "eval_n",
                 "tokenizer_examples", "context"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(settings, name)}: expected >= 1")
    if not settings.lr > 0:
        parser.error(f"--lr {settings.lr}: expected > 0")
    for name in ("joined_rate", "word_cut_rate"):
        if not 0.0 <= getattr(settings, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} {getattr(settings, name)}: expected a probability in [0, 1]")
    return settings


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        run(settings)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"train_tiny: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
