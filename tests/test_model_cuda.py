"""The model on a CUDA GPU: reference parity, attention paths, MAE, mixed precision, head training step.

Skipped without CUDA. Run directly (``python tests/test_model_cuda.py``) it also prints a JSON line with
encoder throughput.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_muvit.model import MuViTEncoder, MuViTSegmenter, load_model

REF = Path(__file__).parent / "data" / "reference"
CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _cases(kind):
    return [c for c in json.loads((REF / "cases.json").read_text())["cases"] if c["kind"] == kind]


def _exact_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def test_cuda_encoder_parity_and_attention_paths():
    _exact_fp32()
    worst = 0.0
    for case in _cases("encoder"):
        enc = load_model(REF / case["folder"], device="cuda")
        data = np.load(REF / case["npz"])
        x = torch.from_numpy(data["x"]).cuda()
        bbox = torch.from_numpy(data["bbox"]).cuda() if "bbox" in data else None
        with torch.no_grad():
            fused = enc(x, bbox)
            tokens, attn = enc(x, bbox, return_attention=True)
        assert fused.device.type == "cuda"
        worst = max(worst, float(np.abs(fused.cpu().numpy() - data["tokens"]).max()))
        assert torch.allclose(tokens, fused, atol=1e-5)
        np.testing.assert_allclose(torch.stack(attn).cpu().numpy(), data["attn"], atol=1e-5, rtol=0)
    assert worst < 1e-5, worst


def test_cuda_mae_parity():
    _exact_fp32()
    for case in _cases("mae"):
        mae = load_model(REF / case["folder"], device="cuda")
        data = np.load(REF / case["npz"])
        x = torch.from_numpy(data["x"]).cuda()
        bbox = torch.from_numpy(data["bbox"]).cuda() if "bbox" in data else None
        with torch.no_grad():
            out = mae(x, bbox, mask_indices=torch.from_numpy(data["idx"]).cuda())
        np.testing.assert_allclose(out["pred_patches"].cpu().numpy(), data["output"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(out["loss"].cpu().numpy(), data["loss"], atol=1e-5, rtol=0)


def test_cuda_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=3, levels=(1, 8, 32), patch_size=8, dim=320, heads=4).cuda().eval()
    x = torch.rand(2, 3, 3, 128, 128, device="cuda")
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = enc(x)
    assert torch.isfinite(low).all()
    rel = float((low.float() - ref).norm() / ref.norm())
    assert rel < 0.05, rel


def test_cuda_segmenter_training_step():
    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=3, levels=(1, 8), patch_size=8, num_layers=2, dim=64, heads=2)
    seg = MuViTSegmenter(enc, 4).cuda().train()
    opt = torch.optim.AdamW(seg.parameters(), lr=1e-3)
    x = torch.rand(4, 2, 3, 64, 64, device="cuda")
    y = torch.randint(0, 4, (4, 64, 64), device="cuda")
    losses = []
    for _ in range(20):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(seg(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def throughput() -> dict:
    """Crops per second of the reference-default encoder (fp32 and bf16 autocast), B=32, 3 x 128^2 crops."""
    torch.manual_seed(0)
    enc = MuViTEncoder(in_channels=3, levels=(1, 8, 32), patch_size=8, dim=320, heads=4).cuda().eval()
    x = torch.rand(32, 3, 3, 128, 128, device="cuda")
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, batch=32)
    for name, dtype in [("fp32", None), ("bf16", torch.bfloat16)]:
        times = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            for i in range(13):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                enc(x)
                torch.cuda.synchronize()
                if i >= 3:
                    times.append(time.perf_counter() - t0)
        result[f"{name}_s_per_batch"] = round(float(np.median(times)), 5)
        result[f"{name}_samples_per_s"] = round(32 / float(np.median(times)), 1)
    return result


if __name__ == "__main__":
    for fn in [test_cuda_encoder_parity_and_attention_paths, test_cuda_mae_parity,
               test_cuda_bf16_autocast_close_to_fp32, test_cuda_segmenter_training_step]:
        fn()
        print("passed", fn.__name__)
    print(json.dumps(throughput()))
