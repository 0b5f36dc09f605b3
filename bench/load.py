"""Packed-load benchmark: peak memory of ``grace.load`` against the packed checkpoint size.

    python bench/load.py [--layers 8] [--dir /tmp/grace-bench-load] [--keep]

Writes a W4G128 AWQ-packed LLaVA-1.5 checkpoint in the original layout at LLaMA-7B layer
dimensions (hidden 4096, MLP 11008, 32 heads, vocab 32000; ``--layers`` decoder layers; random
codes and scales; fp16 embeddings, head, norms and projector; a 2-layer CLIP-L/336-shaped tower
in ``clip/``), then loads it in a fresh process through ``grace.load``'s normal code path and
prints the load time, the peak RSS, the packed bytes and their ratio. The goal is
peak/packed <= 1.3: the loader never builds the dense model and reads one tensor at a time.
The ratio is printed both for the whole process and for the load alone (peak minus the RSS
of the process after ``import torch, transformers, grace``), since the interpreter and
libraries are a fixed ~0.4 GB that has nothing to do with the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

H, FF, V, HEADS, G = 4096, 11008, 32000, 32, 128


def _packed_linear(out_f: int, in_f: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "qweight": torch.randint(-(2**31), 2**31 - 1, (in_f, out_f // 8), dtype=torch.int32, generator=gen),
        "qzeros": torch.full((in_f // G, out_f // 8), -2004318072, dtype=torch.int32),
        "scales": (torch.rand(in_f // G, out_f, generator=gen) * 1e-2 + 1e-3).half(),
    }


def write_checkpoint(d: Path, layers: int) -> int:
    from grace.formats.metadata import PackedMetadata
    from grace.io.tensors import write_safetensors
    from grace.models import families as F
    from grace.models.tiny_tokenizers import write_llava_tokenizer_files

    gen = torch.Generator().manual_seed(0)
    d.mkdir(parents=True)
    t: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": (torch.randn(V, H, generator=gen) * 0.02).half(),
        "model.norm.weight": torch.ones(H, dtype=torch.float16),
        "lm_head.weight": (torch.randn(V, H, generator=gen) * 0.02).half(),
        "model.mm_projector.0.weight": (torch.randn(H, 1024, generator=gen) * 0.02).half(),
        "model.mm_projector.0.bias": torch.zeros(H, dtype=torch.float16),
        "model.mm_projector.2.weight": (torch.randn(H, H, generator=gen) * 0.02).half(),
        "model.mm_projector.2.bias": torch.zeros(H, dtype=torch.float16),
    }
    mods = []
    shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
              "self_attn.o_proj": (H, H), "mlp.gate_proj": (FF, H), "mlp.up_proj": (FF, H), "mlp.down_proj": (H, FF)}
    for n in range(layers):
        p = f"model.layers.{n}."
        t[p + "input_layernorm.weight"] = torch.ones(H, dtype=torch.float16)
        t[p + "post_attention_layernorm.weight"] = torch.ones(H, dtype=torch.float16)
        for suffix, (o, i) in shapes.items():
            for k, v in _packed_linear(o, i, gen).items():
                t[p + suffix + "." + k] = v
            mods.append(p + suffix)
    write_safetensors(d / "model.safetensors", t, {"format": "pt"})
    meta = PackedMetadata(4, G, mods)
    meta.save(d)
    cfg = {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "hidden_size": H,
        "intermediate_size": FF, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "silu", "torch_dtype": "float16", "mm_vision_tower": "clip",
        "mm_hidden_size": 1024, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False, "awq_packing": meta.config_block(),
    }
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    write_llava_tokenizer_files(d)
    # CLIP-L/14-336-shaped tower with 2 layers (the real tower is 24 layers, ~0.6 GB fp16)
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vc = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=2, num_attention_heads=16,
                          image_size=336, patch_size=14)
    clip = CLIPVisionModel(vc).half()
    (d / "clip").mkdir()
    write_safetensors(d / "clip" / "model.safetensors",
                      {"vision_model." + k: v for k, v in clip.state_dict().items() if "position_ids" not in k})
    (d / "clip" / "config.json").write_text(json.dumps(F.clip_dir_config(vc)))
    del t
    return sum(f.stat().st_size for f in d.rglob("*.safetensors"))


_CHILD = r"""
import resource, sys, time, json
import torch, transformers, grace
from grace.io.load import load
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss_mb()
t0 = time.perf_counter()
vlm = load(sys.argv[1])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load_s": dt, "peak_mb": peak, "base_mb": base, "after_mb": rss_mb(),
                  "footprint": vlm.footprint(), "kernel": vlm.kernel_name, "quant": vlm.quant}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/grace-bench-load"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.dir.exists():
        shutil.rmtree(a.dir)
    t0 = time.perf_counter()
    packed = write_checkpoint(a.dir, a.layers)
    print(f"wrote {a.layers}-layer 7B-dims W4G128 packed LLaVA (original layout) to {a.dir}: "
          f"{packed / 2**20:.0f} MiB of tensors in {time.perf_counter() - t0:.1f} s")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(a.dir)], capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    pk = packed / 2**20
    print(f"load seconds        : {res['load_s']:.2f}")
    print(f"packed bytes        : {pk:.0f} MiB")
    print(f"peak RSS (process)  : {res['peak_mb']:.0f} MiB  (after imports {res['base_mb']:.0f} MiB)")
    print(f"ratio peak/packed   : {res['peak_mb'] / pk:.2f}  (whole process)")
    print(f"ratio (peak-base)/packed: {(res['peak_mb'] - res['base_mb']) / pk:.2f}  (the load itself; goal <= 1.3)")
    print(f"weights in memory   : {res['footprint']['total'] / 2**20:.0f} MiB; kernel {res['kernel']}; {res['quant']}")
    if not a.keep:
        shutil.rmtree(a.dir)


if __name__ == "__main__":
    main()
