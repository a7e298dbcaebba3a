"""Train the built-in demo model (``load_model("demo")``) on synthetic slides. Deterministic, CPU only.

Recipe: MR-MAE pre-training on a synthetic slide, then UNETR segmentation fine-tuning (encoder included)
on the same slide's ground truth, then scoring on held-out synthetic slides rendered with other seeds.
The classes (background + three region types) are set by large-scale context, so the model needs its
coarse levels to tell identical-looking cells apart.

    python scripts/train_demo_model.py                 # the shipped model's schedule (about 11 min here)
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
TRAIN_SEED, TRAIN_SIZE = 0, 6144
TEST_SEEDS, TEST_SIZE, TEST_TILES = (100, 101), 4096, 1024
CLASS_COLORS = ["#00000000", "#e6503c", "#3caae6", "#78c850"]  # background is transparent

FULL = dict(mae_steps=300, epochs=10, steps_per_epoch=100, batch_size=16)
QUICK = dict(mae_steps=150, epochs=4, steps_per_epoch=40, batch_size=16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short schedule (a few minutes)")
    parser.add_argument("--out", default=str(DEMO_DIR), help="model folder to write (replaced)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--work", default=None, help="keep intermediate runs here (default: a temp folder)")
    for key in ("mae_steps", "epochs", "steps_per_epoch", "batch_size"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help="override the schedule")
    args = parser.parse_args(argv)

    from napari_muvit.data import Normalizer, open_pyramid, synthetic_slide
    from napari_muvit.engine.training import TrainRecipe, finetune, pretrain
    from napari_muvit.engine.training.evaluation import evaluate_slide
    from napari_muvit.model import load_model, save_model

    torch.set_num_threads(args.threads)
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
    # scored as the engine runs it: with the normalisation stored in the model card
    norm = Normalizer.from_dict(model.card.normalization)
    held_out = {}
    for seed in TEST_SEEDS:
        img, lab, _ = synthetic_slide(TEST_SIZE, seed=seed)
        m = evaluate_slide(model, open_pyramid(img), lab.astype(np.int64), CROP, norm,
                           max_tiles=TEST_TILES, seed=seed)
        held_out[f"seed {seed}"] = {"mDSC": round(m["mDSC"], 4), "accuracy": round(m["accuracy"], 4),
                                    "dice": [round(d, 4) for d in m["dice"]], "tiles": m["tiles"]}
        log(f"held-out slide seed {seed}: mDSC {m['mDSC']:.4f}, Dice {np.round(m['dice'], 3).tolist()}")
    mean_mdsc = float(np.mean([v["mDSC"] for v in held_out.values()]))

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
        schedule=schedule, held_out=held_out, held_out_mean_mDSC=round(mean_mdsc, 4),
        held_out_note=f"{TEST_TILES} random {CROP}px tiles of each {TEST_SIZE}px slide, true world boxes",
        threads=args.threads, seconds=round(time.perf_counter() - t0),
    )
    out = Path(args.out)
    save_model(model, out, card=card, overwrite=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    log(f"wrote {out} ({size_mb:.2f} MB)")
    print(json.dumps({"model": str(out), "size_mb": round(size_mb, 2), "schedule": schedule,
                      "validation": val, "held_out": held_out, "held_out_mean_mDSC": round(mean_mdsc, 4),
                      "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
