"""Token masking for the multi-resolution MAE: which tokens the encoder sees.

A masking is a permutation ``idx (B, N)`` of token indices whose first ``n_keep`` entries are visible.
"""

from __future__ import annotations

import torch
from torch import Tensor

DIRICHLET_ALPHA = 0.5


def _dirichlet(levels: int, generator: torch.Generator | None, device) -> Tensor:
    """One weight vector ``w ~ Dir(0.5)`` over levels (global RNG unless ``generator`` is given)."""
    conc = torch.full((levels,), DIRICHLET_ALPHA, device=device)
    if generator is None:
        return torch.distributions.Dirichlet(conc).sample()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.distributions.Dirichlet(conc).sample()


def weighted_masking(B: int, L: int, n: int, weights: Tensor, generator=None) -> Tensor:
    """Per sample, a permutation drawn by weighted sampling without replacement (token weight = its level's).

    ``weights (L,)`` non-negative; returns ``idx (B, L*n)``.
    """
    # a level weight of exactly 0 would make sampling all N tokens impossible
    probs = weights.float().clamp_min(1e-12).repeat_interleave(n)
    return torch.stack([torch.multinomial(probs, L * n, replacement=False, generator=generator) for _ in range(B)])


def level_ratio_masking(B: int, L: int, n: int, ratios, device=None, generator=None) -> tuple[Tensor, int]:
    """Mask a fixed share ``ratios[l]`` of each level's ``n`` tokens; returns ``(idx (B, L*n), n_keep)``."""
    if len(ratios) != L:
        raise ValueError(f"{len(ratios)} per-level masking ratios were given for {L} levels; give one per level.")
    counts = [int(n * (1 - float(r))) for r in ratios]
    rows = []
    for _ in range(B):
        keep = torch.cat([torch.randperm(n, device=device, generator=generator)[:k] + li * n
                          for li, k in enumerate(counts)])
        visible = torch.zeros(L * n, dtype=torch.bool, device=device)
        visible[keep] = True
        rows.append(torch.cat([keep, torch.nonzero(~visible).flatten()]))
    return torch.stack(rows), sum(counts)


def sample_masking(B: int, L: int, n: int, ratio: float, mode, device=None, generator=None) -> tuple[Tensor, int]:
    """``(idx (B, L*n), n_keep)`` for ``mode`` ``"dirichlet"`` (level weights ~ Dir(0.5) per batch),
    ``"random"`` (uniform) or a tuple of per-level weights; ``n_keep = floor(N * (1 - ratio))``."""
    n_keep = int(L * n * (1 - ratio))
    if mode == "dirichlet":
        weights = _dirichlet(L, generator, device)
    elif mode == "random":
        weights = torch.ones(L, device=device)
    elif isinstance(mode, (tuple, list)):
        if len(mode) != L:
            raise ValueError(f"masking_mode has {len(mode)} level weights for {L} levels; give one per level.")
        weights = torch.tensor([float(m) for m in mode], device=device)
    else:
        raise ValueError(f"masking_mode {mode!r} is not supported; use 'dirichlet', 'random' or one weight per level.")
    return weighted_masking(B, L, n, weights, generator), n_keep


def indices_from_mask(mask: Tensor) -> tuple[Tensor, int]:
    """Boolean ``mask (B, N)`` (True = masked, same count per row) -> ``(idx, n_keep)``, visible in token order."""
    counts = mask.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("Every sample must mask the same number of tokens; the given mask does not.")
    n_keep = int(mask.shape[1] - counts[0])
    # stable sort puts visible (False) tokens first, each group in token order
    idx = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
    return idx, n_keep
