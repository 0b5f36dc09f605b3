"""Batch-1 greedy decode speed of packed LLaMA layers at 7B dimensions, against bf16, in one run.

    python bench/decode.py                       # 4 layers, 128-token prompt, 64 new tokens
    python bench/decode.py --layers 8 --repeats 3 --out runs/decode.json

What it builds: a transformers ``LlamaForCausalLM`` with LLaMA-7B layer shapes (hidden 4096,
intermediate 11008, 32 heads, vocab 32000), random weights, ``--layers`` decoder layers. The
embedding, final norm and lm_head (bf16, 32000 x 4096) are *shared* by every variant, so all
variants are the same network apart from the linears:

* ``bf16``: dense bf16 linears whose weights are the dequantised W4 codes below, so its greedy
  tokens are directly comparable with the W4 variants';
* ``w4:<backend>``: PackedLinear (AWQ GEMM) with random codes on the 4-bit grid and fp16 scales,
  run by each available W4 backend (``grace.kernels``);
* ``w8:<backend>``: PackedLinear W8 with random int8 codes (a different network: its tokens are
  compared among the W8 backends only);
* ``w4:dequant``: the public runtime's dequantise-every-call path. It is slow, so it decodes only
  ``--dequant-tokens`` tokens (measured, not extrapolated: its tokens/s is a per-token rate over
  those tokens; the prompt is the same 128 tokens).

Packed layers are built on the ``meta`` device and filled with random packed buffers directly;
the dense variant dequantises one linear at a time (never all layers in fp32 at once).

What it measures: every variant is prefilled, then all variants decode in lockstep, one token
each in a rotating order, so the shared machine's load falls on all of them alike. Each step
times the decoder stack (``model.model``: embedding lookup, every layer with its KV cache) and
the lm_head + argmax separately. Printed per variant: end-to-end tokens/s (stack + head) and
layers-only tokens/s (stack only; the lm_head, identical and bf16 in every variant, excluded),
each as 1 / median step time and as a ratio to bf16 (means are in the JSON), plus the relative
difference of the prefill logits and the count of identical greedy tokens against the variant
with the same weights (random networks have near-ties, so a late divergence is not an error).
A per-linear micro-benchmark at the 7B shapes (batch 1 and 16; medians of interleaved rounds,
caches evicted before every timed call so weights come from DRAM as in decode) follows.
Everything printed also goes to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import grace.kernels as K  # noqa: E402
from grace.formats.awq_gemm import AWQ_ZERO_WORD, dequantize_w4  # noqa: E402
from grace.quant.modules import PackedLinear  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
GROUP = 128
# Scale magnitudes giving weights of std ~0.02 (a typical init) from uniform codes:
# std(uniform[-8, 7]) ~ 4.6, std(uniform[-128, 127]) ~ 74.
W4_SCALE, W8_SCALE = 0.02 / 4.6, 0.02 / 74.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------
# Random packed buffers (deterministic per layer / linear, so two variants can share codes)
# ------------------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def w4_buffers(out_f: int, in_f: int, seed: int) -> dict[str, torch.Tensor]:
    """Random AWQ GEMM buffers: every int32 word is 8 uniform nibbles, i.e. uniform codes in [-8, 7]."""
    g = _gen(seed)
    qweight = torch.randint(0, 256, (in_f, out_f // 2), generator=g, dtype=torch.uint8).view(torch.int32)
    qzeros = torch.full((in_f // GROUP, out_f // 8), AWQ_ZERO_WORD, dtype=torch.int32)
    scales = ((torch.rand(in_f // GROUP, out_f, generator=g) + 0.5) * W4_SCALE).half()
    return {"qweight": qweight.contiguous(), "qzeros": qzeros, "scales": scales}


def w8_buffers(out_f: int, in_f: int, seed: int) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    qweight = torch.randint(-128, 128, (out_f, in_f), generator=g, dtype=torch.int8)
    scales = ((torch.rand(in_f // GROUP, out_f, generator=g) + 0.5) * W8_SCALE).half()
    return {"qweight": qweight, "scales": scales}


def packed_linear(bits: int, out_f: int, in_f: int, seed: int) -> PackedLinear:
    m = PackedLinear(in_f, out_f, bits, GROUP, bias=False, device="meta")
    bufs = w4_buffers(out_f, in_f, seed) if bits == 4 else w8_buffers(out_f, in_f, seed)
    for k, v in bufs.items():
        setattr(m, k, v)  # replaces the meta buffer
    return m


def dense_from_w4(out_f: int, in_f: int, seed: int) -> nn.Linear:
    b = w4_buffers(out_f, in_f, seed)
    lin = nn.Linear(in_f, out_f, bias=False, device="meta")
    lin.weight = nn.Parameter(dequantize_w4(b["qweight"], b["qzeros"], b["scales"]).to(torch.bfloat16),
                              requires_grad=False)
    return lin


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def llama_config(layers: int, vocab: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       attn_implementation="sdpa")


def shared_parts(cfg, seed: int = 1234) -> dict[str, nn.Module]:
    """Embedding, final norm, lm_head and rotary embedding: real tensors, shared by every variant."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

    g = _gen(seed)
    emb = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=torch.bfloat16)
    emb.weight.data = (torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g) * 0.02).to(torch.bfloat16)
    head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=torch.bfloat16)
    head.weight.data = (torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g) * 0.02).to(torch.bfloat16)
    return {"embed": emb, "head": head, "norm": LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps).to(torch.bfloat16),
            "rotary": LlamaRotaryEmbedding(cfg)}


