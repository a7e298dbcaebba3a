"""Model folders: reference layout (``config.yaml`` + ``model.pth``) plus our ``muvit.yaml`` card.

Loading never executes code from the folder: YAML goes through a safe loader that knows only the
``!!python/tuple`` tag beyond safe YAML, weights through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

from .card import ModelCard
from .config_io import MAE_KEYS, read_yaml
from .encoder import MuViTEncoder
from .heads import MuViTClassifier, MuViTSegmenter

DEMO_DIR = Path(__file__).parent / "demo"
ENCODER_KEYS = {
    "attention_mode", "dim", "dropout", "heads", "in_channels", "input_space", "levels", "ndim",
    "num_layers", "patch_size", "rotary_base", "rotary_mode", "use_level_embed",
}




def read_state_dict(path: Path, device="cpu") -> dict:
    """Load a plain ``state_dict`` with ``weights_only=True``; refuses pickled objects without running them."""
    if not path.is_file():
        raise FileNotFoundError(f"The model folder {path.parent} has no {path.name}.")
    try:
        state = _load_weights(path, device)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", str(err))
        name = found.group(1) if found else _foreign_global(path)
        if name is not None:
            raise ValueError(
                f"{path} refers to the Python object {name}, not only to tensors, so it was refused without running it."
            ) from None
        raise ValueError(f"{path} is truncated or corrupt and cannot be read as weights.") from None
    except (RuntimeError, EOFError, OSError, ValueError):
        raise ValueError(f"{path} is truncated or corrupt and cannot be read as weights.") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return state


def _load_weights(path: Path, device):
    """``torch.load(weights_only=True)``, memory-mapped when the file allows it (nothing is copied into memory
    until the weights are assigned to a model that matches them)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location=device, weights_only=True)  # legacy (non-zip) files


# globals a plain tensor state_dict may name (everything else is a foreign Python object)
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "_codecs.encode")


