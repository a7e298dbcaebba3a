"""Reading a model folder's YAML files (``config.yaml``, ``muvit.yaml``) without torch.

Pure Python, so a GUI can inspect a model folder on its own thread; `model.checkpoint` loads the weights.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# config keys only an MR-MAE has (beyond the encoder's): any of them makes a card-less folder an MAE
MAE_KEYS = {"decoder_mode", "dim_decoder", "loss", "masking_mode", "masking_ratio", "num_layers_decoder"}


class _TupleSafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML plus the ``!!python/tuple`` tag the reference writes for tuples (libyaml's parser where PyYAML
    was built with it: a model card is read about 10x faster, which a dock opening pays on the GUI thread)."""


_TupleSafeLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
)


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping safely; errors name the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"The model folder {path.parent} has no {path.name}.") from None
    try:
        data = yaml.load(text, Loader=_TupleSafeLoader)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ValueError(
            f"{path} is not plain YAML (only the !!python/tuple tag is accepted beyond safe YAML): {first}."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, not {type(data).__name__}.")
    return data
