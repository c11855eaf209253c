"""Speed of the MURD model: FLOPs, inference and training throughput, share of the device peak.

    python benchmarks/model_speed.py [--device cpu|cuda] [--preset reference|tiny]
        [--slices 256] [--steps 30] [--warmup 3] [--repeats 3] [--batch-size 8] [--infer-batch N]
        [--compile] [--threads N] [--out-dir DIR]

FLOPs are counted with torch.utils.flop_counter (a multiply-add counts 2): the forward of one
2.5D slice stack at inference (every slice of a volume costs one), and one whole training
iteration (D step with R1, G step, all backward passes) divided by its batch size. Timings
bracket torch.cuda.synchronize() on CUDA and include host<->device copies of the volume.
With fewer than 256 --slices the per-volume time is extrapolated from the slice rate (the table
says so). Results: benchmarks/results/model_speed_<device>_<preset>.{md,json}.

Targets at the reference width on one H100/H200: a 256-slice volume in <= 0.3 s and >= 100
training samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bids_harmonize.model import PRESETS, TrainConfig, Trainer, build_translator, harmonize_volume, preset_config
from bids_harmonize.model.common import resolve_device
from bids_harmonize.model.data import SliceSampler

RESULTS = Path(__file__).parent / "results"
VOLUME_SLICES = 256
TARGET_VOLUME_SECONDS = 0.3
TARGET_TRAIN_SAMPLES_PER_SECOND = 100.0
# Dense bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets (without sparsity).
GPU_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0}
NUM_SITES = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--preset", default="reference", choices=sorted(PRESETS))
    parser.add_argument("--slices", type=int, default=VOLUME_SLICES, help="slices of the timed volume")
    parser.add_argument("--steps", type=int, default=30, help="timed training iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations/volumes first")
    parser.add_argument("--repeats", type=int, default=3, help="timed volumes")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch")
    parser.add_argument("--infer-batch", type=int, default=None, help="inference slice batch (default: automatic)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the translator networks")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    return parser.parse_args()


def synchronized_seconds(function: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Wall time of `repeats` calls, with the device idle before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def smooth_volumes(count: int, size: int, slices: int, seed: int = 0) -> torch.Tensor:
    """Blurry random volumes in [-1, 1] (V, D, H, W): image-like input, no foreground gaps."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, max(slices // 8, 2), size // 16, size // 16, generator=generator)
    fine = torch.nn.functional.interpolate(coarse, size=(slices, size, size), mode="trilinear")
    return (fine[:, 0] * 2 - 1).clamp(-0.99, 1.0)


def inference_flops_per_slice(config) -> int:
    """Forward FLOPs of one slice stack, counted on the meta device (shapes only)."""
    with torch.device("meta"):
        translator = build_translator(config)
        images = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
        with FlopCounterMode(display=False) as counter:
            style = torch.zeros(1, config.style_dim)
            translator.translate(images, style, style if translator.needs_source_style else None)
    return counter.get_total_flops()


