"""Parity with the reference muvit 0.1.0 package, from fixtures written by scripts/make_reference_fixtures.py.

The fixtures hold reference-written checkpoint folders and the reference's outputs; no reference install is
needed. The reverse direction (folders we write load in the reference) runs when a Python with ``muvit`` is
named in ``NAPARI_MUVIT_REFERENCE_PYTHON`` or ``muvit`` is importable here.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_muvit.model import MuViTEncoder, MuViTMAE, load_model, save_model

REF = Path(__file__).parent / "data" / "reference"
MANIFEST = json.loads((REF / "cases.json").read_text())
ENCODER_CASES = [c for c in MANIFEST["cases"] if c["kind"] == "encoder"]
MAE_CASES = [c for c in MANIFEST["cases"] if c["kind"] == "mae"]
TOL = 1e-5


def arrays(case):
    data = np.load(REF / case["npz"])
    x = torch.from_numpy(data["x"])
    bbox = torch.from_numpy(data["bbox"]) if "bbox" in data else None
    return data, x, bbox


def test_fixtures_cover_the_required_variants():
    cfgs = [c.get("config", {}) for c in MANIFEST["cases"]]
    assert {c.get("rotary_mode", "per_layer") for c in cfgs} == {"per_layer", "shared", "fixed", "none"}
    assert {c.get("attention_mode", "all") for c in cfgs} == {"all", "causal", "same"}
    assert {c["ndim"] for c in MANIFEST["cases"]} == {2, 3}
    assert {c.get("decoder_mode") for c in cfgs} >= {"multi", "single", "multi_iso"}
    assert {c.get("loss") for c in cfgs} >= {"mse", "norm_mse"}
    assert any(c.get("bbox") is False for c in MANIFEST["cases"]) and any(c.get("bbox") for c in MANIFEST["cases"])
    assert any(c.get("extract_levels") for c in MANIFEST["cases"])
    assert any(tuple(c.get("levels", ())) == (1, 8, 32) for c in cfgs)
    assert sum(p.stat().st_size for p in REF.rglob("*") if p.is_file()) < 5e6


@pytest.mark.parametrize("case", ENCODER_CASES, ids=[c["name"] for c in ENCODER_CASES])
def test_encoder_matches_reference(case):
    enc = load_model(REF / case["folder"])
    assert isinstance(enc, MuViTEncoder) and enc.encoder is enc
    data, x, bbox = arrays(case)
    with torch.no_grad():
        tokens = enc(x, bbox)
        tokens_w, attn = enc(x, bbox, return_attention=True)
        feats = enc.spatial_features(x, bbox)
    np.testing.assert_allclose(tokens.numpy(), data["tokens"], atol=TOL, rtol=0)
    np.testing.assert_allclose(tokens_w.numpy(), data["tokens"], atol=TOL, rtol=0)
    np.testing.assert_allclose(feats.numpy(), data["features"], atol=TOL, rtol=0)
    np.testing.assert_allclose(torch.stack(attn).numpy(), data["attn"], atol=TOL, rtol=0)
    coords = enc.patch_coords(bbox, x.shape[3:], x.shape[0])
    np.testing.assert_allclose(coords.numpy(), data["coords"], atol=1e-4, rtol=0)
    if "sub_levels" in data:
        levels = tuple(type(enc.levels[0])(v) for v in data["sub_levels"])
        sub = enc.extract_levels(levels)
        keep = [enc.levels.index(lv) for lv in levels]
        with torch.no_grad():
            sub_tokens = sub(x[:, keep], None if bbox is None else bbox[:, keep])
        np.testing.assert_allclose(sub_tokens.numpy(), data["sub_tokens"], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", MAE_CASES, ids=[c["name"] for c in MAE_CASES])
def test_mae_matches_reference_with_its_masking(case):
    mae = load_model(REF / case["folder"])
    assert isinstance(mae, MuViTMAE)
    data, x, bbox = arrays(case)
    idx = torch.from_numpy(data["idx"])
    with torch.no_grad():
        out = mae(x, bbox, mask_indices=idx)
    assert out["n_keep"] == int(data["n_keep"])
    np.testing.assert_allclose(out["pred_patches"].numpy(), data["output"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["loss"].numpy(), data["loss"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["reco"].numpy(), data["reco"], atol=TOL, rtol=0)
    masked = idx[:, out["n_keep"]:]
    assert out["mask"].sum().item() == masked.numel()
    assert bool(out["mask"].gather(1, masked).all())
    # the same masking given as a boolean mask (visible tokens in another order) gives the same loss
    with torch.no_grad():
        again = mae(x, bbox, mask_indices=out["mask"])
    np.testing.assert_allclose(again["loss"].numpy(), data["loss"], atol=TOL, rtol=0)


def _reference_python():
    if importlib.util.find_spec("muvit") is not None:
        return sys.executable
    return os.environ.get("NAPARI_MUVIT_REFERENCE_PYTHON")


@pytest.mark.skipif(_reference_python() is None, reason="reference muvit package not available")
def test_folders_we_write_load_in_the_reference(tmp_path):
    enc_case = next(c for c in ENCODER_CASES if c["name"] == "enc2d_per_layer_all")
    mae_case = next(c for c in MAE_CASES if c["name"] == "mae2d_multi_mse")
    save_model(load_model(REF / enc_case["folder"]), tmp_path / "enc")
    save_model(load_model(REF / mae_case["folder"]), tmp_path / "mae")
    script = textwrap.dedent(f"""
        import numpy as np, torch
        from muvit import MuViTEncoder2d, MuViTMAE2d
        d = np.load({str(REF / enc_case["npz"])!r})
        enc = MuViTEncoder2d.from_folder({str(tmp_path / "enc")!r}).eval()
        with torch.no_grad():
            t, _, _ = enc(torch.from_numpy(d["x"]), torch.from_numpy(d["bbox"]))
        mae = MuViTMAE2d.from_folder({str(tmp_path / "mae")!r}).eval()
        print(float(np.abs(t.numpy() - d["tokens"]).max()), mae.decoder_mode, len(mae.decoder))
    """)
    res = subprocess.run([_reference_python(), "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    diff, mode, n_dec = res.stdout.split()[-3:]
    assert float(diff) < TOL and mode == "multi" and int(n_dec) == 3
