"""Encoder behaviour, heads and checkpoint round trips (tiny models, CPU)."""

import pytest
import torch

from napari_muvit.model import (
    ModelCard,
    MuViTClassifier,
    MuViTEncoder,
    MuViTSegmenter,
    load_model,
    model_hash,
    save_model,
)


def tiny(ndim=2, **kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=2, levels=(1, 4), patch_size=4, num_layers=2, dim=48, heads=2, ndim=ndim)
    cfg.update(kw)
    return MuViTEncoder(**cfg).eval()


def boxes(B, levels, shape, offset=(3.0, -5.0)):
    """Nested boxes in world px: level l covers (S-1)*l around a shifted centre."""
    out = []
    for lv in levels:
        half = torch.tensor([lv * (s - 1) / 2 for s in shape])
        c = torch.tensor(offset) * lv
        out.append(torch.stack([c - half, c + half]))
    return torch.stack(out)[None].repeat(B, 1, 1, 1)


@pytest.mark.parametrize("mode", ["all", "causal", "same"])
def test_attention_weights_path_matches_fused(mode):
    enc = tiny(attention_mode=mode)
    x = torch.randn(2, 2, 2, 16, 24)
    bbox = boxes(2, enc.levels, (16, 24))
    with torch.no_grad():
        fused = enc(x, bbox)
        tokens, attn = enc(x, bbox, return_attention=True)
    N = 2 * 4 * 6
    assert fused.shape == (2, N, 48)
    assert torch.allclose(tokens, fused, atol=1e-5)
    assert len(attn) == 2 and attn[0].shape == (2, 2, N, N)
    assert torch.allclose(attn[1].sum(-1), torch.ones(2, 2, N), atol=1e-5)
    level = torch.arange(2).repeat_interleave(N // 2)
    blocked = {"all": torch.zeros(N, N, dtype=bool), "causal": level[:, None] < level[None],
               "same": level[:, None] != level[None]}[mode]
    assert float(attn[0][..., blocked].abs().sum()) == 0.0


def test_patch_coords_endpoints_and_default_box():
    enc = tiny()
    bbox = boxes(1, enc.levels, (16, 24))
    c = enc.patch_coords(bbox, (16, 24))
    assert c.shape == (1, 48, 2)
    assert torch.allclose(c[0, 0], bbox[0, 0, 0]) and torch.allclose(c[0, 23], bbox[0, 0, 1])
    assert torch.allclose(c[0, 24], bbox[0, 1, 0]) and torch.allclose(c[0, 47], bbox[0, 1, 1])
    d = enc.patch_coords(None, (16, 24), batch_size=3)
    assert d.shape == (3, 48, 2)
    assert torch.allclose(d[0, 24], torch.tensor([-4 * 7.5, -4 * 11.5]))


def test_spatial_features_layout_and_3d():
    enc = tiny()
    x = torch.randn(1, 2, 2, 8, 12)
    with torch.no_grad():
        tok = enc(x)
        feats = enc.spatial_features(x)
    assert feats.shape == (1, 2, 48, 2, 3)
    assert torch.equal(feats[0, 1, :, 1, 2], tok[0, 6 + 5])
    enc3 = tiny(ndim=3, dim=64)
    x3 = torch.randn(1, 2, 2, 4, 8, 8)
    with torch.no_grad():
        f3 = enc3.spatial_features(x3)
    assert f3.shape == (1, 2, 64, 1, 2, 2)


def test_extract_levels_matches_parent_for_same_level_attention():
    enc = tiny(levels=(1, 4, 16), attention_mode="same")
    sub = enc.extract_levels((1, 16))
    assert sub.levels == (1, 16) and sub.encoder is sub
    x = torch.randn(1, 3, 2, 8, 8)
    bbox = boxes(1, enc.levels, (8, 8))
    with torch.no_grad():
        full = enc(x, bbox)
        part = sub(x[:, [0, 2]], bbox[:, [0, 2]])
    # with "same" attention levels do not interact, so the kept levels' tokens are unchanged
    assert torch.allclose(part[0, :4], full[0, :4], atol=1e-5)
    assert torch.allclose(part[0, 4:], full[0, 8:], atol=1e-5)
    with pytest.raises(ValueError, match="not a subset"):
        enc.extract_levels((2,))


def test_encoder_save_load_roundtrip(tmp_path):
    enc = tiny(rotary_mode="shared")
    with torch.no_grad():
        enc.rotary_pos_embs[0].inv_freq.mul_(1.5)  # a "trained" frequency must survive the round trip
    path = save_model(enc, tmp_path / "enc")
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "model.pth", "muvit.yaml"]
    assert "!!python/tuple" in (path / "config.yaml").read_text()
    loaded = load_model(path)
    assert isinstance(loaded, MuViTEncoder) and loaded.card.task == "encoder"
    x = torch.randn(1, 2, 2, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), enc(x), atol=1e-6)
    h = model_hash(path)
    assert len(h) == 16 and h == model_hash(path)
    with pytest.raises(FileExistsError):
        save_model(enc, path)
    save_model(enc, path, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("head", ["unetr", "probe"])
def test_segmenter_shapes_and_roundtrip(tmp_path, head):
    enc = tiny(patch_size=8, levels=(1, 8, 32))
    seg = MuViTSegmenter(enc, 3, head=head).eval()
    x = torch.randn(2, 3, 2, 32, 32)
    bbox = boxes(2, enc.levels, (32, 32))
    with torch.no_grad():
        out = seg(x, bbox)
    assert out.shape == (2, 3, 32, 32)
    assert seg.encoder_frozen == (head == "probe")
    assert all(k.startswith(("encoder.", "head.")) for k in seg.state_dict())
    card = ModelCard(task="segmentation", levels=(1, 8, 32), crop_size=32, in_channels=2,
                     class_names=["bg", "a", "b"], class_colors=["#000000", "#ff0000", "#00ff00"])
    path = save_model(seg, tmp_path / "seg", card=card)
    loaded = load_model(path)
    assert isinstance(loaded, MuViTSegmenter) and loaded.card.class_names == ["bg", "a", "b"]
    with torch.no_grad():
        assert torch.allclose(loaded(x, bbox), out, atol=1e-5)


def test_fuse_levels_samples_coarse_features_at_world_position():
    from napari_muvit.model.heads import fuse_levels

    enc = tiny(patch_size=4)
    # level 1 token grid 4x4 over box [0, 12*4] ; level 0 box is a sub-window: tokens land on coarse tokens
    feats = torch.zeros(1, 2, 48, 4, 4)
    feats[0, 1, 0] = torch.arange(16.0).view(4, 4)
    bbox = torch.tensor([[[[16.0, 16.0], [28.0, 28.0]], [[0.0, 0.0], [48.0, 48.0]]]])
    fused = fuse_levels(feats, bbox, enc, (16, 16))
    # fine token (i, j) sits at world 16 + 4i; coarse grid index = world / 16
    expected = torch.tensor([[1 + 0.25 * i, 1 + 0.25 * j] for i in range(4) for j in range(4)])
    got = fused[0, 48].flatten()
    assert torch.allclose(got, expected[:, 0] * 4 + expected[:, 1], atol=1e-5)


def test_classifier_shapes_and_roundtrip(tmp_path):
    enc = tiny()
    clf = MuViTClassifier(enc, 4, hidden=16).eval()
    x = torch.randn(3, 2, 2, 8, 8)
    with torch.no_grad():
        out = clf(x)
    assert out.shape == (3, 4)
    loaded = load_model(save_model(clf, tmp_path / "clf"))
    assert isinstance(loaded, MuViTClassifier)
    with torch.no_grad():
        assert torch.allclose(loaded(x), out, atol=1e-5)


def test_demo_missing_is_a_clear_error(monkeypatch, tmp_path):
    from napari_muvit.model import checkpoint

    monkeypatch.setattr(checkpoint, "DEMO_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="demo model is not installed"):
        load_model("demo")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    from napari_muvit.model import checkpoint

    enc = tiny()
    good = save_model(enc, tmp_path / "m", card=ModelCard(normalization={"policy": "fixed", "low": [0], "high": [255]},
                                                          pixel_size=(0.5, 0.5), crop_size=8))
    before = (good / "model.pth").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_model(tiny(dim=40), tmp_path / "m", overwrite=True)
    with pytest.raises(OSError):
        save_model(enc, tmp_path / "new")
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left behind
    assert (good / "model.pth").read_bytes() == before
    card = load_model(good).card
    assert card.pixel_size == (0.5, 0.5) and card.normalization["high"] == [255] and card.crop_size == 8


def test_card_head_type_alias_is_understood(tmp_path):
    seg = MuViTSegmenter(tiny(patch_size=8), 2, head="probe")
    path = save_model(seg, tmp_path / "seg")
    (path / "muvit.yaml").write_text("task: segmentation\nhead: {type: probe, num_classes: 2}\n")
    loaded = load_model(path)
    assert loaded.head_type == "probe" and loaded.num_classes == 2


def test_real_rope_fallback_equals_complex_path():
    from napari_muvit.model.rope import apply_rope

    torch.manual_seed(0)
    t = torch.randn(2, 5, 3, 4, 20)  # (B, N, qk, heads, dh)
    angles = torch.randn(2, 5, 10) * 100
    complex_rot = torch.polar(torch.ones_like(angles), angles)[:, :, None, None]
    real_rot = torch.stack([angles.cos(), angles.sin()], -1)[:, :, None, None]
    a, b = apply_rope(t, complex_rot), apply_rope(t, real_rot)
    assert torch.allclose(a, b, atol=1e-5)
    # pair (t0, t1) -> (t0 cos - t1 sin, t1 cos + t0 sin)
    c, s = angles[0, 0, 0].cos(), angles[0, 0, 0].sin()
    t0, t1 = t[0, 0, 0, 0, 0], t[0, 0, 0, 0, 1]
    assert torch.allclose(a[0, 0, 0, 0, :2], torch.stack([t0 * c - t1 * s, t1 * c + t0 * s]), atol=1e-5)
    assert torch.allclose(a.norm(dim=-1), t.norm(dim=-1), atol=1e-4)


def test_float64_input_and_half_precision_model():
    enc = tiny()
    x = torch.rand(1, 2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = enc(x.float())
        assert torch.allclose(enc(x), ref)
        low = enc.to(torch.bfloat16)(x)
    assert low.dtype == torch.bfloat16
    assert float((low.float() - ref).norm() / ref.norm()) < 0.05


def test_model_package_imports_no_gui_or_reference_code():
    import subprocess
    import sys

    code = ("import sys, napari_muvit.model; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'einops', 'muvit'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
