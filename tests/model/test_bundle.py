"""Model bundle: card contents, exact round trip, checksum and schema checks, site errors."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bids_harmonize
from bids_harmonize.model import (
    BundleError,
    UnknownSiteError,
    build_translator,
    harmonize_volume,
    load_bundle,
    reference_style,
    save_bundle,
)
from bids_harmonize.model.bundle import CARD_NAME, WEIGHTS_NAME, sha256_of
from bids_harmonize.model.card import DEFAULT_LICENSE, DEFAULT_MODEL_VERSION, InputContract, ModelInfo, read_card
from bids_harmonize.preproc.operations import intensity_convention


@pytest.fixture()
def bundle_copy(small_bundle, tmp_path) -> Path:
    """A private copy of the bundle files, safe to tamper with."""
    for name in (CARD_NAME, WEIGHTS_NAME):
        shutil.copy(small_bundle / name, tmp_path / name)
    return tmp_path


def test_card_records_sites_styles_config_hashes_and_versions(small_bundle, tiny_config, quick_train_config):
    card = json.loads((small_bundle / CARD_NAME).read_text())
    assert card["schema_version"] == 3 and card["preset"] == "tiny"
    assert [site["name"] for site in card["sites"]] == ["siteA", "siteB"]
    assert all(len(site["style"]) == tiny_config.style_dim for site in card["sites"])
    assert card["sites"][0]["signature"] == {"Manufacturer": "Acme", "MagneticFieldStrength": 3.0}
    assert card["sites"][1]["signature"] is None
    assert card["network"] == tiny_config.to_dict()
    assert card["training"] == quick_train_config.to_dict() and card["seed"] == quick_train_config.seed
    assert card["data_hash"].startswith("sha256:")
    assert card["weights"]["sha256"] == sha256_of(small_bundle / WEIGHTS_NAME)
    assert card["software"] == {"bids_harmonize": bids_harmonize.__version__, "torch": torch.__version__}
    assert card["metrics"]["iterations"] == quick_train_config.iterations
    assert (card["model_version"], card["license"]) == (DEFAULT_MODEL_VERSION, DEFAULT_LICENSE)
    assert "structural MRI images" in card["intended_use"] and "Not for clinical use" in card["intended_use"]


def test_weights_hold_the_inference_networks_only(small_bundle):
    prefixes = {name.split(".")[0] for name in load_file(small_bundle / WEIGHTS_NAME)}
    assert prefixes == {"content_encoder", "style_encoder", "mapping", "generator"}


def test_save_then_load_gives_bit_identical_outputs(tmp_path, tiny_config, toy_data):
    torch.manual_seed(0)
    translator = build_translator(tiny_config).eval()
    styles = torch.randn(2, tiny_config.style_dim)
    save_bundle(tmp_path, translator, ["siteA", "siteB"], styles, data_hash="sha256:test")
    bundle = load_bundle(tmp_path)
    volume = toy_data[0][0]
    source = reference_style(translator, volume, site_index=0)
    expected = harmonize_volume(translator, volume, styles[1], source_style=source)
    harmonized = bundle.harmonize(volume, target_site="siteB", source_site="siteA")
    assert harmonized.shape == volume.shape
    assert np.array_equal(harmonized, expected)
    reloaded = load_bundle(tmp_path / CARD_NAME).harmonize(volume, "siteB", source_site="siteA")
    assert np.array_equal(harmonized, reloaded)
    assert bundle.sha256 == sha256_of(tmp_path / WEIGHTS_NAME)


def test_style_choices(small_bundle, toy_data):
    bundle = load_bundle(small_bundle)
    volume = toy_data[0][0]
    harmonize = functools.partial(bundle.harmonize, volume, "siteB", source_site="siteA")
    random_1 = harmonize(style="random", seed=1)
    assert np.array_equal(random_1, harmonize(style="random", seed=1))
    assert not np.array_equal(random_1, harmonize(style="random", seed=2))
    by_reference = harmonize(style="reference", reference=toy_data[0][4])
    assert by_reference.shape == volume.shape
    with pytest.raises(ValueError, match="reference"):
        harmonize(style="reference")
    with pytest.raises(ValueError, match="style must be one of"):
        harmonize(style="mean")


def test_the_style_aware_layout_needs_the_source_site(small_bundle, toy_data):
    bundle = load_bundle(small_bundle)
    with pytest.raises(ValueError, match="source_site"):
        bundle.harmonize(toy_data[0][0], "siteB")
    with pytest.raises(UnknownSiteError):
        bundle.harmonize(toy_data[0][0], "siteB", source_site="siteZ")


def test_unknown_site_error_lists_the_known_sites(small_bundle, toy_data):
    bundle = load_bundle(small_bundle)
    with pytest.raises(UnknownSiteError) as caught:
        bundle.harmonize(toy_data[0][0], target_site="siteC", source_site="siteA")
    assert "'siteC'" in str(caught.value) and "'siteA', 'siteB'" in str(caught.value)
    assert caught.value.known == ["siteA", "siteB"]


def test_tampered_weights_fail_the_checksum(bundle_copy):
    weights = bundle_copy / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256") as caught:
        load_bundle(bundle_copy)
    assert str(weights) in str(caught.value) and "re-copy" in str(caught.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda card: card.pop("sites"), "'sites' is a required property"),
        (lambda card: card["weights"].update(sha256=7), "card.weights.sha256: 7 is not of type 'string'"),
        (lambda card: card["sites"][0].update(style=[float("nan")] * 16), r"card.sites\[0\].style\[0\] is nan"),
        (
            lambda card: card["sites"][0].update(signature={"intensity_scale": {"lo": 0.0, "hi": float("inf")}}),
            r"card.sites\[0\].signature.intensity_scale.hi is inf",
        ),
        (lambda card: card["sites"][0].update(signature={"intensity_scale": {"lo": 5.0, "hi": 1.0}}), "hi > lo"),
        (lambda card: card.update(kind="other/model"), "'bids_harmonize/murd' was expected"),
        (lambda card: card["sites"][0].update(style=[0.0]), r"card.sites\[0\].style must be"),
        (lambda card: card["sites"][1].update(name="siteA"), "unique names"),
        (lambda card: card.update(schema_version=99), "upgrade bids_harmonize"),
        (lambda card: card["network"].update(depth=3), "unknown keys"),
        (lambda card: card["network"].update(style_blocks=1023.0), "Numerical result out of range"),
    ],
)
def test_invalid_cards_are_rejected_naming_the_file_and_the_problem(bundle_copy, edit, message):
    card_path = bundle_copy / CARD_NAME
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(bundle_copy)
    assert str(card_path) in str(caught.value)


def test_missing_or_unreadable_files_are_clear_errors(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="model card not found"):
        load_bundle(tmp_path / "nowhere")
    (bundle_copy / CARD_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="invalid model card"):
        load_bundle(bundle_copy)


def test_missing_weights_file_is_a_clear_error(bundle_copy):
    (bundle_copy / WEIGHTS_NAME).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_copy)


def _contract(bundle_dir: Path) -> InputContract:
    image_size = json.loads((bundle_dir / CARD_NAME).read_text())["network"]["image_size"]
    return InputContract("T1w", "MNI152NLin2009cSym", 2, (97, 115, 97), image_size, 2, intensity_convention())


def _save(folder: Path, tiny_config, **options) -> Path:
    styles = torch.zeros(2, tiny_config.style_dim)
    return save_bundle(
        folder, build_translator(tiny_config), ["siteA", "siteB"], styles, data_hash="sha256:t", **options
    )


def test_the_contract_and_model_info_are_written_once_with_the_bundle(small_bundle, tmp_path, tiny_config):
    contract = _contract(small_bundle)
    info = ModelInfo("2.1.0", "CC-BY-4.0", "Harmonizing the study's T1w images.")
    folder = _save(tmp_path / "m", tiny_config, input_contract=contract, info=info)
    bundle = load_bundle(folder)
    assert bundle.input_contract == contract and bundle.model_card.info == info
    assert bundle.card_sha256 == sha256_of(folder / CARD_NAME)
    assert json.loads((folder / CARD_NAME).read_text())["input"]["grid_shape"] == [97, 115, 97]
    default = read_card(_save(tmp_path / "d", tiny_config, input_contract=contract)).info
    assert default.version == DEFAULT_MODEL_VERSION and "T1w images" in default.intended_use


def test_a_contract_that_disagrees_with_the_network_is_never_written(small_bundle, tmp_path, tiny_config):
    contract = _contract(small_bundle)
    wrong = InputContract(**{**contract.__dict__, "image_size": contract.image_size + 16})
    with pytest.raises(ValueError, match="image_size"):
        _save(tmp_path / "m", tiny_config, input_contract=wrong)
    assert not (tmp_path / "m" / CARD_NAME).exists()


@pytest.mark.parametrize("schema_version", [1, 2])
def test_cards_written_before_model_info_still_load(bundle_copy, toy_data, schema_version):
    card_path = bundle_copy / CARD_NAME
    card = json.loads(card_path.read_text())
    for key in ("model_version", "license", "intended_use", "input"):
        card.pop(key, None)
    card["schema_version"] = schema_version
    card_path.write_text(json.dumps(card))
    bundle = load_bundle(bundle_copy)
    assert bundle.model_card.info is None and bundle.input_contract is None
    assert bundle.harmonize(toy_data[0][0], "siteB", source_site="siteA").shape == toy_data[0][0].shape


def test_a_current_card_without_model_info_is_refused(bundle_copy):
    card_path = bundle_copy / CARD_NAME
    card = json.loads(card_path.read_text())
    del card["license"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(BundleError, match="'license' is a required property"):
        read_card(bundle_copy)


def test_reading_the_card_checks_the_weights_but_loads_none(bundle_copy, monkeypatch):
    import bids_harmonize.model.bundle as bundle_module

    def no_loading(*args, **kwargs):
        raise AssertionError("read_card loaded the weights")

    monkeypatch.setattr(bundle_module, "load_file", no_loading)
    card = read_card(bundle_copy / CARD_NAME)
    assert card.sites == ["siteA", "siteB"] and card.sha256 == sha256_of(bundle_copy / WEIGHTS_NAME)
    with pytest.raises(UnknownSiteError):
        card.signature("siteC")
    data = bytearray((bundle_copy / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0x01
    (bundle_copy / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        read_card(bundle_copy)


def test_a_card_with_more_blocks_than_the_weights_hold_tensors_is_refused_at_once(bundle_copy):
    card_path = bundle_copy / CARD_NAME
    card = json.loads(card_path.read_text())
    card["network"]["generator_res_blocks"] = 10**12  # building that many modules would never end
    card_path.write_text(json.dumps(card))
    with pytest.raises(BundleError, match="weights do not fit the network"):
        read_card(bundle_copy)
