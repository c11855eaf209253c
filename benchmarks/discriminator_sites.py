"""Can the discriminator tell the sites apart? Its held-out site accuracy next to a feature classifier's.

    python benchmarks/discriminator_sites.py [--work-dir DIR --reuse-dataset] [--steps 400]

MURD learns nothing when its discriminator cannot tell one site's images from another's (the
real/fake losses then stay at ln 2). This trains each layout's discriminator trunk alone as a
site classifier (cross-entropy over its per-site heads) on the training subjects of the quality
benchmark's phantom, and scores it on the held-out subjects' slices; beside it, a logistic
regression on the histogram and texture features of `bids_harmonize.qc.site_features`, trained
and tested on the same split. Results: benchmarks/results/discriminator_sites.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bids_harmonize.model import preset_config
from bids_harmonize.model.data import SliceSampler, stack_volumes
from bids_harmonize.model.networks import build_discriminator
from bids_harmonize.model.slices import model_image_size
from bids_harmonize.preproc.operations import robust_scale
from bids_harmonize.qc import site_features
from harness import RESULTS, load_scans, machine, simulated_phantom, split_train_test

LAYOUTS = {"paper (instance norm)": "paper-tiny", "modulated (histogram + texture)": "cpu"}


def per_site_logits(discriminator, images: torch.Tensor) -> torch.Tensor:
    """(B, num_sites): every site head's logit for every image."""
    features = discriminator.trunk(images)
    return torch.einsum("bi,soi->bs", features, discriminator.heads.weight) + discriminator.heads.bias[:, 0]


def train_and_score(
    preset: str, train_volumes, train_labels, test_volumes, test_labels, size: int, steps: int
) -> float:
    torch.manual_seed(0)
    config = preset_config(preset, 3, image_size=size)
    discriminator = build_discriminator(config)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=5e-4, betas=(0.0, 0.99))
    stacked, _ = stack_volumes(train_volumes)
    sampler = SliceSampler(
        stacked,
        train_labels,
        config,
        batch_size=8,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=0.0,
        seed=0,
        device=torch.device("cpu"),
    )
    for _ in range(steps):
        batch = sampler.sample()
        loss = torch.nn.functional.cross_entropy(per_site_logits(discriminator, batch.images), batch.source_sites)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_stacked, _ = stack_volumes(test_volumes)
    tester = SliceSampler(
        test_stacked,
        test_labels,
        config,
        batch_size=8,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=0.0,
        seed=1,
        device=torch.device("cpu"),
    )
    correct = total = 0
    with torch.no_grad():
        for chunk in torch.arange(len(tester.slice_volume)).split(64):
            images = tester.stacks(tester.slice_volume[chunk], tester.slice_centre[chunk])
            predicted = per_site_logits(discriminator.eval(), images).argmax(1)
            correct += int((predicted == tester.site_labels[tester.slice_volume[chunk]]).sum())
            total += len(chunk)
    return correct / total


def feature_classifier(train, test) -> float:
    def rows(scans):
        features = [site_features(scan.image, scan.mask) for scan in scans]
        labels = np.concatenate([[scan.site] * len(f) for scan, f in zip(scans, features)])
        return np.concatenate(features), labels

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(*rows(train))
    return float(classifier.score(*rows(test)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--reuse-dataset", action="store_true")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temporary:
        dataset = simulated_phantom(
            args.work_dir or Path(temporary), 3, 8, args.reuse_dataset and args.work_dir is not None
        )
        train, test = split_train_test(load_scans(dataset, "site1"))
    sites = sorted({scan.site for scan in train})

    def model_range(scans):
        return [robust_scale(s.image, s.mask).to_model(s.image) for s in scans], [sites.index(s.site) for s in scans]

    size = model_image_size(np.any([scan.mask for scan in train], axis=0))
    rows = {}
    for name, preset in LAYOUTS.items():
        start = time.perf_counter()
        accuracy = train_and_score(preset, *model_range(train), *model_range(test), size, args.steps)
        rows[f"discriminator, {name}"] = (accuracy, time.perf_counter() - start)
    start = time.perf_counter()
    rows["logistic regression on qc.site_features"] = (feature_classifier(train, test), time.perf_counter() - start)
    command = "python benchmarks/discriminator_sites.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Held-out site accuracy of the discriminators and of a feature classifier",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; one thread.  ",
        f"Data: the quality benchmark's phantom (3 sites x 8 subjects, 2 mm, seed 0), trained on the first half "
        f"of each site's subjects, scored on every usable slice of the other half; chance 1/3. "
        f"Discriminators: {args.steps} steps, batch 8, Adam 5e-4, cross-entropy over the per-site heads.",
        "",
        "| classifier | held-out slice accuracy | seconds |",
        "|---|---|---|",
        *[f"| {name} | {accuracy:.3f} | {seconds:.0f} |" for name, (accuracy, seconds) in rows.items()],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "discriminator_sites.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
