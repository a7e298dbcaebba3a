"""Synthetic multi-scale benchmark: does MuViT's multi-level context (with true world boxes) help?

Default experiment (``--experiment offsets``): MuViT (1, 4, 16), MR-MAE pre-trained, fine-tuned on nested
crops whose coarser levels are shifted at random as far as nesting allows (``--train-shift``), with the
true world boxes. Scored on the level-1 tiles of held-out slides with *shifted* context crops
(``--eval-shift``, :mod:`napari_muvit.engine.training.offsets`), given (a) the true world boxes, (b) naive
concentric boxes (the boxes the crops would have if all were centred on the tile), (c) scale-blind boxes
(every level the level-1 box); plus (d) the encoder restricted to level 1 as the floor (``--no-floor``
skips it). With concentric test crops (b) would equal (a); here only (a) says where the tile lies in
its context.

``--experiment arms``: the earlier comparison with concentric test crops. Arms, each fine-tuned with the same number of steps, batch size, crops, optimiser and class weights on
the same synthetic training slide, and scored (mDSC over background + 3 region classes) on held-out
synthetic slides rendered with other seeds:

- ``muvit_1_4_16``: MuViT levels (1, 4, 16), encoder from MR-MAE pre-training, UNETR head.
- ``muvit_1``: the same pre-trained encoder restricted to level 1 (``extract_levels((1,))``).
- ``muvit_1_4_16_naive_boxes``: the ``muvit_1_4_16`` model scored with naive boxes (every level gets
  the finest crop's box: concentric and scale-blind), as in the paper's ablation.
- ``unet_level1``: a small U-Net on the level-1 crop only, trained from scratch.
- ``muvit_1_4_16_no_pretraining``: levels (1, 4, 16) from a random encoder (convergence vs pre-trained).

Prints one JSON object (final mDSC per arm, Dice per class, validation curves, budget, seeds, seconds).
``--context-probe 16`` instead runs a diagnostic: a tile classifier told the region type from the given
levels alone (is the context learnable at this budget at all?).

    python benchmarks/synthetic_benchmark.py --threads 2                 # offsets experiment
    python benchmarks/synthetic_benchmark.py --experiment arms           # earlier five arms
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEVELS = (1, 4, 16)
CROP = 64
ENCODER = dict(patch_size=8, dim=96, num_layers=3, heads=4)
MAE = dict(ENCODER, num_layers_decoder=1, dim_decoder=96, masking_ratio=0.75)


class SmallUNet(nn.Module):
    """Plain 3-scale U-Net on the level-1 crop: ``forward(x (B, L, C, S, S), bbox)`` -> ``(B, K, S, S)``."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.GELU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.GELU())

        self.down = nn.ModuleList([block(in_channels, w[0]), block(w[0], w[1]), block(w[1], w[2]), block(w[2], w[3])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(3)])
        self.dec = nn.ModuleList([block(2 * w[i], w[i]) for i in range(3)])
        self.out = nn.Conv2d(w[0], num_classes, 1)
        self.num_classes = num_classes
        self.levels = (1,)

    @property
    def encoder(self):  # evaluate_slide reads the levels from model.encoder
        return self

    def forward(self, x, bbox=None):
        h = x[:, 0]
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for i in reversed(range(3)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        return self.out(h)


class WideCNN(nn.Module):
    """Single-resolution baseline with the multi-level models' pixel budget: a `SmallUNet` on one ``size``^2 crop
    of level ``level`` (``WIDE_CROP``^2 ~ 3 x 64^2 px), centred on the level-1 tile, predicts at level ``level``;
    each level-1 pixel of the tile takes the logits of the level-``level`` pixel that contains it.

    ``forward(x, bbox)`` takes the inputs the MuViT arms get and uses only the level-1 box ``bbox[:, 0]``: the
    wide crop is read from ``self.pyramid`` (set to the slide being trained on or scored) around that box's
    centre, concentric as at inference, so the arm never sees the shifted context crops. Training crops must
    therefore not be flipped or turned (the label crop would turn, the wide crop would not)."""

    def __init__(self, level: int, num_classes: int, pyramid=None, normalizer=None, size: int = 112):
        super().__init__()
        self.net = SmallUNet(1, num_classes)
        self.level, self.size, self.num_classes = int(level), int(size), num_classes
        self.pyramid, self.normalizer = pyramid, normalizer
        self.levels = (1,)

    @property
    def encoder(self):
        return self

    def forward(self, x, bbox=None):
        tile = bbox[:, 0].detach().cpu().numpy().astype(np.float64)  # (B, 2, 2) first / last pixel centres
        crops, index = [], []
        S = x.shape[-1]
        for box in tile:
            img, wide = self.pyramid.crops(tuple(box.mean(axis=0)), (self.level,), self.size,
                                           normalizer=self.normalizer)
            crops.append(img[0])
            # level-`level` pixel k covers world [first + k f - (f - 1) / 2, ... + f)
            lo = wide[0, 0].astype(np.float64) - (self.level - 1) / 2
            pix = box[0][:, None] + np.arange(S)[None, :]  # (2, S) world centres of the tile's rows / columns
            index.append(np.clip(np.floor((pix - lo[:, None]) / self.level), 0, self.size - 1).astype(np.int64))
        logits = self.net(torch.from_numpy(np.stack(crops))[:, None].to(x.device))  # (B, K, size, size)
        idx = torch.from_numpy(np.stack(index)).to(x.device)  # (B, 2, S)
        b = torch.arange(len(idx), device=x.device)[:, None, None]
        out = logits.permute(0, 2, 3, 1)[b, idx[:, 0, :, None], idx[:, 1, None, :]]  # (B, S, S, K)
        return out.permute(0, 3, 1, 2)


def train_arm(model, task, steps, batch_size, lr, weight, eval_fn, eval_every, seed, device="cpu"):
    """Fine-tune ``model`` on ``task`` batches; returns the validation curve ``[(step, mDSC), ...]``."""
    from napari_muvit.engine.training.annotations import IGNORE
    from napari_muvit.engine.training.batches import Prefetcher
    from napari_muvit.engine.training.runtime import autocast
    from napari_muvit.engine.training.schedule import make_optimizer, make_scheduler

    torch.manual_seed(seed)
    model.to(device)
    weight = weight.to(device)
    opt = make_optimizer(model.parameters(), lr=lr)
    sched = make_scheduler(opt, steps, warmup_steps=max(1, steps // 10))
    curve = []
    model.train()
    prefetch = Prefetcher(lambda: task.train_batch(batch_size), task.rng)
    for step in range(1, steps + 1):
        (img, bbox, target), _ = prefetch.get()
        with autocast(torch.device(device)):
            logits = model(torch.from_numpy(img).to(device), torch.from_numpy(bbox).to(device))
        loss = F.cross_entropy(logits.float(), torch.from_numpy(target).to(device), weight=weight, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            curve.append((step, round(eval_fn(model), 4)))
            model.train()
    prefetch.close()
    return curve


def context_probe(args) -> dict:
    """Diagnostic: can a small MuViT tile classifier tell a crop's region type from levels ``args.context_probe``
    alone (the label is the region type under the crop centre)? Held-out accuracy on the first test slide."""
    from napari_muvit.data import Normalizer, open_pyramid, synthetic_slide
    from napari_muvit.data.synthetic import region_type
    from napari_muvit.model import MuViTClassifier, MuViTEncoder

    levels = tuple(int(v) for v in args.context_probe.split(","))
    torch.manual_seed(args.seed)
    train_seed, test_seed = args.train_seed, int(args.test_seeds.split(",")[0])
    image, _, _ = synthetic_slide(args.train_size, seed=train_seed, kind=args.kind)
    pyramid = open_pyramid(image)
    norm = Normalizer.from_pyramid(pyramid)
    test_image, _, _ = synthetic_slide(args.test_size, seed=test_seed, kind=args.kind)
    test_pyramid = open_pyramid(test_image)

    def batch(pyr, size, seed, n, rng):
        centers = rng.uniform(0, size, size=(n, 2))
        target = region_type(centers[:, 0], centers[:, 1], seed) - 1
        crops = [pyr.crops(tuple(c), levels, CROP, normalizer=norm) for c in centers]
        return (torch.from_numpy(np.stack([c[0] for c in crops])), torch.from_numpy(np.stack([c[1] for c in crops])),
                torch.from_numpy(target.astype(np.int64)))

    model = MuViTClassifier(MuViTEncoder(levels=levels, **ENCODER), 3, hidden=128)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(args.seed)
    tx, tb, ty = batch(test_pyramid, args.test_size, test_seed, args.test_tiles, np.random.default_rng(args.seed + 1))
    curve = []
    for step in range(1, args.steps + 1):
        x, b, y = batch(pyramid, args.train_size, train_seed, args.batch_size, rng)
        loss = F.cross_entropy(model(x, b), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                acc = float((model(tx, tb).argmax(1) == ty).float().mean())
            model.train()
            curve.append((step, round(float(loss.detach()), 3), round(acc, 4)))
    majority = float(np.bincount(ty.numpy(), minlength=3).max() / len(ty))
    return {"context_probe_levels": list(levels), "curve_step_loss_heldout_accuracy": curve,
            "majority_class_accuracy": round(majority, 4), "steps": args.steps, "batch_size": args.batch_size,
            "test_crops": args.test_tiles, "seeds": {"train_slide": train_seed, "test_slide": test_seed}}


class ProbeCNN(nn.Module):
    """Four-way classifier on one crop ``x[:, level]`` (64 px): three conv + pool stages and a dense layer that
    sees where things lie in the crop; ``bbox`` is ignored."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * (CROP // 8) ** 2, 128), nn.ReLU(), nn.Linear(128, 4))

    def forward(self, x, bbox=None):
        return self.net(x[:, self.level])


def bearing_probe(args) -> dict:
    """Diagnostic for ``--kind bearing``: can a small MuViT tile classifier name the side of the nearest
    landmark of a crop centre from levels ``args.bearing_probe``? Crop centres are random points farther than
    the cells' clearance from every landmark; the coarser crops are shifted by ``args.train_shift`` /
    ``args.eval_shift`` of what nesting allows (0 = concentric). Held-out accuracy on the first test slide with
    the true world boxes, naive concentric boxes and scale-blind boxes (chance 0.25)."""
    from napari_muvit.data import Normalizer, open_pyramid, synthetic_slide
    from napari_muvit.data.synthetic import _hash_uniform
    from napari_muvit.data.synthetic_bearing import CLEARANCE, bearing_class, nearest_landmark
    from napari_muvit.engine.training.offsets import _boxes_for, offset_crops
    from napari_muvit.model import MuViTClassifier, MuViTEncoder

    levels = tuple(int(v) for v in args.bearing_probe.split(","))
    torch.manual_seed(args.seed)
    train_seed, test_seed = args.train_seed, int(args.test_seeds.split(",")[0])
    image, _, _ = synthetic_slide(args.train_size, seed=train_seed, kind="bearing")
    pyramid = open_pyramid(image)
    norm = Normalizer.from_pyramid(pyramid)
    test_pyramid = open_pyramid(synthetic_slide(args.test_size, seed=test_seed, kind="bearing")[0])

    def batch(pyr, size, seed, n, rng, shift):
        pts = np.empty((0, 2))
        while len(pts) < n:  # like cells: no centre within the clearance of a landmark
            c = rng.uniform(0, size, size=(2 * n, 2))
            pts = np.concatenate([pts, c[nearest_landmark(c[:, 0], c[:, 1], seed, _hash_uniform)[2] > CLEARANCE]])
        pts = pts[:n]
        dy, dx, _ = nearest_landmark(pts[:, 0], pts[:, 1], seed, _hash_uniform)
        img, world, concentric, _ = offset_crops(pyr, pts, levels, CROP, rng, normalizer=norm, shift=shift)
        return (torch.from_numpy(img), world, concentric, torch.from_numpy(bearing_class(dy, dx).astype(np.int64) - 1))

    if args.probe_model == "cnn":  # a plain CNN on the coarsest crop alone: no boxes, the layout is the cue
        model = ProbeCNN(len(levels) - 1)
    else:
        model = MuViTClassifier(MuViTEncoder(levels=levels, **ENCODER), 4, hidden=128)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    tx, tw, tc, ty = batch(test_pyramid, args.test_size, test_seed, args.test_tiles,
                           np.random.default_rng(args.seed + 1), args.eval_shift)
    modes = ("world", "concentric", "scale_blind")

    def accuracy():
        model.eval()
        with torch.no_grad():
            out = {m: round(float((model(tx, torch.from_numpy(_boxes_for(m, tw, tc))).argmax(1) == ty)
                                  .float().mean()), 4) for m in modes}
        model.train()
        return out

    curve = []
    for step in range(1, args.steps + 1):
        x, w, _, y = batch(pyramid, args.train_size, train_seed, args.batch_size, rng, args.train_shift)
        loss = F.cross_entropy(model(x, torch.from_numpy(w)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            curve.append((step, round(float(loss.detach()), 3), accuracy()))
            print(f"step {step}: loss {curve[-1][1]} held-out accuracy {curve[-1][2]}", file=sys.stderr, flush=True)
    return {"bearing_probe_levels": list(levels), "probe_model": args.probe_model,
            "parameters": int(sum(p.numel() for p in model.parameters())), "train_shift": args.train_shift, "eval_shift": args.eval_shift,
            "curve_step_loss_heldout_accuracy": curve, "final_accuracy": curve[-1][2],
            "majority_class_accuracy": round(float(np.bincount(ty.numpy(), minlength=4).max() / len(ty)), 4),
            "steps": args.steps, "batch_size": args.batch_size, "test_crops": args.test_tiles,
            "seeds": {"train_slide": train_seed, "test_slide": test_seed, "torch": args.seed}}


def offsets_experiment(args, pretrained, fresh, task_for, weight, tests, class_names, t0, log, train_pyramid=None,
                       norm=None) -> dict:
    """Non-concentric context crops: train MuViT (1, 4, 16) with shifted coarse crops and their true boxes,
    then score the level-1 tiles of the test slides with shifted coarse crops given (a) the true world
    boxes, (b) naive concentric boxes, (c) every level the level-1 box; plus a level-1-only floor."""
    from napari_muvit.engine.training.offsets import evaluate_offset_slide

    modes = ("world", "concentric", "scale_blind")

    def on(model, pyramid):  # a wide CNN reads its own crop from the slide it is run on
        if isinstance(model, WideCNN):
            model.pyramid = pyramid
        return model

    def score(model, modes, tiles, slides, seed_shift=0):
        per = [evaluate_offset_slide(on(model, p), p, truth, CROP, nz, modes=modes, shift=args.eval_shift, max_tiles=tiles,
                                     seed=s + seed_shift, device=args.device) for s, p, truth, nz in slides]
        return {m: {"mDSC": round(float(np.mean([r[m]["mDSC"] for r in per])), 4),
                    "per_slide_mDSC": [round(r[m]["mDSC"], 4) for r in per],
                    "dice": [round(float(v), 4) for v in np.nanmean([r[m]["dice"] for r in per], axis=0)]}
                for m in modes}

    def curve_eval(model):  # true boxes, shifted crops, first test slide, other tiles than the final score
        return score(model, ("world",), args.curve_tiles, tests[:1], seed_shift=1)["world"]["mDSC"]

    arms = {"muvit_1_4_16": (fresh(pretrained), LEVELS)}
    if not args.no_floor:  # the floors: MuViT restricted to level 1, and a CNN that sees the level-1 crop only
        arms["muvit_1"] = (fresh(pretrained.extract_levels((1,))), (1,))
        torch.manual_seed(args.seed)
        arms["unet_level1"] = (SmallUNet(1, len(class_names)), (1,))
    for f in (int(v) for v in args.wide_levels.split(",") if v.strip()):
        torch.manual_seed(args.seed)
        arms[f"cnn_wide_level{f}"] = (WideCNN(f, len(class_names), normalizer=norm), (1,))
    results, curves, params = {}, {}, {}
    for name, (model, levels) in arms.items():
        wide = isinstance(model, WideCNN)
        curves[name] = train_arm(on(model, train_pyramid), task_for(levels, dihedral_ok=not wide), args.steps,
                                 args.batch_size, args.lr, weight, lambda m: (curve_eval(m), on(m, train_pyramid))[0],
                                 args.eval_every, args.seed, args.device)
        params[name] = int(sum(p.numel() for p in model.parameters()))
        scored = score(model, modes if len(levels) > 1 else ("world",), args.test_tiles, tests)
        if len(levels) > 1:
            results[f"{name}_true_boxes"] = scored["world"]
            results[f"{name}_naive_concentric_boxes"] = scored["concentric"]
            results[f"{name}_scale_blind_boxes"] = scored["scale_blind"]
        else:
            results[name] = scored["world"]
        log(f"{name}: {({k: v['mDSC'] for k, v in results.items()})} curve {curves[name]}")

    return {
        "experiment": "offsets", "kind": args.kind, "mDSC": {k: v["mDSC"] for k, v in results.items()},
        "arms": results, "curves": curves, "parameters": params, "class_names": class_names,
        "budget": {"mae_steps": args.mae_steps, "finetune_steps_per_arm": args.steps, "batch_size": args.batch_size,
                   "crop": CROP, "levels": list(LEVELS), "encoder": ENCODER, "lr": args.lr,
                   "train_shift": args.train_shift, "eval_shift": args.eval_shift},
        "seeds": {"train_slide": args.train_seed, "train_size": args.train_size, "test_slides": args.test_seeds,
                  "test_size": args.test_size, "test_tiles_per_slide": args.test_tiles, "torch": args.seed,
                  "test_offsets": "numpy default_rng(test slide seed + 7)"},
        "threads": args.threads, "device": args.device, "seconds": round(time.perf_counter() - t0),
    }


def demo_offsets(args) -> dict:
    """Score the built-in demo model (its own normalisation) with shifted context crops and each box mode."""
    from napari_muvit.data import Normalizer, open_pyramid, synthetic_slide
    from napari_muvit.engine.training.offsets import evaluate_offset_slide
    from napari_muvit.model import load_model

    model = load_model("demo")
    norm = Normalizer.from_dict(model.card.normalization)
    modes = ("world", "concentric", "scale_blind")
    per = []
    for s in (int(v) for v in args.test_seeds.split(",")):
        img, truth, _ = synthetic_slide(args.test_size, seed=s, kind=args.kind)
        per.append(evaluate_offset_slide(model, open_pyramid(img), truth.astype(np.int64), CROP, norm, modes=modes,
                                         shift=args.eval_shift, max_tiles=args.test_tiles, seed=s,
                                         device=args.device))
    return {"experiment": "demo-offsets",
            "mDSC": {m: round(float(np.mean([r[m]["mDSC"] for r in per])), 4) for m in modes},
            "per_slide_mDSC": {m: [round(r[m]["mDSC"], 4) for r in per] for m in modes},
            "dice": {m: [round(float(v), 4) for v in np.nanmean([r[m]["dice"] for r in per], axis=0)] for m in modes},
            "eval_shift": args.eval_shift,
            "seeds": {"test_slides": args.test_seeds, "test_size": args.test_size,
                      "test_tiles_per_slide": args.test_tiles, "test_offsets": "numpy default_rng(test slide seed + 7)"},
            "threads": args.threads, "device": args.device}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Synthetic multi-scale benchmark (prints JSON).")
    parser.add_argument("--kind", choices=("regions", "bearing"), default="regions",
                        help="synthetic family: 'regions' (which discs the context holds is the cue) or "
                             "'bearing' (where the nearest landmark lies is the cue)")
    parser.add_argument("--train-size", type=int, default=4096, help="training slide side (px)")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--test-seeds", default="100,101")
    parser.add_argument("--test-size", type=int, default=4096)
    parser.add_argument("--test-tiles", type=int, default=256, help="random 64 px tiles scored per test slide")
    parser.add_argument("--mae-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=800, help="fine-tuning steps per arm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--curve-tiles", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bf16 autocast)")
    parser.add_argument("--experiment", choices=("offsets", "arms", "demo-offsets"), default="offsets",
                        help="offsets (default): non-concentric context crops, true vs naive concentric boxes; "
                             "arms: the earlier five-arm comparison with concentric test crops; "
                             "demo-offsets: score the built-in demo model as in offsets (no training)")
    parser.add_argument("--train-shift", type=float, default=1.0,
                        help="offset of the coarser training crops, as a fraction of what nesting allows")
    parser.add_argument("--eval-shift", type=float, default=1.0,
                        help="offsets experiment: offset of the coarser test crops (fraction of what nesting allows)")
    parser.add_argument("--no-floor", action="store_true",
                        help="offsets experiment: skip the level-1-only models (MuViT level 1, U-Net level 1)")
    parser.add_argument("--dihedral", action=argparse.BooleanOptionalAction, default=None,
                        help="flip / quarter-turn augmentation in fine-tuning (default: on for 'regions', off for "
                             "'bearing', whose classes are directions that a turn would change)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="run the experiment once per seed (training slide seed = torch seed = S) and print the "
                             "mean, spread and per-seed mDSC of every arm")
    parser.add_argument("--wide-levels", default="", metavar="F,F,...",
                        help="offsets experiment: also train a single-resolution U-Net on one 112 px crop of each "
                             "of these levels (about the multi-level pixel budget), scored with concentric crops")
    parser.add_argument("--bearing-probe", default=None, metavar="LEVELS",
                        help="run only the bearing diagnostic (a tile classifier names the side of the nearest "
                             "landmark) with these levels, e.g. 1,16; --train-shift / --eval-shift place the context")
    parser.add_argument("--probe-model", choices=("muvit", "cnn"), default="muvit",
                        help="bearing probe: the MuViT classifier (default) or a plain CNN on the coarsest crop")
    parser.add_argument("--context-probe", default=None, metavar="LEVELS",
                        help="run only the region-type-from-context diagnostic with these levels, e.g. 16")
    args = parser.parse_args(argv)
    if args.bearing_probe:
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        print(json.dumps({**bearing_probe(args), "seconds": round(time.perf_counter() - t0)}))
        return 0
    if args.context_probe:
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        print(json.dumps({**context_probe(args), "seconds": round(time.perf_counter() - t0)}))
        return 0

    if args.experiment == "demo-offsets":
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        print(json.dumps({**demo_offsets(args), "seconds": round(time.perf_counter() - t0)}))
        return 0

    if args.seeds:  # the whole experiment once per seed (training slide and torch seed), then mean and spread
        runs = []
        for seed in (int(v) for v in args.seeds.split(",")):
            one = argparse.Namespace(**{**vars(args), "seed": seed, "train_seed": seed, "seeds": None})
            runs.append(run_training(one))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        print(json.dumps(across_seeds(runs)))
        return 0
    print(json.dumps(run_training(args)))
    return 0


def across_seeds(runs: list) -> dict:
    """Mean, sample standard deviation, min and max over seeds of every arm's mDSC and per-class Dice."""
    arms = {}
    for name in runs[0]["mDSC"]:
        v = np.array([r["mDSC"][name] for r in runs])
        dice = np.array([r["arms"][name]["dice"] for r in runs], dtype=float)
        arms[name] = {"mDSC_mean": round(float(v.mean()), 4), "mDSC_sd": round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0,
                      "mDSC_min": round(float(v.min()), 4), "mDSC_max": round(float(v.max()), 4),
                      "per_seed": [round(float(x), 4) for x in v],
                      "dice_mean": [round(float(x), 4) for x in np.nanmean(dice, axis=0)]}
    return {"experiment": runs[0].get("experiment", "arms"), "kind": runs[0].get("kind"), "seeds": len(runs),
            "arms": arms, "curves": {n: [r["curves"].get(n) for r in runs] for n in runs[0]["curves"]},
            "class_names": runs[0]["class_names"], "budget": runs[0]["budget"],
            "per_seed": [r["seeds"] for r in runs], "threads": runs[0]["threads"],
            "seconds": sum(r["seconds"] for r in runs)}


def run_training(args) -> dict:
    """MAE pre-training on the training slide, then the experiment's arms; returns the result dict."""
    from napari_muvit.data import Normalizer, open_pyramid, synthetic_slide
    from napari_muvit.engine.training import TrainRecipe, pretrain
    from napari_muvit.engine.training.annotations import open_label_image
    from napari_muvit.engine.training.augment import Augmenter
    from napari_muvit.engine.training.evaluation import evaluate_slide
    from napari_muvit.engine.training.tasks import SegmentationTask
    from napari_muvit.model import MuViTEncoder, MuViTSegmenter, load_model

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - t0:6.0f} s] {m}", file=sys.stderr, flush=True)  # noqa: E731

    image, labels, class_names = synthetic_slide(args.train_size, seed=args.train_seed, kind=args.kind)
    pyramid = open_pyramid(image)
    norm = Normalizer.from_pyramid(pyramid)
    lab = open_label_image(labels, pyramid.shape)  # value k + 1 = class k (1 = background), as training expects
    tests = []
    for s in (int(v) for v in args.test_seeds.split(",")):
        img, truth, _ = synthetic_slide(args.test_size, seed=s, kind=args.kind)
        tests.append((s, open_pyramid(img), truth.astype(np.int64), norm))  # the training slide's values

    def curve_eval(model):
        s, p, truth, nz = tests[0]
        return evaluate_slide(model, p, truth, CROP, nz, max_tiles=args.curve_tiles, seed=s + 1,
                              device=args.device)["mDSC"]

    def final_eval(model, boxes="world"):
        per = [evaluate_slide(model, p, truth, CROP, nz, boxes=boxes, max_tiles=args.test_tiles, seed=s,
                              device=args.device)
               for s, p, truth, nz in tests]
        return {"mDSC": round(float(np.mean([m["mDSC"] for m in per])), 4),
                "per_slide_mDSC": [round(m["mDSC"], 4) for m in per],
                "dice": [round(float(v), 4) for v in np.nanmean([m["dice"] for m in per], axis=0)]}

    work = Path(tempfile.mkdtemp(prefix="muvit-bench-"))
    pre = pretrain([image], work / "mae", TrainRecipe(
        task="mae", levels=LEVELS, size=CROP, steps=args.mae_steps, batch_size=args.batch_size, model_config=MAE,
        lr=1e-3, warmup_steps=max(1, args.mae_steps // 10), checkpoint_every=args.mae_steps, preview_every=0,
        seed=args.seed, device=args.device))
    log(f"MAE pre-training: {args.mae_steps} steps, loss {pre.metrics['final_loss']:.4f}")
    pretrained = load_model(work / "mae").encoder

    # A bearing class names a direction in the world, so a quarter turn or a flip of the crops changes the
    # true class: dihedral augmentation would give each label all four directions and make the task
    # unlearnable. Regions are invariant to them.
    dihedral = args.dihedral if args.dihedral is not None else args.kind != "bearing"
    augment = Augmenter(flips=dihedral, rotations=dihedral, jitter=0.1)

    def task_for(levels, dihedral_ok=True):
        aug = augment if dihedral_ok else Augmenter(flips=False, rotations=False, jitter=0.1)
        return SegmentationTask(pyramid, lab, levels, CROP, class_names, val_fraction=0.0, seed=args.seed,
                                normalizer=norm, augment=aug, shift=args.train_shift)

    counts = task_for((1,)).summary.totals[1 : 1 + len(class_names)].astype(float)
    weight = torch.tensor(1 / np.sqrt(counts) / np.mean(1 / np.sqrt(counts)), dtype=torch.float32)

    import copy

    def fresh(encoder):
        return MuViTSegmenter(copy.deepcopy(encoder), len(class_names), head="unetr", freeze_encoder=False)

    if args.experiment == "offsets":
        return offsets_experiment(args, pretrained, fresh, task_for, weight, tests, class_names, t0, log,
                                  train_pyramid=pyramid, norm=norm)

    torch.manual_seed(args.seed)
    random_encoder = MuViTEncoder(levels=LEVELS, **ENCODER)
    arms = {
        "muvit_1_4_16": (fresh(pretrained), LEVELS),
        "muvit_1": (fresh(pretrained.extract_levels((1,))), (1,)),
        "unet_level1": (SmallUNet(1, len(class_names)), (1,)),
        "muvit_1_4_16_no_pretraining": (fresh(random_encoder), LEVELS),
    }
    results, curves, params = {}, {}, {}
    for name, (model, levels) in arms.items():
        curves[name] = train_arm(model, task_for(levels), args.steps, args.batch_size, args.lr, weight, curve_eval,
                                 args.eval_every, args.seed, args.device)
        model.eval()
        results[name] = final_eval(model)
        params[name] = int(sum(p.numel() for p in model.parameters()))
        log(f"{name}: mDSC {results[name]['mDSC']} curve {curves[name]}")
        if name == "muvit_1_4_16":
            results["muvit_1_4_16_naive_boxes"] = final_eval(model, boxes="naive")
            log(f"muvit_1_4_16_naive_boxes: mDSC {results['muvit_1_4_16_naive_boxes']['mDSC']}")

    return {
        "mDSC": {k: v["mDSC"] for k, v in results.items()},
        "arms": results, "curves": curves, "parameters": params, "class_names": class_names,
        "budget": {"mae_steps": args.mae_steps, "finetune_steps_per_arm": args.steps, "batch_size": args.batch_size,
                   "crop": CROP, "levels": list(LEVELS), "encoder": ENCODER, "lr": args.lr},
        "seeds": {"train_slide": args.train_seed, "train_size": args.train_size, "test_slides": args.test_seeds,
                  "test_size": args.test_size, "test_tiles_per_slide": args.test_tiles, "torch": args.seed},
        "threads": args.threads, "device": args.device, "seconds": round(time.perf_counter() - t0),
    }


if __name__ == "__main__":
    sys.exit(main())
