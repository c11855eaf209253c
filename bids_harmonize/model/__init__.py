"""MURD (multi-site unsupervised representation disentanglement) in PyTorch.

Networks, losses, training, the volume inference engine and the model bundle. This package
knows nothing about BIDS: it takes arrays (or NIfTI paths) and site labels, and writes a bundle.

    bundle_dir = train(volumes, site_labels, site_names, preset_config("tiny", 2), TrainConfig(), out_dir)
    card = read_card(bundle_dir)  # the card and its checks, no weights loaded
    bundle = load_bundle(bundle_dir, device="cpu")
    harmonized = bundle.harmonize(volume, target_site="siteB", source_site="siteA")
"""

from bids_harmonize.model.bundle import BundleError, ModelBundle, UnknownSiteError, load_bundle, save_bundle
from bids_harmonize.model.card import InputContract, ModelCard, ModelInfo, read_card
from bids_harmonize.model.common import DeviceUnavailable, resolve_device
from bids_harmonize.model.infer import auto_batch_size, harmonize_volume, random_style, reference_style
from bids_harmonize.model.losses import LossWeights
from bids_harmonize.model.networks import PRESETS, MURDConfig, Translator, build_translator, preset_config
from bids_harmonize.model.train import Trainer, train
from bids_harmonize.model.train_config import TrainConfig

__all__ = [
    "PRESETS",
    "BundleError",
    "DeviceUnavailable",
    "InputContract",
    "LossWeights",
    "MURDConfig",
    "ModelBundle",
    "ModelCard",
    "ModelInfo",
    "TrainConfig",
    "Trainer",
    "Translator",
    "UnknownSiteError",
    "auto_batch_size",
    "build_translator",
    "harmonize_volume",
    "load_bundle",
    "preset_config",
    "read_card",
    "random_style",
    "reference_style",
    "resolve_device",
    "save_bundle",
    "train",
]