def build_model(cfg, shared: dict, kind: str, progress: Progress | None = None, like=None):
    """``kind`` in {"bf16", "w4", "w8"}; linears seeded by (layer, linear) so W4 and bf16 agree.

    ``like``: an already built model of the same kind whose packed buffers are reused (not
    copied), so each backend gets its own modules (and cache) over one set of weights.
    """
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.model.embed_tokens, model.lm_head = shared["embed"], shared["head"]
    model.model.norm, model.model.rotary_emb = shared["norm"], shared["rotary"]
    task = progress.add_task(f"build {kind}", total=cfg.num_hidden_layers * len(LINEARS)) if progress else None
    for li, layer in enumerate(model.model.layers):
        for j, name in enumerate(LINEARS):
            parent_name, _, leaf = name.rpartition(".")
            parent = layer.get_submodule(parent_name)
            old = getattr(parent, leaf)
            seed = 1000 * li + j + (500_000 if kind == "w8" else 0)
            if like is not None:
                new = _share(like.model.layers[li].get_submodule(name))
            elif kind == "bf16":
                new = dense_from_w4(old.out_features, old.in_features, seed)
            else:
                new = packed_linear(4 if kind == "w4" else 8, old.out_features, old.in_features, seed)
            setattr(parent, leaf, new)
            if progress:
                progress.advance(task)
        layer.input_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps).to(torch.bfloat16)
        layer.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps).to(torch.bfloat16)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not leftovers, f"meta tensors left: {leftovers[:5]}"
    return model.eval()


# ------------------------------------------------------------------------------------------------
# Decode
# ------------------------------------------------------------------------------------------------
class Decoder:
    """One variant's batch-1 greedy decode with a KV cache, advanced one timed step at a time."""

    def __init__(self, model, prompt: torch.Tensor):
        from transformers import DynamicCache

        self.model, self.cache = model, DynamicCache(config=model.config)
        t0 = time.perf_counter()
        h = model.model(input_ids=prompt, past_key_values=self.cache, use_cache=True).last_hidden_state
        self.logits0 = model.lm_head(h[:, -1:, :])[:, -1].float()
        self.tok = self.logits0.argmax(-1, keepdim=True)
        self.prefill_s = time.perf_counter() - t0
        self.tokens, self.stack_s, self.head_s = [int(self.tok)], [], []

    def step(self) -> None:
        a = time.perf_counter()
        h = self.model.model(input_ids=self.tok, past_key_values=self.cache, use_cache=True).last_hidden_state
        b = time.perf_counter()
        self.tok = self.model.lm_head(h[:, -1:, :])[:, -1].argmax(-1, keepdim=True)
        c = time.perf_counter()
        self.stack_s.append(b - a)
        self.head_s.append(c - b)
        self.tokens.append(int(self.tok))


@torch.inference_mode()
def decode_lockstep(models: dict, prompt: torch.Tensor, new_tokens: int) -> dict[str, Decoder]:
    """Prefill every variant, then advance them in turn, one token each, rotating the order.

    Interleaving at token granularity gives every variant the same share of the shared
    machine's load, so ratios stay meaningful even when absolute times drift.
    """
    decs = {label: Decoder(m, prompt) for label, m in models.items()}
    labels = list(decs)
    for i in range(new_tokens):
        k = i % len(labels)
        for label in labels[k:] + labels[:k]:
            decs[label].step()
    return decs


