"""Bad model folders and bad inputs give one-sentence errors naming the problem, and nothing is executed."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from napari_muvit.model import MuViTEncoder, MuViTSegmenter, load_model

torch.set_num_threads(1)
REF = Path(__file__).parent / "data" / "reference"


class _Payload:
    """Unpickling this calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_sentence(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith((".", ")")), msg
    return msg


@pytest.fixture
def folder(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(REF / "enc2d_shared_causal", dst)
    return dst


def test_missing_folder_and_files(tmp_path, folder):
    with pytest.raises(FileNotFoundError) as err:
        load_model(tmp_path / "nope")
    assert "nope" in one_sentence(err)
    (folder / "model.pth").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_model(folder)
    assert "model.pth" in one_sentence(err) and str(folder) in str(err.value)
    (folder / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_model(folder)
    assert "config.yaml" in one_sentence(err)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(folder, damage):
    pth = folder / "model.pth"
    data = pth.read_bytes()
    pth.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\x01nonsense" * 50, "empty": b""}[damage])
    with pytest.raises(ValueError) as err:
        load_model(folder)
    msg = one_sentence(err)
    assert "truncated or corrupt" in msg and str(pth) in msg


def test_pickle_payload_is_refused_not_run(folder, tmp_path):
    marker = tmp_path / "executed.txt"
    torch.save({"level_embed": torch.zeros(1), "x": _Payload(marker)}, folder / "model.pth")
    with pytest.raises(ValueError) as err:
        load_model(folder)
    assert "refused" in one_sentence(err) and "model.pth" in str(err.value)
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler does run it
    proof = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()


def test_unsafe_yaml_tag_is_refused_not_run(folder, tmp_path):
    marker = tmp_path / "yaml_ran.txt"
    cfg = folder / "config.yaml"
    cfg.write_text(cfg.read_text() + f"evil: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(ValueError) as err:
        load_model(folder)
    assert "config.yaml" in one_sentence(err) and "!!python/tuple" in str(err.value)
    assert not marker.exists()


def test_config_and_weights_disagree(folder):
    cfg = folder / "config.yaml"
    cfg.write_text(cfg.read_text().replace("in_channels: 2", "in_channels: 3"))
    with pytest.raises(ValueError) as err:
        load_model(folder)
    msg = one_sentence(err)
    assert "'proj.0.0.weight'" in msg and "(40, 32)" in msg and "(40, 48)" in msg and "model.pth" in msg


def test_weights_with_missing_key(folder):
    state = torch.load(folder / "model.pth", weights_only=True)
    del state["layers.1.norm2.bias"]
    torch.save(state, folder / "model.pth")
    with pytest.raises(ValueError, match=r"lacks the weight 'layers.1.norm2.bias' \(shape \(40,\)\)"):
        load_model(folder)


def test_unknown_config_and_card_keys(folder):
    cfg = folder / "config.yaml"
    cfg.write_text(cfg.read_text() + "colour_jitter: 0.5\n")
    with pytest.raises(ValueError) as err:
        load_model(folder)
    assert "colour_jitter" in one_sentence(err) and "config.yaml" in str(err.value)
    cfg.write_text(cfg.read_text().replace("colour_jitter: 0.5\n", ""))
    (folder / "muvit.yaml").write_text("task: segmentation\nclases: [a, b]\n")
    with pytest.raises(ValueError) as err:
        load_model(folder)
    assert "clases" in one_sentence(err) and "muvit.yaml" in str(err.value)


def test_bad_config_values(folder):
    cfg = folder / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("ndim: 2", "ndim: 4"))
    with pytest.raises(ValueError) as err:
        load_model(folder)
    assert "ndim=4" in one_sentence(err) and "config.yaml" in str(err.value)
    cfg.write_text(text.replace("attention_mode: causal", "attention_mode: random"))
    with pytest.raises(ValueError, match="attention_mode='random' is not supported"):
        load_model(folder)


@pytest.fixture(scope="module")
def enc():
    torch.manual_seed(0)
    return MuViTEncoder(in_channels=2, levels=(1, 4), patch_size=4, num_layers=1, dim=40, heads=2).eval()


@pytest.mark.parametrize(
    "shape, words",
    [
        ((2, 2, 8, 8), "expects input shaped (B, L, C, H, W)"),
        ((1, 2, 2, 4, 8, 8), "6 axes"),
        ((1, 3, 2, 8, 8), "3 levels"),
        ((1, 2, 3, 8, 8), "3 channels"),
        ((1, 2, 2, 8, 10), "not a positive multiple of the patch size (4, 4)"),
    ],
)
def test_bad_input_shapes(enc, shape, words):
    with pytest.raises(ValueError) as err:
        enc(torch.zeros(shape))
    assert words in one_sentence(err)


@pytest.mark.parametrize("bbox_shape", [(1, 2, 2), (1, 2, 2, 3), (2, 2, 2, 2), (1, 3, 2, 2)])
def test_bad_bbox_shapes(enc, bbox_shape):
    with pytest.raises(ValueError) as err:
        enc(torch.zeros(1, 2, 2, 8, 8), torch.zeros(bbox_shape))
    assert "(1, 2, 2, 2)" in one_sentence(err) and str(bbox_shape) in str(err.value)
    seg = MuViTSegmenter(enc, 2, head="probe")
    with pytest.raises(ValueError, match="bbox"):
        seg(torch.zeros(1, 2, 2, 8, 8), torch.zeros(bbox_shape))


def test_uint8_input_is_accepted_as_float(enc):
    x = torch.randint(0, 255, (1, 2, 2, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x.float()))


# ---- absurd or hostile folders are refused before any model is built ------------------------------------------
@pytest.fixture
def seg_folder(tmp_path):
    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.model import save_model

    return save_model(tiny_segmenter(), tmp_path / "seg")


@pytest.fixture
def builds(monkeypatch):
    """The default device of every model build load_model starts ('meta' = shapes only, no memory)."""
    from napari_muvit.model import checkpoint

    devices = []
    real = checkpoint._build

    def spy(*args, **kwargs):
        devices.append(str(torch.get_default_device()))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "_build", spy)
    return devices


def _set_yaml(path, key, value):
    import yaml

    data = yaml.safe_load(path.read_text().replace("!!python/tuple", ""))
    data[key] = value
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("key, value, words", [
    ("dim", 1_000_000_000, "dim=1000000000; it must be a whole number from 1 to 4096"),
    ("num_layers", 100_000_000, "num_layers=100000000; it must be a whole number from 1 to 64"),
    ("heads", 0, "heads=0"),
    ("dim", "big", "dim='big'"),
    ("patch_size", 100000, "patch_size=100000"),
    ("in_channels", -3, "in_channels=-3"),
    ("levels", "abc", "levels='abc'"),
    ("levels", [1, 10**9], "levels=1000000000"),
    ("dropout", 5, "dropout=5"),
])
def test_absurd_config_is_refused_before_building(seg_folder, builds, key, value, words):
    _set_yaml(seg_folder / "config.yaml", key, value)
    with pytest.raises(ValueError) as err:
        load_model(seg_folder)
    assert words in one_sentence(err) and "config.yaml" in str(err.value)
    assert builds == []  # not even a shape-only build


def test_parameter_budget(seg_folder, builds):
    _set_yaml(seg_folder / "config.yaml", "dim", 4096)
    _set_yaml(seg_folder / "config.yaml", "num_layers", 64)
    _set_yaml(seg_folder / "config.yaml", "heads", 64)
    with pytest.raises(ValueError) as err:
        load_model(seg_folder)
    assert "about 13 billion parameters" in one_sentence(err)
    assert builds == []


def test_config_and_weights_compared_on_shapes_only(seg_folder, builds):
    _set_yaml(seg_folder / "config.yaml", "dim", 64)  # the weights were saved with dim 32
    with pytest.raises(ValueError) as err:
        load_model(seg_folder)
    assert "disagree on" in one_sentence(err) and "model.pth" in str(err.value)
    assert builds == ["meta"]  # the real model was never built
    builds.clear()
    _set_yaml(seg_folder / "config.yaml", "dim", 32)
    model = load_model(seg_folder)
    assert builds == ["meta", "cpu"] and model.encoder.dim == 32


@pytest.mark.parametrize("key, value, words", [
    ("crop_size", "big", "'crop_size' is 'big'"),
    ("class_names", 5, "'class_names' is 5"),
    ("head", [1, 2], "'head' must be a mapping"),
    ("levels", "abc", "'levels' is 'abc'"),
    ("in_channels", -3, "'in_channels' is -3"),
    ("class_colors", ["#12345", "red"], "colour '#12345'"),
    ("class_colors", [[300, 0, 0]], "colour [300, 0, 0]"),
    ("class_names", ["a", "b"], "lists 2 names but the head predicts 3 classes"),
    ("pixel_size", -1, "'pixel_size' is -1"),
    ("task", 7, "task 7 is not known"),
])
def test_bad_card_fields_name_the_field(seg_folder, builds, key, value, words):
    from napari_muvit.widgets.model_panel import read_model_info

    _set_yaml(seg_folder / "muvit.yaml", key, value)
    with pytest.raises(ValueError) as err:
        load_model(seg_folder)
    assert words in one_sentence(err) and "muvit.yaml" in str(err.value)
    assert builds == []
    with pytest.raises(ValueError) as err:  # the widgets' card reader gives the same sentence
        read_model_info(str(seg_folder))
    assert words in one_sentence(err)


class _System:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-not-run",))


def test_pickle_payload_names_the_object(folder):
    torch.save({"level_embed": torch.zeros(1), "x": _System()}, folder / "model.pth")
    with pytest.raises(ValueError) as err:
        load_model(folder)
    msg = one_sentence(err)
    assert "system" in msg and "refused without running it" in msg and "truncated" not in msg


def test_saved_model_folder_is_not_private(tmp_path):
    """The folder is built with mkdtemp (mode 0700) and renamed: it must get the usual umask-based mode."""
    import os
    import stat

    from napari_muvit.engine.testing import tiny_segmenter
    from napari_muvit.model import save_model
    from napari_muvit.model.checkpoint import _umask

    path = save_model(tiny_segmenter(), tmp_path / "m")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~_umask()
