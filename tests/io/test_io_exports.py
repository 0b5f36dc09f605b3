"""``grace.load`` reads the standard exports back: QAT -> ``grace export`` -> ``grace.load`` is exact.

For tiny LLaVA (transformers layout) and Qwen3-VL, W4 and W8 compressed-tensors and W4 AWQ:

* the integer codes of every PackedLinear loaded from the export equal (``torch.equal``) those
  of the QAT directory loaded packed, and so do the fp16 scales;
* logits: the export loaded in fp32 equals (``torch.equal``) the QAT directory loaded packed in
  fp32 (same codes, same scales, same kernel; the tiny models' unquantized weights are rounded
  to fp16 before training so the fp16 export stores them losslessly). Against the fake-quant
  model (``qat_as="fake"``, fp32 ``F.linear`` on the grid weights) the packed kernels differ
  by accumulation order only: asserted <= 1e-4 absolute. The default load (fp16, as exported)
  is within 1e-2 of the fake-quant model (logits of magnitude ~1.5);
* LLaVA exports carry an extra ``<image>`` row in embed_tokens / lm_head; the first ``V``
  logit columns are compared, and generation never emits the added id.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

import grace
from grace.errors import GraceError
from grace.export import export_checkpoint
from grace.io import save_checkpoint
from grace.models.tiny import make_tiny
from grace.quant.api import packed_modules
from grace.quant.modules import PackedLinear

IMG = Image.new("RGB", (40, 30), (200, 30, 10))
CASES = [("llava", 4, "compressed-tensors"), ("llava", 8, "compressed-tensors"), ("llava", 4, "awq"),
         ("qwen3vl", 4, "compressed-tensors"), ("qwen3vl", 8, "compressed-tensors"), ("qwen3vl", 4, "awq")]
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_measured():
    yield
    for k, v in MEASURED.items():
        print(f"\nmax|dlogits| {k}: {v:.3e}")


def _logits(vlm, inputs):
    with torch.no_grad():
        return vlm.model(**inputs).logits.float()


@pytest.fixture(scope="module")
def qat_dirs(tmp_path_factory):
    """One QAT checkpoint per (family, bits), its unquantized weights fp16-representable."""
    root = tmp_path_factory.mktemp("qat")
    out = {}
    for fam in ("llava", "qwen3vl"):
        for spec in (grace.W4G128, grace.W8G128):
            v = make_tiny(fam)
            with torch.no_grad():
                for p in v.model.parameters():
                    p.copy_(p.half().float())
            grace.quantize(v.model, spec)
            with torch.no_grad():  # move off plain rounding of the init, as training would
                for m in v.model.modules():
                    if hasattr(m, "log_scale"):
                        m.log_scale.add_(0.05)
            grace.bake(v.model)
            out[fam, spec.bits] = save_checkpoint(v, None, None, root / f"{fam}-w{spec.bits}")
    return out


@pytest.fixture(scope="module")
def exports(qat_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    return {(f, b, fmt): export_checkpoint(qat_dirs[f, b], root / f"{f}-w{b}-{fmt}", fmt).dst
            for f, b, fmt in CASES}


PROMPTS = {"text": (None, "How many cats are there?"), "image": (IMG, "What is the color of the box?")}


@pytest.fixture(scope="module")
def references(qat_dirs):
    """Per (family, bits), loaded once: the QAT dir packed (fp32) and fake-quant, and their logits."""
    cache = {}

    def get(family, bits):
        if (family, bits) not in cache:
            ref = grace.load(qat_dirs[family, bits])  # packed from the QAT sidecar, fp32 as saved
            fake = grace.load(qat_dirs[family, bits], qat_as="fake")
            inputs = {t: ref.prepare(img, q) for t, (img, q) in PROMPTS.items()}
            cache[family, bits] = (ref, inputs, {t: _logits(ref, i) for t, i in inputs.items()},
                                   {t: _logits(fake, i) for t, i in inputs.items()})
        return cache[family, bits]

    return get


@pytest.mark.parametrize("family, bits, fmt", CASES)
def test_export_loads_back_exactly(exports, references, family, bits, fmt):
    exp = exports[family, bits, fmt]
    e32 = grace.load(exp, dtype="float32")
    assert e32.quant == {"bits": bits, "group_size": 128, "format": fmt, "source": fmt}
    assert (e32.family, e32.layout) == (family, "hf")
    ref, inputs, ref_logits, fake_logits = references(family, bits)

    pe, pr = packed_modules(e32.model), packed_modules(ref.model)
    assert len(pe) == 14 and sorted(pe) == sorted(pr)
    for name, m in pe.items():
        assert isinstance(m, PackedLinear) and m.backend is not None  # kernels attached
        ce, se, ge = m.unpack()
        cr, sr, gr = pr[name].unpack()
        assert torch.equal(ce, cr), name
        assert torch.equal(se, sr) and ge == gr == 128, name
    assert e32.kernel_name == ref.kernel_name

    for tag, inp in inputs.items():
        r, f = ref_logits[tag], fake_logits[tag]
        v = r.shape[-1]
        a = _logits(e32, inp)
        assert a.shape[-1] == v + (1 if family == "llava" else 0)  # the <image> row LLaVA exports add
        assert torch.equal(a[..., :v], r), f"{family} {fmt} W{bits} {tag}: export != QAT packed"
        d_fake = float((a[..., :v] - f).abs().max())
        MEASURED[f"{family} {fmt} W{bits} {tag}: export fp32 vs QAT fake-quant"] = d_fake
        assert d_fake <= 1e-4
    e16 = grace.load(exp)  # the default: the export's own dtype (float16)
    assert e16.model.config.dtype == torch.float16
    f = fake_logits["image"]
    d16 = float((_logits(e16, inputs["image"])[..., :f.shape[-1]] - f).abs().max())
    MEASURED[f"{family} {fmt} W{bits} image: export fp16 vs QAT fake-quant fp32 (max |logit| "
             f"{float(f.abs().max()):.2f})"] = d16
    assert d16 <= 1e-2


def test_llava_export_never_generates_its_added_rows(exports):
    exp = exports["llava", 4, "compressed-tensors"]
    v = grace.load(exp)
    added = json.loads((exp / "grace_export.json").read_text())
    ids = added["added_token_ids"]
    assert ids == [v.model.config.get_text_config().vocab_size - 1]
    assert v.model.generation_config.suppress_tokens == ids
    # make the added row win every greedy step unless it is suppressed
    idx = torch.tensor(ids)
    v.model.lm_head.register_forward_hook(lambda m, i, o: o.index_fill(-1, idx, 1e4))
    from grace.infer.generate import generate

    g = generate(v, IMG, "Describe the image.", max_new_tokens=6)
    assert g.n_new_tokens > 0 and not set(g.token_ids) & set(ids)
    v.model.generation_config.suppress_tokens = None  # control: the test can fail
    g = generate(v, IMG, "Describe the image.", max_new_tokens=6)
    assert set(g.token_ids) & set(ids)


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_inconsistent_exports_are_refused(exports, tmp_path):
    d = _copy(exports["qwen3vl", 4, "compressed-tensors"], tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["ignore"].append("re:.*layers\\.0\\.mlp\\.down_proj$")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GraceError, match=r"config.json: quantization_config leaves module .*layers\.0\.mlp\.down_proj"):
        grace.load(d)
    cfg["quantization_config"]["ignore"].pop()
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GraceError, match="group size 128.*says group_size 64"):
        grace.load(d)
    cfg["quantization_config"]["quant_method"] = "gptq"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GraceError, match="quant_method='gptq'"):
        grace.load(d)


def test_export_missing_a_scale_tensor_is_refused(exports, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(exports["llava", 8, "compressed-tensors"], tmp_path)
    files = sorted(d.glob("*.safetensors"))
    key = next(k for f in files for k in load_file(str(f)) if k.endswith("layers.1.mlp.up_proj.weight_scale"))
    for f in files:
        sd = load_file(str(f))
        if key in sd:
            del sd[key]
            save_file(sd, str(f), metadata={"format": "pt"})
    idx = d / "model.safetensors.index.json"
    if idx.is_file():
        j = json.loads(idx.read_text())
        j["weight_map"].pop(key)
        idx.write_text(json.dumps(j))
    with pytest.raises(GraceError, match=r"up_proj\.weight_scale is missing"):
        grace.load(d)