def _foreign_global(path: Path) -> str | None:
    """The first Python object (module.name) a weights file's pickle names that is not part of a tensor
    state_dict, found by reading the opcodes without running any of them; None when there is none."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            data = zf.read(member) if member else None
    except (zipfile.BadZipFile, OSError):
        data = path.read_bytes()
    if not data:
        return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not name.startswith(_TENSOR_GLOBALS):
                return name
    except Exception:  # a damaged pickle: whatever was found so far
        return None
    return None


# sane bounds for config.yaml values: checked before any model is built
CONFIG_BOUNDS = {
    "dim": (1, 4096), "heads": (1, 64), "num_layers": (1, 64), "in_channels": (1, 512), "ndim": (2, 3),
    "dim_decoder": (1, 4096), "num_layers_decoder": (0, 32),
}
MAX_PARAMETERS = 2_000_000_000  # ~8 GB of float32: far beyond any MuViT, far below an accidental 1e9-wide layer


def check_config_values(enc: dict, mae: dict, source: Path) -> None:
    """Raise ``ValueError`` naming the first config value that is of the wrong type or absurdly large."""
    import numbers

    def whole(name, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
            raise ValueError(f"{source} sets {name}={value!r}; it must be a whole number from {lo} to {hi}.")

    cfg = {**enc, **mae}
    for name, (lo, hi) in CONFIG_BOUNDS.items():
        if name in cfg and not (name == "dim_decoder" and cfg[name] is None):
            whole(name, cfg[name], lo, hi)
    patch = cfg.get("patch_size", 16)
    for v in patch if isinstance(patch, (list, tuple)) else [patch]:
        whole("patch_size", v, 1, 512)
    levels = cfg.get("levels", (1, 4))
    if not isinstance(levels, (list, tuple)) or not 1 <= len(levels) <= 16:
        raise ValueError(f"{source} sets levels={levels!r}; it must be a list of 1 to 16 downsample factors.")
    for v in levels:
        whole("levels", v, 1, 1 << 16)
    for name, lo, hi in (("dropout", 0.0, 1.0), ("masking_ratio", 0.0, 1.0), ("rotary_base", 1e-6, 1e12)):
        v = cfg.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= v <= hi):
            raise ValueError(f"{source} sets {name}={v!r}; it must be a number from {lo:g} to {hi:g}.")
    dim, layers = cfg.get("dim", 320), cfg.get("num_layers", 6)
    dec_dim, dec_layers = cfg.get("dim_decoder") or dim, cfg.get("num_layers_decoder", 0) if mae else 0
    estimate = 12 * layers * dim**2 + 12 * dec_layers * dec_dim**2  # transformer blocks dominate the count
    if estimate > MAX_PARAMETERS:
        raise ValueError(f"{source} describes a model of about {estimate / 1e9:.0f} billion parameters "
                         f"(dim={dim}, num_layers={layers}); at most {MAX_PARAMETERS / 1e9:.0f} billion are accepted.")


def encoder_kwargs(config: dict, source: Path) -> tuple[dict, dict]:
    """Split a reference config into ``(encoder kwargs, MAE-only kwargs)``; unknown keys are errors."""
    config = dict(config)
    if "use_rotary_embed" in config:
        if "rotary_mode" in config:
            raise ValueError(f"{source} sets both the old 'use_rotary_embed' and 'rotary_mode'; keep only 'rotary_mode'.")
        config["rotary_mode"] = "per_layer" if config.pop("use_rotary_embed") else "none"
    unknown = sorted(set(config) - ENCODER_KEYS - MAE_KEYS)
    if unknown:
        raise ValueError(f"{source} has unknown keys {unknown}; known keys are {sorted(ENCODER_KEYS | MAE_KEYS)}.")
    enc = {k: v for k, v in config.items() if k in ENCODER_KEYS}
    mae = {k: v for k, v in config.items() if k in MAE_KEYS}
    return enc, mae


def check_state_matches(model: nn.Module, state: dict, source: Path) -> None:
    """Raise ``ValueError`` naming the first key whose presence or shape differs between config and weights."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(
                f"{source} lacks the weight {key!r} (shape {tuple(tensor.shape)}) that config.yaml implies."
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source} and config.yaml disagree on {key!r}: weights have shape {tuple(state[key].shape)}, "
                f"config implies {tuple(tensor.shape)}."
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ValueError(f"{source} has the weight {extra[0]!r} that config.yaml does not describe.")


def resolve_folder(path) -> Path:
    """``"demo"`` -> the packaged demo model folder; otherwise ``Path(path)``, which must be a folder."""
    if str(path) == "demo":
        if not (DEMO_DIR / "model.pth").is_file():
            raise FileNotFoundError(f"The built-in demo model is not installed (expected it in {DEMO_DIR}).")
        return DEMO_DIR
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"The model folder {folder} does not exist.")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is a file, but a model is a folder with config.yaml and model.pth.")
    return folder


def _build(task: str, enc_kw: dict, mae_kw: dict, card: ModelCard, folder: Path) -> nn.Module:
    if task == "mae":
        from .mae import MuViTMAE

        return MuViTMAE(**enc_kw, **mae_kw)
    if mae_kw:
        raise ValueError(f"{folder / 'config.yaml'} has MAE settings {sorted(mae_kw)} but muvit.yaml says task {task!r}.")
    encoder = MuViTEncoder(**enc_kw)
    if task == "encoder":
        return encoder
    head = dict(card.head)
    kind = head.pop("type", None)  # a descriptive alias some cards carry: "unetr", "probe" or "classifier"
    if task == "segmentation" and kind in ("unetr", "probe"):
        head.setdefault("head", kind)
    try:
        if task == "segmentation":
            return MuViTSegmenter(encoder, **head)
        return MuViTClassifier(encoder, **head)
    except TypeError as err:
        raise ValueError(f"{folder / 'muvit.yaml'} has a head configuration that does not fit: {err}.") from None