def measure_inference(config, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    translator = build_translator(config).to(device).eval().requires_grad_(False)
    if args.compile:
        translator.content_encoder.compile()
        translator.generator.compile()
    volume = smooth_volumes(1, config.image_size, args.slices)[0].movedim(0, -1).numpy()
    style = torch.zeros(config.style_dim)
    source = torch.ones(config.style_dim) if translator.needs_source_style else None

    def run() -> None:
        harmonize_volume(translator, volume, style, source_style=source, batch_size=args.infer_batch)

    synchronized_seconds(run, device, max(args.warmup, 1))
    seconds = synchronized_seconds(run, device, args.repeats) / args.repeats
    slices_per_second = args.slices / seconds
    return {
        "slices_per_s": slices_per_second,
        "s_per_256_slice_volume": VOLUME_SLICES / slices_per_second,
        "volume_time_extrapolated": args.slices != VOLUME_SLICES,
    }


def build_trainer(config, device: torch.device, args: argparse.Namespace, compile_networks: bool) -> Trainer:
    volumes = smooth_volumes(4, config.image_size, 32).half()
    sampler = SliceSampler(
        volumes,
        [0, 0, 1, 1],
        config,
        batch_size=args.batch_size,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=1.0,
        seed=0,
        device=device,
    )
    train_config = TrainConfig(
        iterations=args.warmup + args.steps + 2,
        batch_size=args.batch_size,
        log_every=1,
        checkpoint_every=1,
        compile=compile_networks,
    )
    return Trainer(config, train_config, sampler, device)


def measure_training(config, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    eager = build_trainer(config, device, args, compile_networks=False)
    with FlopCounterMode(display=False) as counter:
        eager.train_step()
    flops_per_sample = counter.get_total_flops() / args.batch_size
    trainer = build_trainer(config, device, args, compile_networks=True) if args.compile else eager
    synchronized_seconds(trainer.train_step, device, args.warmup)
    seconds = synchronized_seconds(trainer.train_step, device, args.steps)
    return {"flops_per_sample": flops_per_sample, "samples_per_s": args.steps * args.batch_size / seconds}


def cpu_matmul_peak_tflops(seconds: float = 1.0) -> float:
    """Measured fp32 matmul rate with the current thread count: the CPU's practical peak."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 1024**3 * count / (time.perf_counter() - start) / 1e12


def device_peak(device: torch.device) -> tuple[float | None, str]:
    """(peak TFLOP/s, what the peak is) for the achieved-share column."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_TFLOPS.items():
            if key in name:
                return peak, f"{key} dense bf16 data-sheet peak"
        return None, f"n/a (no peak on file for {name})"
    return cpu_matmul_peak_tflops(), "measured fp32 1024^3 matmul rate"


def machine_description(device: torch.device) -> dict[str, Any]:
    cpu_model = "unknown"
    if Path("/proc/cpuinfo").exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu_model = names[0] if names else cpu_model
    description = {
        "cpu": cpu_model,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on a shared machine skew CPU timings
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        description.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return description


def table_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    infer, training, peak = results["inference"], results["training"], results["peak_tflops"]

    def share(tflops: float) -> str:
        return f"{tflops:.3g} TFLOP/s" + (f" ({100 * tflops / peak:.1f} % of peak)" if peak else "")

    volume_note = " (extrapolated)" if infer["volume_time_extrapolated"] else ""
    infer_tflops = results["inference_flops_per_slice"] * infer["slices_per_s"] / 1e12
    train_tflops = training["flops_per_sample"] * training["samples_per_s"] / 1e12
    return [
        ("forward GFLOP per slice", f"{results['inference_flops_per_slice'] / 1e9:.3g}"),
        ("training GFLOP per sample (fwd+bwd, D+G)", f"{training['flops_per_sample'] / 1e9:.3g}"),
        ("inference slices/s", f"{infer['slices_per_s']:.3g}"),
        ("seconds per 256-slice volume", f"{infer['s_per_256_slice_volume']:.3g}{volume_note}"),
        ("training samples/s", f"{training['samples_per_s']:.3g}"),
        ("inference achieved", share(infer_tflops)),
        ("training achieved", share(train_tflops)),
        ("peak used", f"{peak:.3g} TFLOP/s, {results['peak_source']}" if peak else results["peak_source"]),
    ]


def markdown(results: dict[str, Any], rows: list[tuple[str, str]]) -> str:
    settings = results["settings"]
    lines = [
        f"# MURD speed: {settings['device']}, preset {settings['preset']}",
        "",
        f"Command: `{results['command']}`",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in results["machine"].items()),
        "",
        f"Targets (reference preset, one H100/H200): 256-slice volume <= {TARGET_VOLUME_SECONDS} s, "
        f">= {TARGET_TRAIN_SAMPLES_PER_SECOND:.0f} training samples/s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True  # fixed input sizes, as in training and inference
    config = preset_config(args.preset, num_sites=NUM_SITES)
    peak, peak_source = device_peak(device)
    results = {
        "command": "python benchmarks/model_speed.py " + " ".join(sys.argv[1:]),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "device": str(device)},
        "machine": machine_description(device),
        "inference_flops_per_slice": inference_flops_per_slice(config),
        "inference": measure_inference(config, device, args),
        "training": measure_training(config, device, args),
        "peak_tflops": peak,
        "peak_source": peak_source,
    }
    rows = table_rows(results)
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"model_speed_{device.type}_{args.preset}"
    stem.with_suffix(".md").write_text(markdown(results, rows))
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    main()
