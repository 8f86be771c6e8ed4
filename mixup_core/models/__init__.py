"""Model registry: `build_model(model_cfg, num_classes, input_shape)`."""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig


def build_model(cfg: ModelConfig, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    if cfg.name == "two_layer_cnn":
        from .two_layer_cnn import TwoLayerCNN

        patches, dim = input_shape
        return TwoLayerCNN(
            num_classes=num_classes,
            patches=patches,
            dim=dim,
            width=cfg.width,
            activation_power=cfg.activation_power,
            activation_threshold=cfg.activation_threshold,
            init_std=cfg.init_std,
        )
    if cfg.name == "resnet18":
        from .resnet import resnet18

        return resnet18(num_classes=num_classes, in_channels=input_shape[0])
    if cfg.name == "preact_resnet18":
        from .resnet import preact_resnet18

        return preact_resnet18(num_classes=num_classes, in_channels=input_shape[0])
    raise ValueError(f"unknown model {cfg.name!r}")  # unreachable: the config is validated
