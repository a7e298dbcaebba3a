"""`napari-muvit pretrain`: multi-resolution MAE pre-training on one or more slides."""

from __future__ import annotations

import json

from ._training_args import add_common, build_recipe, check_model_out, check_positive, printer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pre-train a MuViT masked autoencoder on slides",
        description="Multi-resolution MAE pre-training on random nested crops inside the slides' foreground.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="slide(s): OME-Zarr, TIFF pyramid, SVS, ...")
    p.add_argument("--levels", default=None, help="downsample factors, e.g. 1,8,32 (default; with --base: its levels)")
    p.add_argument("--size", type=int, default=None, help="crop side in pixels at every level (default 256)")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model folder")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimisation steps")
    length.add_argument("--epochs", type=float, default=None,
                        help="passes over the foreground area in level-1 crops (default 1)")
    p.add_argument("--patch-size", type=int, default=None, help="patch size in pixels (default 16)")
    p.add_argument("--dim", type=int, default=None, help="token width (default 256)")
    p.add_argument("--layers", type=int, default=None, help="encoder layers (default 6)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default 4)")
    p.add_argument("--base", default=None, help="continue from this MAE model folder")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 200)")
    add_common(p)


def run(args) -> int:
    from napari_muvit.engine.training import pretrain
    from napari_muvit.engine.training.recipe import RECIPE_NAME

    check_model_out(args.out, [*args.sources, args.base])
    check_positive(args, ("steps", "epochs", "batch_size", "size", "checkpoint_every"))
    model = dict(patch_size=args.patch_size, dim=args.dim, num_layers=args.layers, heads=args.heads)
    model = {k: v for k, v in model.items() if v is not None}
    recipe = build_recipe(args, "mae", dict(levels=args.levels or None, size=args.size, steps=args.steps,
                                            epochs=args.epochs, checkpoint_every=args.checkpoint_every))
    if model:  # architecture flags given: they replace those keys of the recipe file's model_config
        recipe = recipe.replace(model_config={**recipe.model_config, **model})
    result = pretrain(args.sources, args.out, recipe, base=args.base, resume=args.resume, overwrite=args.overwrite,
                      progress=printer(args.quiet, "pretrain"))
    print(json.dumps({"model": str(result.model_dir), "steps": result.steps_done, **result.metrics,
                      "recipe": str(result.model_dir / "training" / RECIPE_NAME)}))
    return 0
