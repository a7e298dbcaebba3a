"""Write parity fixtures from the reference ``muvit==0.1.0`` package into ``tests/data/reference/``.

Run in an environment where ``muvit`` is installed (and napari-muvit importable, for the reverse check):

    python scripts/make_reference_fixtures.py [--out tests/data/reference]

Every case is a reference-written checkpoint folder plus an ``.npz`` of inputs and reference outputs
(tokens, spatial features, attention weights with the fused path switched off, MAE outputs with the
masking indices used). ``cases.json`` lists the cases. Weights are perturbed from their initial values
(including RoPE frequencies and LayerNorms) so that loading them is actually exercised.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

torch.set_num_threads(2)


def nested_boxes(B, levels, shape, gen):
    """Nested, non-concentric world boxes ``(B, L, 2, ndim)``: each finer box sits off-centre in the next."""
    shape = torch.tensor(shape, dtype=torch.float64)
    boxes = torch.zeros(B, len(levels), 2, len(shape), dtype=torch.float64)
    for b in range(B):
        lo = torch.rand(len(shape), generator=gen, dtype=torch.float64) * 500
        for li in reversed(range(len(levels))):
            ext = (shape - 1) * levels[li]
            if li < len(levels) - 1:
                outer = (shape - 1) * levels[li + 1]
                u = 0.1 + 0.8 * torch.rand(len(shape), generator=gen, dtype=torch.float64)
                lo = boxes[b, li + 1, 0] + u * (outer - ext)
            boxes[b, li, 0], boxes[b, li, 1] = lo, lo + ext
    return boxes.float()


def perturb(model, gen):
    """Move every parameter and buffer away from its initial value, as training would."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("inv_freq"):
                t.mul_(1 + 0.2 * torch.rand(t.shape, generator=gen))
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=gen))


def capture_attention(encoder):
    """Switch the reference's fused attention off and record post-softmax weights per layer."""
    store = []
    for layer in encoder.layers:
        layer.attn.attend.flash = False
        layer.attn.attend.register_forward_hook(lambda m, i, o: store.append(o[1].post_softmax_attn.detach().clone()))
    return store


ENCODER_CASES = [
    # name, ndim, config, crop shape, use bbox, extract_levels
    ("enc2d_per_layer_all", 2, dict(levels=(1, 8, 32), rotary_mode="per_layer", attention_mode="all"),
     (16, 24), True, (1, 32)),
    ("enc2d_shared_causal", 2, dict(levels=(1, 4), rotary_mode="shared", attention_mode="causal"),
     (12, 8), True, None),
    ("enc2d_fixed_same_rectpatch", 2, dict(levels=(1, 8, 32), rotary_mode="fixed", attention_mode="same",
                                           patch_size=(4, 2)), (8, 12), True, (8,)),
    ("enc2d_none_onehead_nolevelembed", 2, dict(levels=(1, 4), rotary_mode="none", heads=1, dim=24,
                                                use_level_embed=False), (8, 8), False, None),
    ("enc2d_per_layer_nobbox_causal", 2, dict(levels=(1, 8, 32), attention_mode="causal"), (12, 16), False, None),
    ("enc3d_per_layer_causal", 3, dict(levels=(1, 4), dim=60, patch_size=(2, 4, 4), attention_mode="causal"),
     (8, 8, 12), True, None),
    ("enc3d_shared_same_nobbox", 3, dict(levels=(1, 4, 16), dim=60, num_layers=1, patch_size=(2, 4, 4),
                                         rotary_mode="shared", attention_mode="same"),
     (4, 8, 8), False, (1, 16)),
    ("enc3d_fixed_all_onehead", 3, dict(levels=(2, 8), dim=32, heads=1, rotary_mode="fixed"), (8, 4, 8), True, None),
]

