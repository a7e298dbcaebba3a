"""MR-MAE behaviour: masking, outputs, loss bookkeeping (tiny models, CPU)."""

import pytest
import torch

from napari_muvit.model import MuViTMAE, load_model, save_model


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=2, levels=(1, 4, 16), patch_size=4, num_layers=1, dim=48, heads=2,
               dim_decoder=40, num_layers_decoder=1)
    cfg.update(kw)
    return MuViTMAE(**cfg)


@pytest.mark.parametrize("decoder_mode", ["multi", "single", "multi_iso"])
@pytest.mark.parametrize("loss", ["mse", "norm_mse"])
def test_outputs_and_loss_bookkeeping(decoder_mode, loss):
    mae = tiny(decoder_mode=decoder_mode, loss=loss)
    x = torch.rand(2, 3, 2, 8, 12)
    out = mae(x)
    N = 3 * 2 * 3
    assert out["pred"].shape == (2, 3, 2, 8, 12) and out["reco"].shape == (2, 3, 2, 8, 12)
    assert out["mask"].shape == (2, N) and out["mask"].dtype == torch.bool
    assert out["mask"].sum(1).tolist() == [N - int(N * 0.25)] * 2
    assert out["error"].shape == (2,)
    assert torch.allclose(out["loss"], out["error"].mean(), atol=1e-6)
    # visible patches of the composite are the input itself
    pix_mask = out["mask"].view(2, 3, 2, 3)[:, :, :, None, :, None].expand(2, 3, 2, 4, 3, 4).reshape(2, 3, 8, 12)
    vis = ~pix_mask[:, :, None].expand_as(x)
    assert torch.equal(out["reco"][vis], x[vis])
    out["loss"].backward()
    assert mae.encoder.proj[0][0].weight.grad.abs().sum() > 0


def test_injected_bool_mask_is_used_and_order_free():
    mae = tiny().eval()
    x = torch.rand(1, 3, 2, 8, 8)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, [0, 5, 9]] = False
    with torch.no_grad():
        a = mae(x, mask_indices=mask)
        perm = torch.tensor([[9, 0, 5] + [i for i in range(12) if i not in (0, 5, 9)]])
        mae.masking_ratio = 0.75
        b = mae(x, mask_indices=perm)
    assert torch.equal(a["mask"], mask)
    assert torch.allclose(a["pred_patches"], b["pred_patches"], atol=1e-5)
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6)


def test_fixed_level_ratios_and_dirichlet_extremes():
    mae = tiny()
    mae.level_ratios = (0.0, 0.5, 1.0)
    out = mae(torch.rand(3, 3, 2, 8, 8))
    per_level = out["mask"].view(3, 3, 4).sum(-1)
    assert per_level.tolist() == [[0, 2, 4]] * 3
    mae.level_ratios = None
    torch.manual_seed(1)
    masks = torch.stack([mae(torch.rand(2, 3, 2, 8, 8))["mask"].view(2, 3, 4).sum(-1) for _ in range(10)])
    # Dirichlet(0.5) weights: visible share per level varies a lot from batch to batch
    assert masks.float().std(0).mean() > 0.3
    with pytest.raises(ValueError, match="one per level"):
        mae.level_ratios = (0.5,)
        mae(torch.rand(1, 3, 2, 8, 8))


def test_mae_folder_roundtrip(tmp_path):
    mae = tiny(decoder_mode="single", loss="norm_mse").eval()
    x = torch.rand(1, 3, 2, 8, 8)
    mask = torch.rand(1, 12).argsort(1) < 9
    loaded = load_model(save_model(mae, tmp_path / "mae"))
    assert isinstance(loaded, MuViTMAE) and loaded.card.task == "mae"
    with torch.no_grad():
        assert torch.allclose(loaded(x, mask_indices=mask)["loss"], mae(x, mask_indices=mask)["loss"], atol=1e-6)
