"""`napari-muvit pretrain`: multi-resolution MAE pre-training on one or more slides."""

from __future__ import annotations

import json

from ._training_args import add_common, check_model_out, check_positive, printer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pre-train a MuViT masked autoencoder on slides",
        description="Multi-resolution MAE pre-training on random nested crops inside the slides' foreground.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="slide(s): OME-Zarr, TIFF pyramid, SVS, ...")
    p.add_argument("--levels", default=None, help="downsample factors, e.g. 1,8,32 (default; with --base: its levels)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels at every level (default 256)")
    p.add_argument("--out", required=True, metavar="MODEL", help="output model folder")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimisation steps")
    length.add_argument("--epochs", type=float, default=None,
                        help="passes over the foreground area in level-1 crops (default 1)")
    p.add_argument("--patch-size", type=int, default=16, help="patch size in pixels (default 16)")
    p.add_argument("--dim", type=int, default=256, help="token width (default 256)")
    p.add_argument("--layers", type=int, default=6, help="encoder layers (default 6)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--base", default=None, help="continue from this MAE model folder")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default 200)")
    add_common(p)


def run(args) -> int:
    from napari_muvit.engine.recipe import parse_levels
    from napari_muvit.engine.training import pretrain

    check_model_out(args.out, [*args.sources, args.base])
    levels = parse_levels(args.levels) if args.levels else None
    check_positive(args, ("steps", "epochs", "batch_size", "size", "checkpoint_every"))
    result = pretrain(
        args.sources, args.out, levels=levels, size=args.size, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, base=args.base, lr=args.lr or 1.5e-4,
        model_config=dict(patch_size=args.patch_size, dim=args.dim, num_layers=args.layers, heads=args.heads),
        checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite, seed=args.seed,
        device=args.device, num_threads=args.threads, progress=printer(args.quiet, "pretrain"),
    )
    print(json.dumps({"model": str(result.model_dir), "steps": result.steps_done, **result.metrics}))
    return 0