MAE_CASES = [
    # name, ndim, config, crop shape, use bbox
    ("mae2d_multi_mse", 2, dict(levels=(1, 8, 32), decoder_mode="multi", loss="mse"), (16, 12), True),
    ("mae2d_single_norm_mse", 2, dict(levels=(1, 4), decoder_mode="single", loss="norm_mse",
                                      rotary_mode="shared", masking_mode="random"), (8, 16), False),
    ("mae2d_multi_iso_mse_fixed", 2, dict(levels=(1, 4), decoder_mode="multi_iso", loss="mse", rotary_mode="fixed",
                                          attention_mode="causal", masking_mode=(0.2, 0.8),
                                          num_layers_decoder=1), (12, 12), True),
    ("mae2d_multi_norm_mse_same", 2, dict(levels=(1, 8), decoder_mode="multi", loss="norm_mse",
                                          attention_mode="same", masking_ratio=0.5, num_layers_decoder=1), (8, 8), True),
    ("mae3d_multi_norm_mse", 3, dict(levels=(1, 4), dim=32, heads=1, dim_decoder=32, patch_size=(2, 4, 4),
                                     num_layers_decoder=1, decoder_mode="multi", loss="norm_mse"),
     (8, 8, 8), True),
]


def encoder_case(name, ndim, cfg, shape, use_bbox, sub_levels, out: Path, gen):
    from muvit import MuViTEncoder2d, MuViTEncoder3d

    cls = MuViTEncoder2d if ndim == 2 else MuViTEncoder3d
    kw = dict(in_channels=2, patch_size=4, num_layers=2, dim=40, heads=2)
    kw.update(cfg)
    torch.manual_seed(len(name))
    enc = cls(**kw).eval()
    perturb(enc, gen)
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    enc.save(folder)
    B, L = 2, len(kw["levels"])
    x = torch.rand(B, L, 2, *shape, generator=gen)
    bbox = nested_boxes(B, kw["levels"], shape, gen) if use_bbox else None
    arrays = dict(x=x.numpy())
    if bbox is not None:
        arrays["bbox"] = bbox.numpy()
    with torch.no_grad():
        tokens, coords, level_idx = enc(x, bbox)
        features = enc.compute_features(x, bbox)
        store = capture_attention(enc)
        tokens_explicit, _, _ = enc(x, bbox)
    assert torch.allclose(tokens, tokens_explicit, atol=1e-5)
    arrays.update(tokens=tokens.numpy(), coords=coords.numpy(), level_idx=level_idx.numpy(),
                  features=features.numpy(), attn=torch.stack(store).numpy())
    if sub_levels is not None:
        sub = enc.extract_levels(sub_levels)
        keep = [kw["levels"].index(lv) for lv in sub_levels]
        with torch.no_grad():
            sub_tokens, _, _ = sub(x[:, keep], None if bbox is None else bbox[:, keep])
        arrays.update(sub_levels=np.array(sub_levels, dtype=np.float64), sub_tokens=sub_tokens.numpy())
    np.savez_compressed(out / f"{name}.npz", **arrays)
    return dict(name=name, kind="encoder", ndim=ndim, folder=name, npz=f"{name}.npz", config=_plain(kw),
                crop=list(shape), bbox=use_bbox, extract_levels=None if sub_levels is None else list(sub_levels))


