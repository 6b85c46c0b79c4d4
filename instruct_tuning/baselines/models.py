"""The supervised image classifiers of the paper's Table 2, built from transformers' model classes.

Each reads the pixel_values [N, 3, S, S] in [-1, 1] that MVaEMa's vision tower reads (S = the vision config's
image_size) and is trained from scratch. Sizes are chosen against MVaEMa's vision tower (0.50 M parameters at the
paper's sizes; 1.55 M for the whole model with an 8192-token vocabulary):

| baseline | transformers class | shape | parameters (10 classes, 224 px) |
|---|---|---|---|
| vit | ViTForImageClassification | MVaEMa's vision config, field for field | 0.50 M |
| resnet | ResNetForImageClassification | ResNet-18's depths (2, 2, 2, 2) at a quarter of its widths | 0.70 M |
| swin | SwinForImageClassification | 3 stages of 2 blocks, widths 32/64/128, window 7, init std 0.1 | 0.58 M |
"""

from __future__ import annotations

import torch
from transformers import (
    ResNetConfig,
    ResNetForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from modeling_mvaema.configuration_mvaema import MVaEMaVisionConfig

RESNET_WIDTHS = (16, 32, 64, 128)  # ResNet-18's (64, 128, 256, 512) / 4
RESNET_DEPTHS = (2, 2, 2, 2)
SWIN_EMBED_DIM = 32
SWIN_DEPTHS = (2, 2, 2)
SWIN_HEADS = (2, 4, 8)  # 16 dimensions per head, as MVaEMa's attention
SWIN_WINDOW = 7


def label_maps(class_names: list[str]) -> dict:
    return {"id2label": dict(enumerate(class_names)), "label2id": {name: i for i, name in enumerate(class_names)}}


def vit_classifier(vision: MVaEMaVisionConfig, class_names: list[str]) -> ViTForImageClassification:
    """The paper's "VanillaViT" row: MVaEMa's vision tower (same sizes, initialisation, no dropout) + a linear head."""
    config = ViTConfig(
        hidden_size=vision.hidden_size,
        num_hidden_layers=vision.num_hidden_layers,
        num_attention_heads=vision.num_attention_heads,
        intermediate_size=vision.intermediate_size,
        hidden_act=vision.hidden_act,
        hidden_dropout_prob=vision.hidden_dropout,
        attention_probs_dropout_prob=vision.attention_dropout,
        initializer_range=vision.initializer_range,
        layer_norm_eps=vision.layer_norm_eps,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        num_channels=vision.num_channels,
        **label_maps(class_names),
    )
    return ViTForImageClassification(config)


def resnet_classifier(vision: MVaEMaVisionConfig, class_names: list[str]) -> ResNetForImageClassification:
    """A ConvNet whose four stages end on S/32 x S/32 feature maps: 7 x 7 at 224 px, the ViT's patch grid."""
    config = ResNetConfig(
        num_channels=vision.num_channels,
        embedding_size=RESNET_WIDTHS[0],
        hidden_sizes=list(RESNET_WIDTHS),
        depths=list(RESNET_DEPTHS),
        layer_type="basic",
        **label_maps(class_names),
    )
    return ResNetForImageClassification(config)


def swin_classifier(vision: MVaEMaVisionConfig, class_names: list[str]) -> SwinForImageClassification:
    """A hierarchical transformer: patches a quarter of the ViT's side (8 px at 224), merged twice, so its last stage
    sees the ViT's patch grid (7 x 7 at 224 px) with windows that cover it. The window is never wider than that grid:
    transformers' Swin would shrink it on smaller grids but keep a position bias sized for the wider window.
    Weights start at MVaEMa's vision initialisation (std 0.1, near 1/sqrt(width) here): at Swin's own 0.02 the
    narrow layers shrink their inputs and its training loss barely fell in 15 epochs (fold 0 of 5 of the synthetic
    corpus: top-1 0.26 at std 0.02, 0.52 at 0.1)."""
    config = SwinConfig(
        image_size=vision.image_size,
        patch_size=max(1, vision.patch_size // 4),
        num_channels=vision.num_channels,
        embed_dim=SWIN_EMBED_DIM,
        depths=list(SWIN_DEPTHS),
        num_heads=list(SWIN_HEADS),
        window_size=min(SWIN_WINDOW, vision.image_size // vision.patch_size),
        drop_path_rate=0.0,
        initializer_range=vision.initializer_range,
        **label_maps(class_names),
    )
    return SwinForImageClassification(config)


NETWORKS = {"vit": vit_classifier, "resnet": resnet_classifier, "swin": swin_classifier}


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
