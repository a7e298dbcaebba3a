"""Heads learn: a probe on frozen features fits in seconds, the UNETR head and classifier train."""


import torch
import torch.nn.functional as F

from napari_muvit.model import MuViTClassifier, MuViTEncoder, MuViTSegmenter


def encoder(**kw):
    torch.manual_seed(0)
    cfg = dict(in_channels=1, levels=(1, 4), patch_size=4, num_layers=1, dim=40, heads=2)
    cfg.update(kw)
    return MuViTEncoder(**cfg)


def striped_batch(B=8, S=32, seed=0):
    """Finest crops with bright and dark vertical bands (band width 8 px = 2 tokens); label = bright."""
    g = torch.Generator().manual_seed(seed)
    bright = (torch.rand(B, 1, 1, S // 8, generator=g) > 0.5).float().repeat_interleave(8, -1).expand(B, 1, S, S)
    fine = 0.2 + 0.6 * bright + 0.05 * torch.randn(B, 1, S, S, generator=g)
    coarse = torch.rand(B, 1, S, S, generator=g)
    return torch.stack([fine, coarse], 1), bright[:, 0].long()


def test_probe_fits_on_frozen_features():
    seg = MuViTSegmenter(encoder(), 2, head="probe")
    assert seg.encoder_frozen and not any(p.requires_grad for p in seg.encoder.parameters())
    x, y = striped_batch()
    fused = seg.features(x)  # computed once, the encoder is frozen
    assert fused.shape == (8, 80, 8, 8) and not fused.requires_grad
    opt = torch.optim.Adam(seg.head.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(seg.head_forward(fused, x), y)
        loss.backward()
        opt.step()
    xt, yt = striped_batch(seed=1)
    with torch.no_grad():
        acc = (seg(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9, acc


def test_unetr_head_and_encoder_train():
    seg = MuViTSegmenter(encoder(patch_size=8), 2, width=16, min_width=8, skip_channels=4).train()
    assert not seg.encoder_frozen
    x, y = striped_batch(B=4)
    before = seg.encoder.proj[0][0].weight.detach().clone()
    opt = torch.optim.Adam(seg.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(seg(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(before, seg.encoder.proj[0][0].weight)


def test_classifier_frozen_encoder_stays_fixed():
    clf = MuViTClassifier(encoder(), 2, hidden=16, freeze_encoder=True).train()
    assert not clf.encoder.training
    x = torch.rand(6, 2, 1, 8, 8)
    x[:3] *= 0.1
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    before = {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    opt = torch.optim.Adam([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(clf(x), y).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in clf.encoder.state_dict().items())
    assert (clf(x).argmax(1) == y).all()
