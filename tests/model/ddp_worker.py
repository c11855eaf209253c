"""Run by tests/model/test_train.py under torchrun with 2 CPU processes (gloo backend).

Each rank trains a few DistributedDataParallel steps and saves its weights and its first batch,
then all ranks run `train()` end to end (rank 0 writes the bundle).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bids_harmonize.model import TrainConfig, Trainer, preset_config, train  # noqa: E402
from bids_harmonize.model.data import SliceSampler, stack_volumes  # noqa: E402
from bids_harmonize.model.distributed import init_distributed  # noqa: E402
from toy_data import two_site_volumes  # noqa: E402


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    volumes, labels = two_site_volumes(per_site=2, seed=0)
    config = preset_config("tiny", num_sites=2, image_size=32)
    train_config = TrainConfig(iterations=3, batch_size=2, log_every=1, checkpoint_every=3, style_slices_per_site=4)
    context, device, _ = init_distributed(torch.device("cpu"))
    stacked, _ = stack_volumes(volumes)
    sampler = SliceSampler(
        stacked,
        labels,
        config,
        batch_size=2,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=1.0,
        seed=0,
        device=device,
        rank=context.rank,
    )
    first_images = sampler.sample().images
    trainer = Trainer(config, train_config, sampler, device, context)
    for _ in range(train_config.iterations):
        trainer.train_step()
    torch.save(
        {
            "translator": trainer.translator.state_dict(),
            "discriminator": trainer.discriminator.state_dict(),
            "first_images": first_images,
        },
        out_dir / f"rank{context.rank}.pt",
    )
    train(volumes, labels, ["A", "B"], config, train_config, out_dir / "bundle", progress=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