# ------------------------------------------------------------------------------------------------
# Per-linear micro-benchmark
# ------------------------------------------------------------------------------------------------
def _share(m: PackedLinear) -> PackedLinear:
    """A second module over the same buffers (so two backends can be attached side by side)."""
    c = PackedLinear(m.in_features, m.out_features, m.bits, m.group_size, bias=False, device="meta")
    for k in ("qweight", "qzeros", "scales"):
        if hasattr(m, k):
            setattr(c, k, getattr(m, k))
    return c


_FLUSH: list[torch.Tensor] = []


def _evict_caches() -> None:
    """Read 512 MB (twice this machine's 260 MB L3) so the next call streams its weights from DRAM.

    Without it, one linear's weights (8-90 MB) stay in the L3 between calls and the kernel times
    say nothing about decode, where a model's weights never fit in cache.
    """
    if not _FLUSH:
        _FLUSH.append(torch.ones(128 << 20))  # fp32: a vectorised sum (a uint8 sum is 80x slower)
    _FLUSH[0].sum()


def _time_round_robin(fns: dict, rounds: int, cold: bool = True) -> dict[str, float]:
    """Median ms per call; the candidates alternate so machine noise hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            if cold:
                _evict_caches()
            t = time.perf_counter()
            f()
            times[k].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def micro_bench(w4_names: list[str], w8_names: list[str], rounds: int, with_dequant: bool, progress: Progress):
    shapes = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (out, in): q/k/v/o, gate/up, down
    results = []
    task = progress.add_task("micro-benchmark", total=len(shapes) * 2)
    for si, (out_f, in_f) in enumerate(shapes):
        w4 = packed_linear(4, out_f, in_f, 7 + si)
        w8 = packed_linear(8, out_f, in_f, 70 + si)
        wd = (torch.randn(out_f, in_f) * 0.02).to(torch.bfloat16)
        mods = {}
        for n in w4_names:
            mods[f"w4:{n}"] = _share(w4)
            K.attach(mods[f"w4:{n}"], n)
        for n in w8_names:
            mods[f"w8:{n}"] = _share(w8)
            K.attach(mods[f"w8:{n}"], n)
        for batch in (1, 16):
            x = torch.randn(batch, in_f).to(torch.bfloat16)
            fns = {"bf16": lambda x=x, wd=wd: F.linear(x, wd)}
            fns.update({k: (lambda m=m, x=x: m(x)) for k, m in mods.items()})
            ms = _time_round_robin(fns, rounds)
            if with_dequant and batch == 1:
                dq = _share(w4)
                K.attach(dq, "dequant")
                ms["w4:dequant"] = _time_round_robin({"d": lambda dq=dq, x=x: dq(x)}, 2)["d"]
            results.append({"out": out_f, "in": in_f, "batch": batch, "ms": ms,
                            "speedup_vs_bf16": {k: ms["bf16"] / v for k, v in ms.items()}})
            progress.advance(task)
        for m in mods.values():
            K.attach(m, "reference")  # drop cached layouts before the next shape
    return results


# ------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dequant-tokens", type=int, default=2, help="decode steps for the dequantise-every-call path")
    ap.add_argument("--repeats", type=int, default=1, help="lockstep decode runs whose steps are pooled")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--micro-rounds", type=int, default=11)
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--skip-dequant", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    w4_names = [n for n in K.available_backends(4, "cpu", torch.bfloat16) if n not in ("reference", "dequant")]
    w8_names = [n for n in K.available_backends(8, "cpu", torch.bfloat16) if n not in ("reference", "dequant")]
    head = (f"torch {torch.__version__}, threads {torch.get_num_threads()} (set explicitly), CPU: {cpu_name()}, "
            f"{os.cpu_count()} logical cores")
    print(head)
    print(f"model: LLaMA-7B layer shapes (hidden 4096, inter 11008, 32 heads), {args.layers} layers, vocab "
          f"{args.vocab}, lm_head bf16; prompt {args.prompt} tokens, greedy decode {args.new_tokens} tokens, "
          f"batch 1, KV cache; variants decoded in lockstep, {args.repeats} run(s)")
    print(f"W4 backends: {w4_names}; W8 backends: {w8_names}")

    cfg = llama_config(args.layers, args.vocab)
    out: dict = {"config": {**vars(args), "out": str(args.out) if args.out else None, "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "cpu": cpu_name()}}
    prompt = torch.randint(0, args.vocab, (1, args.prompt), generator=_gen(5))
    with Progress(transient=True) as progress:
        shared = shared_parts(cfg)
        models = {"bf16": build_model(cfg, shared, "bf16", progress)}
        for kind, names in (("w4", w4_names), ("w8", w8_names)):
            first = None
            for n in names:
                models[f"{kind}:{n}"] = build_model(cfg, shared, kind, progress, like=first)
                first = first or models[f"{kind}:{n}"]
                K.attach(models[f"{kind}:{n}"], n)
        runs: dict[str, list[Decoder]] = {k: [] for k in models}
        task = progress.add_task("decode (variants in lockstep)", total=args.repeats)
        for _ in range(args.repeats):
            for label, d in decode_lockstep(models, prompt, args.new_tokens).items():
                runs[label].append(d)
            progress.advance(task)
        if not args.skip_dequant:
            dq = build_model(cfg, shared, "w4", progress, like=models[f"w4:{w4_names[0]}"])
            K.attach(dq, "dequant")
            runs["w4:dequant"] = [decode_lockstep({"d": dq}, prompt, args.dequant_tokens)["d"]]
        for m in models.values():
            K.attach(m, "reference")  # drop cached layouts before the micro-benchmark
        micro = [] if args.skip_micro else micro_bench(w4_names, w8_names, args.micro_rounds,
                                                       not args.skip_dequant, progress)

    def pooled(label, attr):
        return [t for d in runs[label] for t in getattr(d, attr)]

    def stats(label):
        stack, head = pooled(label, "stack_s"), pooled(label, "head_s")
        total = [a + b for a, b in zip(stack, head, strict=True)]
        return {"e2e_tok_s": 1 / statistics.median(total), "layers_tok_s": 1 / statistics.median(stack),
                "e2e_tok_s_mean": len(total) / sum(total), "layers_tok_s_mean": len(stack) / sum(stack),
                "head_ms": 1e3 * statistics.median(head), "prefill_s": statistics.median(d.prefill_s for d in runs[label]),
                "decode_tokens": len(runs[label][0].stack_s), "samples": len(stack)}

    base = stats("bf16")
    print()
    print("tokens/s = 1 / median step time over all interleaved steps (mean-based figures in the JSON);")
    print("layers = decoder stack only (embedding, attention with KV cache, MLP, norms), lm_head + argmax excluded")
    print(f"{'variant':22s} {'e2e tok/s':>10s} {'x bf16':>7s} {'layers tok/s':>13s} {'x bf16':>7s} "
          f"{'head ms':>8s} {'prefill s':>9s}  prefill-logit rel.diff / same greedy tokens vs")
    out["decode"] = {}
    for label in runs:
        st = stats(label)
        ref = f"w8:{w8_names[0]}" if label.startswith("w8") else "bf16"
        d, r = runs[label][0], runs[ref][0]
        rel = float((d.logits0 - r.logits0).norm() / r.logits0.norm())
        same = sum(a == b for a, b in zip(d.tokens, r.tokens, strict=False))
        note = f" ({st['decode_tokens']} decode tokens, measured)" if label == "w4:dequant" else ""
        st.update(e2e_x_bf16=st["e2e_tok_s"] / base["e2e_tok_s"], layers_x_bf16=st["layers_tok_s"] / base["layers_tok_s"],
                  compared_with=ref, prefill_logits_rel_diff=rel, same_tokens=same, tokens=d.tokens)
        print(f"{label:22s} {st['e2e_tok_s']:10.2f} {st['e2e_x_bf16']:7.2f} {st['layers_tok_s']:13.2f} "
              f"{st['layers_x_bf16']:7.2f} {st['head_ms']:8.1f} {st['prefill_s']:9.2f}  "
              f"{rel:.1e} / {same}/{len(d.tokens)} {ref}{note}")
        out["decode"][label] = st
    if micro:
        print("\nper-linear matmul, median ms (speed-up vs bf16 F.linear), bf16 activations, caches evicted before each call")
        for r in micro:
            cells = "  ".join(f"{k} {v:.3f} ({r['speedup_vs_bf16'][k]:.2f}x)" for k, v in r["ms"].items())
            print(f"{r['out']:5d}x{r['in']:<5d} batch {r['batch']:2d}: {cells}")
        out["micro"] = micro
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.out}")
    return out


if __name__ == "__main__":
    main()