def _build_checked(card, enc_kw, mae_kw, folder: Path, cfg_path: Path, device=None) -> nn.Module:
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return _build(card.task, enc_kw, mae_kw, card, folder)
    except (ValueError, TypeError) as err:
        if isinstance(err, ValueError) and str(folder) in str(err):
            raise
        raise ValueError(f"{cfg_path}: {str(err).rstrip('.')}.") from None


def load_model(path, device="cpu") -> nn.Module:
    """Load a reference encoder/MAE folder or a napari-muvit model folder (``"demo"`` = built-in model).

    Returns a :class:`MuViTEncoder`, ``MuViTMAE``, :class:`MuViTSegmenter` or :class:`MuViTClassifier`
    in eval mode on ``device``, with ``.card`` (a :class:`ModelCard`) and ``.encoder``.
    """
    folder = resolve_folder(path)
    cfg_path, pth_path, card_path = folder / "config.yaml", folder / "model.pth", folder / "muvit.yaml"
    config = read_yaml(cfg_path)
    if not pth_path.is_file():
        raise FileNotFoundError(f"The model folder {folder} has no model.pth.")
    enc_kw, mae_kw = encoder_kwargs(config, cfg_path)
    card = ModelCard.from_dict(read_yaml(card_path), str(card_path)) if card_path.is_file() else None
    if card is None:
        card = ModelCard(task="mae" if mae_kw else "encoder", levels=tuple(enc_kw.get("levels", (1, 4))),
                         in_channels=enc_kw.get("in_channels", 1))
    check_config_values(enc_kw, mae_kw, cfg_path)
    state = read_state_dict(pth_path, device)
    skeleton = _build_checked(card, enc_kw, mae_kw, folder, cfg_path, device="meta")  # shapes only, no memory
    check_state_matches(skeleton, state, pth_path)
    del skeleton
    model = _build_checked(card, enc_kw, mae_kw, folder, cfg_path)
    model.load_state_dict(state)
    model.card = card
    return model.to(device).eval()


def _task_of(model: nn.Module) -> str:
    if isinstance(model, MuViTEncoder):
        return "encoder"
    return getattr(model, "task", "mae")


def _plain_config(config: dict) -> dict:
    """Config values as YAML-friendly builtins (tuples stay tuples for the reference's tag)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, (tuple, list)):
            v = tuple(x.item() if hasattr(x, "item") else x for x in v)
        out[k] = v
    return dict(sorted(out.items()))


def save_model(model: nn.Module, path, card: ModelCard | None = None, overwrite: bool = False) -> Path:
    """Write ``config.yaml``, ``model.pth`` and ``muvit.yaml`` to folder ``path`` atomically.

    Files are written to a temporary sibling folder which is then renamed into place, so a crash never
    leaves a half-written model. Encoder and MAE folders stay loadable by the reference package.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"The model folder {path} already exists; choose another name or allow overwriting.")
    task = _task_of(model)
    encoder = model.encoder
    if card is None:
        card = getattr(model, "card", None) or ModelCard(task=task, levels=encoder.levels, in_channels=encoder.in_channels)
    fields = card.to_dict()
    fields["task"] = task
    if task in ("segmentation", "classification"):
        fields["head"] = dict(model.head_config)
    config = model.config if task == "mae" else encoder.config
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes the folder private; a model folder is as readable as any other
    try:
        with open(tmp / "config.yaml", "w") as f:
            yaml.dump(_plain_config(config), f, Dumper=yaml.Dumper)  # Dumper writes tuples as !!python/tuple
        with open(tmp / "muvit.yaml", "w") as f:
            yaml.safe_dump(fields, f, sort_keys=False)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / "model.pth")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    model.card = ModelCard.from_dict(fields)
    return path


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would briefly change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def model_hash(path) -> str:
    """Short sha256 (16 hex digits) of a model folder's ``model.pth`` and ``config.yaml``."""
    folder = resolve_folder(path)
    h = hashlib.sha256()
    for name in ("model.pth", "config.yaml"):
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
