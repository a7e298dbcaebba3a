"""Train the built-in demo model (``load_model("demo")``) on synthetic slides. Deterministic, CPU only.

Recipe: MR-MAE pre-training on a synthetic slide, then UNETR segmentation fine-tuning (encoder included)
on the same slide's ground truth, then scoring on held-out synthetic slides rendered with other seeds.
The classes (background + three region types) are set by large-scale context, so the model needs its
coarse levels to tell identical-looking cells apart.

Held-out scoring runs the model exactly as ``napari-muvit predict`` does (`engine.predict`: overlapping
tiles stitched into an output store, true world boxes, the card's normalisation) on each held-out
slide less a ``MARGIN`` px border (so every tile has its whole level-16 context on the slide), and
compares the stored ``labels/prediction`` with the ground truth pixel for pixel. Dice per class is
pooled over the held-out slides (one confusion matrix), since a slide's scored area holds only a few
regions and may miss a class; mDSC_foreground is the mean over the region types (not background).

    python scripts/train_demo_model.py --score-only demo   # re-score a model folder (or "demo") only

    python scripts/train_demo_model.py                 # the shipped model's schedule (about 30 min here)
    python scripts/train_demo_model.py --quick         # about 2.5 min: a smoke test, too short to learn the context

Writes the model folder (``config.yaml``, ``model.pth``, ``muvit.yaml``) to ``--out`` (default: the
package's ``model/demo``) and prints one JSON object with the recipe and the held-out metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "src" / "napari_muvit" / "model" / "demo"

LEVELS = (1, 4, 16)
CROP = 64
MODEL = dict(patch_size=8, dim=128, num_layers=4, heads=4, num_layers_decoder=1, dim_decoder=96, masking_ratio=0.75)
TRAIN_SEED, TRAIN_SIZE = 0, 8192
TEST_SEEDS, TEST_SIZE, MARGIN = (100, 101, 102), 4096, 512
CLASS_COLORS = ["#00000000", "#e6503c", "#3caae6", "#78c850"]  # background is transparent

FULL = dict(mae_steps=300, epochs=24, steps_per_epoch=100, batch_size=16)
QUICK = dict(mae_steps=150, epochs=4, steps_per_epoch=40, batch_size=16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short schedule (a few minutes)")
    parser.add_argument("--out", default=str(DEMO_DIR), help="model folder to write (replaced)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--work", default=None, help="keep intermediate runs here (default: a temp folder)")
    parser.add_argument("--score-only", default=None, metavar="MODEL",
                        help="only score this model folder (or 'demo') on the held-out slides, train nothing")
    for key in ("mae_steps", "epochs", "steps_per_epoch", "batch_size"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help="override the schedule")
    args = parser.parse_args(argv)

    from napari_muvit.data import synthetic_slide
    from napari_muvit.engine.training import TrainRecipe, finetune, pretrain
    from napari_muvit.model import load_model, save_model

    torch.set_num_threads(args.threads)
    if args.score_only:
        held_out = score_held_out(args.score_only)
        print(json.dumps({"model": args.score_only, "held_out": held_out, **held_out_summary(held_out)}))
        return 0
    torch.manual_seed(0)
    schedule = dict(QUICK if args.quick else FULL)
    schedule.update({k: getattr(args, k) for k in schedule if getattr(args, k) is not None})
    work = Path(args.work or tempfile.mkdtemp(prefix="muvit-demo-"))
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    def progress(name):
        return lambda done, total: (done % 50 == 0 or done == total) and log(f"{name} step {done}/{total}")

    image, labels, class_names = synthetic_slide(TRAIN_SIZE, seed=TRAIN_SEED)
    log(f"training slide seed {TRAIN_SEED}: {image.shape}, classes {class_names}")

    pre = pretrain([image], work / "mae", TrainRecipe(
        task="mae", levels=LEVELS, size=CROP, steps=schedule["mae_steps"], batch_size=schedule["batch_size"],
        model_config=MODEL, lr=1e-3, warmup_steps=50, checkpoint_every=schedule["mae_steps"], seed=0, device="cpu"),
        overwrite=True, progress=progress("MAE"))
    log(f"MAE: {pre.steps_done} steps, final loss {pre.metrics['final_loss']:.4f}")

    # the synthetic ground truth is already in the training convention: value k + 1 = class k (1 = background)
    ft = finetune(image, labels, work / "mae", work / "seg", TrainRecipe(
        task="segmentation", class_names=class_names, class_colors=CLASS_COLORS, epochs=schedule["epochs"],
        steps_per_epoch=schedule["steps_per_epoch"], batch_size=schedule["batch_size"], lr=1e-3, encoder_lr=3e-4,
        train_encoder=True, head="unetr", class_weights="sqrt", val_fraction=0.15, seed=0, device="cpu"),
        overwrite=True, progress=progress("fine-tuning"))
    val = {k: round(v, 4) for k, v in ft.metrics.items() if isinstance(v, float)}
    log(f"fine-tuning: {ft.steps_done} steps, validation region {val}")

    model = load_model(work / "seg")
    held_out = score_held_out(work / "seg", log=log)
    summary = held_out_summary(held_out)

    flags = [" --quick"] if args.quick else []
    flags += [f" --{k.replace('_', '-')} {getattr(args, k)}" for k in schedule if getattr(args, k) is not None]
    command = "python scripts/train_demo_model.py" + "".join(flags)
    card = model.card
    card.provenance = dict(
        card.provenance,
        kind="demo model: MR-MAE pre-training then UNETR fine-tuning on synthetic slides",
        base="MR-MAE pre-trained by the same script",
        command=command,
        training_slide=dict(seed=TRAIN_SEED, size=TRAIN_SIZE, generator="napari_muvit.data.synthetic"),
        mae_steps=pre.steps_done, mae_final_loss=round(pre.metrics["final_loss"], 5),
        schedule=schedule, held_out=held_out, **summary,
        held_out_note=(f"napari-muvit predict (stitched tiles, true world boxes) on "
                       f"{TEST_SIZE} px slides of unseen seeds less a {MARGIN} px border; Dice pooled over seeds"),
        threads=args.threads, seconds=round(time.perf_counter() - t0),
    )
    out = Path(args.out)
    save_model(model, out, card=card, overwrite=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    log(f"wrote {out} ({size_mb:.2f} MB)")
    print(json.dumps({"model": str(out), "size_mb": round(size_mb, 2), "schedule": schedule,
                      "validation": val, "held_out": held_out, **summary,
                      "seconds": round(time.perf_counter() - t0)}))
    return 0


def score_held_out(model, log=None) -> dict:
    """Dice per class of ``model`` run as ``napari-muvit predict`` runs it: per held-out seed and pooled."""
    import zarr

    from napari_muvit.data import open_pyramid, synthetic_slide
    from napari_muvit.engine.predict import predict
    from napari_muvit.engine.recipe import Recipe
    from napari_muvit.engine.training.evaluation import label_classes
    from napari_muvit.engine.training.metrics import ConfusionMatrix

    m = MARGIN
    scores, pooled, names = {}, None, None
    with tempfile.TemporaryDirectory(prefix="muvit-demo-score-") as tmp:
        for seed in TEST_SEEDS:
            image, truth, names = synthetic_slide(TEST_SIZE, seed=seed)
            out = Path(tmp) / f"seed{seed}.ome.zarr"
            predict(Recipe(model=str(model), out=str(out), region=(m, TEST_SIZE - m, m, TEST_SIZE - m),
                           device="cpu", prob_dtype="none"), pyramid=open_pyramid(image))
            predicted = zarr.open_group(str(out), mode="r")["labels/prediction/0"][m:-m, m:-m]
            t, p = label_classes(truth[m:-m, m:-m]), label_classes(predicted)
            cm = ConfusionMatrix(len(names))
            cm.update(t, p)
            pooled = pooled or ConfusionMatrix(len(names))
            pooled.update(t, p)
            present = np.bincount(t[t >= 0].ravel(), minlength=len(names)) > 0
            dice = {n: (round(float(d), 4) if ok else None) for n, d, ok in zip(names, cm.dice(), present)}
            scores[f"seed {seed}"] = {"dice": dice, "cell_px": int(np.count_nonzero(t > 0))}
            if log:
                log(f"held-out slide seed {seed}: Dice {dice} (None: class absent from the scored area)")
    dice = [round(float(d), 4) for d in pooled.dice()]
    scores["pooled"] = {"dice": dict(zip(names, dice)), "mDSC": round(float(np.mean(dice)), 4),
                        "mDSC_foreground": round(float(np.mean(dice[1:])), 4)}
    if log:
        log(f"pooled over seeds {TEST_SEEDS}: Dice {dice}, foreground mDSC {np.mean(dice[1:]):.4f}")
    return scores


def held_out_summary(held_out: dict) -> dict:
    """The pooled held-out numbers the card and the docs quote."""
    return {"held_out_mDSC_foreground": held_out["pooled"]["mDSC_foreground"],
            "held_out_dice": held_out["pooled"]["dice"]}


if __name__ == "__main__":
    sys.exit(main())
