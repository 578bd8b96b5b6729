from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segcli.config import dump, from_dict, load
from segcli.config.schema import ARCH_NAMES, LOSS_NAMES, Experiment
from segcli.errors import SpecError

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

BASE = {
    "data": {"synthetic": {"dims": 2}, "patch_size": [32, 32]},
    "model": {"arch": "dilated", "filters": 8, "dilations": [1, 2, 4]},
}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_load_and_round_trip(path: Path) -> None:
    exp = load(path)
    assert from_dict(yaml.safe_load(dump(exp))) == exp


def test_lecture_networks_differ_only_in_dilations() -> None:
    cnn = load(EXPERIMENTS / "toy-cnn.yaml").model
    dilated = load(EXPERIMENTS / "toy-dilated.yaml").model
    assert (cnn.arch, cnn.layers, cnn.kernel_size, cnn.filters) == ("cnn", 3, 3, 8)
    assert (dilated.arch, dilated.dilations, dilated.kernel_size, dilated.filters) == (
        "dilated",
        [1, 2, 4],
        3,
        8,
    )


def test_unet_2015_spec_matches_the_paper() -> None:
    model = load(EXPERIMENTS / "unet-2015.yaml").model
    assert (model.arch, model.padding, model.filters, model.depth) == ("unet", "valid", 64, 4)
    assert (model.in_channels, model.num_classes) == (1, 2)


def test_misspelt_key_names_full_path_and_suggests(tmp_path: Path) -> None:
    raw = {**BASE, "model": {**BASE["model"], "filtres": 8}}
    raw["model"].pop("filters")
    with pytest.raises(SpecError) as info:
        load(write(tmp_path, raw))
    message = str(info.value)
    assert "exp.yaml" in message
    assert "model.filtres" in message
    assert "did you mean 'model.filters'?" in message


def test_misspelt_top_level_and_nested_keys(tmp_path: Path) -> None:
    raw = {**BASE, "trian": {"epochs": 2}}
    with pytest.raises(SpecError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        from_dict(raw)
    raw = {**BASE, "data": {**BASE["data"], "augment": {"flipp": True}}}
    with pytest.raises(
        SpecError, match=r"data\.augment\.flipp.*did you mean 'data\.augment\.flip'"
    ):
        from_dict(raw)


def test_wrong_type_names_path_value_and_expected_type() -> None:
    with pytest.raises(SpecError) as info:
        from_dict({**BASE, "train": {"epochs": "ten"}})
    message = str(info.value)
    assert "train.epochs" in message and "'ten'" in message and "integer" in message


def test_unknown_architecture_lists_choices_and_suggests() -> None:
    with pytest.raises(SpecError) as info:
        from_dict({**BASE, "model": {"arch": "unett"}})
    message = str(info.value)
    assert "model.arch" in message and "did you mean 'unet'?" in message
    for name in ARCH_NAMES:
        assert name in message


def test_unknown_loss_and_literal_choices() -> None:
    with pytest.raises(SpecError, match=r"loss\.name.*did you mean 'dice'"):
        from_dict({**BASE, "loss": {"name": "dicee"}})
    with pytest.raises(SpecError, match=r"train\.optimizer.*'adamw'.*'sgd'"):
        from_dict({**BASE, "train": {"optimizer": "adam2"}})


def test_overrides_create_sections_and_parse_yaml_scalars() -> None:
    exp = from_dict(
        BASE,
        overrides=[
            "train.epochs=2",
            "train.lr=1e-3",
            "model.filters=16",
            "data.patch_size=[16, 16]",
            "data.augment.flip=false",
        ],
    )
    assert exp.train.epochs == 2 and exp.train.lr == pytest.approx(1e-3)
    assert exp.model.filters == 16 and exp.data.patch_size == [16, 16]
    assert exp.inference.patch_size == [16, 16]  # defaults to data.patch_size
    assert exp.data.augment.flip is False


def test_override_unknown_key_is_an_error_with_suggestion() -> None:
    with pytest.raises(
        SpecError, match=r"train\.epoch: unknown key \(did you mean 'train\.epochs'"
    ):
        from_dict(BASE, overrides=["train.epoch=3"])


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(SpecError, match="key.path=value"):
        from_dict(BASE, overrides=[bad])


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(SpecError, match="'seed' is a value"):
        from_dict({**BASE, "seed": 3}, overrides=["seed.x=1"])


def test_cross_field_rules() -> None:
    with pytest.raises(SpecError, match="patch_size has 3 entries but model.dims is 2"):
        from_dict({**BASE, "data": {**BASE["data"], "patch_size": [8, 8, 8]}})
    with pytest.raises(SpecError, match="multilabel"):
        from_dict({**BASE, "multilabel": True, "loss": {"name": "ce"}})
    with pytest.raises(SpecError, match=r"data\.root.*data\.synthetic"):
        from_dict({**BASE, "data": {"patch_size": [32, 32]}})


def test_labels_define_classes() -> None:
    exp = from_dict({**BASE, "model": {**BASE["model"], "labels": {0: "bg", 1: "a", 2: "b"}}})
    assert exp.model.num_classes == 3
    with pytest.raises(SpecError, match="classes is 2 but model.labels names 3"):
        from_dict(
            {**BASE, "model": {**BASE["model"], "classes": 2, "labels": {0: "x", 1: "y", 2: "z"}}}
        )


def test_spec_is_frozen() -> None:
    exp = from_dict(BASE)
    with pytest.raises(Exception, match="frozen"):
        exp.train.epochs = 3  # type: ignore[misc]


def test_missing_file_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="nope.yaml: spec file not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load(bad)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load(path)


def test_schema_names_are_complete() -> None:
    model_field = Experiment.model_fields["model"]
    assert set(ARCH_NAMES) == {"cnn", "dilated", "patch_cnn", "fcn", "unet"}
    assert "model" in Experiment.model_fields and model_field.is_required()
    assert set(LOSS_NAMES) == {"bce", "ce", "weighted_ce", "dice", "dice_ce", "focal"}
