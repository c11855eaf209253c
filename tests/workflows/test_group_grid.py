"""The group level trains on the grid the participant level already preprocessed at."""

from __future__ import annotations

import logging
from pathlib import Path

from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.config import DEFAULT_RESOLUTION, DEFAULT_TEMPLATE, RunConfig
from bids_harmonize.levels.bundles import group_template


def _setup(tmp_path: Path, preprocessed: dict[int, int]) -> tuple[RunConfig, list[ImageRecord]]:
    out = tmp_path / "out"
    images = [
        ImageRecord(
            tmp_path / "bids" / f"sub-{k}/anat/sub-{k}_T1w.nii.gz",
            f"sub-{k}/anat/sub-{k}_T1w.nii.gz",
            str(k),
            None,
            "T1w",
        )
        for k in range(4)
    ]
    layout = OutputLayout(out)
    for resolution, count in preprocessed.items():
        for image in images[:count]:
            path = layout.output(image, "template_preproc", DEFAULT_TEMPLATE, resolution)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return RunConfig(tmp_path / "bids", out, "group", tmp_path / "work"), images


def test_a_study_preprocessed_at_2_mm_trains_at_2_mm_without_the_option(tmp_path, caplog):
    config, images = _setup(tmp_path, {2: 4})
    with caplog.at_level(logging.INFO, logger="bids_harmonize"):
        assert group_template(config, images).resolution == 2
    assert "4 of 4 image(s) already preprocessed" in caplog.text and "--template-resolution" in caplog.text


def test_the_option_wins_and_no_outputs_means_the_default(tmp_path):
    config, images = _setup(tmp_path, {2: 4})
    config.template_resolution = 1
    assert group_template(config, images).resolution == 1
    empty_config, empty_images = _setup(tmp_path / "empty", {})
    assert group_template(empty_config, empty_images).resolution == DEFAULT_RESOLUTION


def test_the_grid_with_more_preprocessed_images_wins(tmp_path):
    config, images = _setup(tmp_path, {1: 1, 2: 3})
    assert group_template(config, images).resolution == 2