def mae_case(name, ndim, cfg, shape, use_bbox, out: Path, gen):
    from muvit import MuViTMAE2d, MuViTMAE3d

    cls = MuViTMAE2d if ndim == 2 else MuViTMAE3d
    kw = dict(in_channels=2, patch_size=4, num_layers=2, dim=40, heads=2, dim_decoder=40, num_layers_decoder=2)
    kw.update(cfg)
    torch.manual_seed(len(name))
    mae = cls(**kw).eval()
    perturb(mae, gen)
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    mae.save(folder)
    B, L = 2, len(kw["levels"])
    x = torch.rand(B, L, 2, *shape, generator=gen)
    bbox = nested_boxes(B, kw["levels"], shape, gen) if use_bbox else None
    record = {}
    inner = mae.encoder.forward_masked

    def spy(*args, **kwargs):
        res = inner(*args, **kwargs)
        record["idx"] = torch.cat([res[4], res[5]], dim=1)
        record["n_keep"] = res[4].shape[1]
        return res

    mae.encoder.forward_masked = spy
    torch.manual_seed(7)
    with torch.no_grad():
        res = mae(x, bbox, return_all=True)
    arrays = dict(x=x.numpy(), idx=record["idx"].numpy(), n_keep=np.array(record["n_keep"]),
                  output=res["output"].numpy(), loss=res["loss"].numpy(), reco=res["reco"].numpy(),
                  loss_per_level=res["loss_per_level"].numpy())
    if bbox is not None:
        arrays["bbox"] = bbox.numpy()
    np.savez_compressed(out / f"{name}.npz", **arrays)
    return dict(name=name, kind="mae", ndim=ndim, folder=name, npz=f"{name}.npz", config=_plain(kw),
                crop=list(shape), bbox=use_bbox)


def legacy_case(out: Path, gen):
    """A reference folder whose config uses the old ``use_rotary_embed`` key instead of ``rotary_mode``."""
    src = out / "enc2d_per_layer_all"
    dst = out / "enc2d_legacy_rotary_key"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    cfg = yaml.load((dst / "config.yaml").read_text(), Loader=yaml.FullLoader)
    cfg.pop("rotary_mode")
    cfg["use_rotary_embed"] = True
    (dst / "config.yaml").write_text(yaml.dump(cfg))
    return dict(name="enc2d_legacy_rotary_key", kind="encoder", ndim=2, folder=dst.name,
                npz="enc2d_per_layer_all.npz", legacy=True)


def ours_loads_in_reference(cases, out: Path) -> bool:
    """Re-save every case with napari-muvit and check the reference loads it and computes the same output."""
    from muvit import MuViTEncoder2d, MuViTEncoder3d, MuViTMAE2d, MuViTMAE3d

    from napari_muvit.model import load_model, save_model

    classes = {("encoder", 2): MuViTEncoder2d, ("encoder", 3): MuViTEncoder3d,
               ("mae", 2): MuViTMAE2d, ("mae", 3): MuViTMAE3d}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ours = load_model(out / case["folder"])
            folder = save_model(ours, Path(tmp) / case["name"])
            ref = classes[case["kind"], case["ndim"]].from_folder(folder).eval()
            data = np.load(out / case["npz"])
            if case["kind"] == "encoder":
                bbox = torch.from_numpy(data["bbox"]) if "bbox" in data else None
                with torch.no_grad():
                    tokens, _, _ = ref(torch.from_numpy(data["x"]), bbox)
                assert np.abs(tokens.numpy() - data["tokens"]).max() < 1e-5, case["name"]
            else:
                ref_sd, orig = ref.state_dict(), classes["mae", case["ndim"]].from_folder(out / case["folder"]).state_dict()
                assert all(torch.equal(ref_sd[k], orig[k]) for k in orig), case["name"]
    return True


def _plain(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/data/reference"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(2026)
    cases = [encoder_case(*c, out=out, gen=gen) for c in ENCODER_CASES]
    cases += [mae_case(*c, out=out, gen=gen) for c in MAE_CASES]
    cases.append(legacy_case(out, gen))
    try:
        reverse = ours_loads_in_reference([c for c in cases if not c.get("legacy")], out)
    except ImportError:
        reverse = None  # napari-muvit not importable here; the test suite checks this direction when it can
    import muvit

    manifest = dict(reference=f"muvit {getattr(muvit, '__version__', '0.1.0')}", torch=torch.__version__,
                    ours_written_folders_load_in_reference=reverse, cases=cases)
    (out / "cases.json").write_text(json.dumps(manifest, indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps(dict(cases=len(cases), bytes=size, reverse_check=reverse)))


if __name__ == "__main__":
    main()
