"""`napari-muvit finetune`: segmentation head from a label image, or tile classifier from ROIs."""

from __future__ import annotations

import json

from ._training_args import add_common, build_recipe, check_model_out, check_positive, printer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a segmentation head or tile classifier",
        description="Fine-tune on one slide; validation uses held-out regions of the slide (or held-out ROIs).",
    )
    p.add_argument("source", metavar="SOURCE", help="the slide")
    p.add_argument("--labels", required=True,
                   help="segmentation: label image at full resolution (.npy, .tif, .zarr; 0 = unlabelled) or QuPath "
                        "annotations (.geojson: their classes are the labels); "
                        "classification: ROIs (.geojson or .csv)")
    p.add_argument("--base", required=True, metavar="MODEL", help="model folder (MAE, encoder, fine-tuned) or 'demo'")
    p.add_argument("--task", choices=("segmentation", "classification"), default=None,
                   help="segmentation (default) or classification")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model folder")
    p.add_argument("--classes", default=None, help="class names for label values 1, 2, ... (comma-separated; "
                                                   "default: an OME-Zarr label image's own names)")
    p.add_argument("--background-class", default=None, metavar="NAME",
                   help="only for a foreign dense label image whose 0 is a real class: that class's name (every "
                        "value moves up by one); napari-muvit's own labels, synthetic ground truth included, "
                        "use 0 = unlabelled and need no such option")
    p.add_argument("--levels", default=None, help="subset of the base model's levels, e.g. 1,8")
    p.add_argument("--size", type=int, default=None, help="crop size (default: the base model's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 10)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default: from the labels)")
    p.add_argument("--head", choices=("unetr", "probe"), default=None, help="segmentation head (default unetr)")
    p.add_argument("--train-encoder", action="store_true", default=None, help="also fine-tune the encoder")
    p.add_argument("--no-dihedral", dest="dihedral", action="store_false", default=None,
                   help="no flips or quarter turns of the training crops (for classes that name a direction, "
                        "e.g. 'landmark above'; intensity jitter stays)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of labelled regions held out (0.2)")
    add_common(p)


def run(args) -> int:
    from napari_muvit.engine.training import finetune
    from napari_muvit.engine.training.recipe import RECIPE_NAME

    check_model_out(args.out, [args.source, args.labels, args.base])
    if str(args.labels).lower().endswith(".npy"):
        from napari_muvit.engine.safety import check_npy_file

        check_npy_file(args.labels, "label image")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}.")
    check_positive(args, ("epochs", "batch_size", "steps_per_epoch", "size"))
    recipe = build_recipe(args, "segmentation", dict(
        task=args.task, class_names=classes, levels=args.levels or None, size=args.size, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, train_encoder=args.train_encoder, head=args.head,
        val_fraction=args.val_fraction, background_class=args.background_class, dihedral=args.dihedral))
    result = finetune(args.source, args.labels, args.base, args.out, recipe, resume=args.resume,
                      overwrite=args.overwrite, progress=printer(args.quiet, "finetune"))
    summary = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(json.dumps({"model": str(result.model_dir), "steps": result.steps_done, **summary,
                      "recipe": str(result.model_dir / "training" / RECIPE_NAME)}))
    return 0
