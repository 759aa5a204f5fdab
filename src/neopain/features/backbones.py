"""A backbone as a feature extractor: :class:`FeatureNet` returns the requested layer taps
(the registry's, :mod:`neopain.features.registry`) with the spec's preprocessing (colour
conversion, normalisation) inside; :func:`load_backbone` builds it with verified weights.

A checkpoint fine-tuned by :mod:`neopain.finetune` is a backbone too: a config entry
``{base: <registry backbone>, weights_file: <path>/model.safetensors, layers: [...]}`` (a
path with a folder is relative to the working directory) loads the checkpoint's
full-architecture state dict (its new head is not used) into the base architecture,
whatever the format of the base's own weights; the sha256 its sidecar ``model.json``
records is a pin, and ``sha256`` in the entry is checked as well
(:mod:`neopain.features.checkpoint`).

Layer taps are torchvision FX node names (see
``torchvision.models.feature_extraction.create_feature_extractor``).  All in-place
activations are switched to out-of-place before tracing, so a tap placed before an
activation really sees the pre-activation values (torchvision builds VGG, AlexNet and
MobileNet with ``inplace=True`` ReLUs, which would otherwise overwrite the tapped tensor).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from neopain.features.registry import BackboneSpec, get_spec
from neopain.features.weightload import load_pretrained

log = logging.getLogger(__name__)

GREY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


def _unwrap_ops_sequentials(model: nn.Module) -> None:
    """Turn torchvision.ops Sequential subclasses (e.g. Conv2dNormActivation) into plain
    ``nn.Sequential`` so FX traces through them: torchvision's feature extractor treats
    every torchvision.ops module as a leaf, which would hide their inner (pre-activation)
    nodes.  Parameter names are unchanged."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Sequential) and type(child) is not nn.Sequential \
                and type(child).__module__.startswith("torchvision.ops"):
            plain = nn.Sequential(*child.children())
            setattr(model, name, plain)
            child = plain
        _unwrap_ops_sequentials(child)


def _no_inplace(model: nn.Module) -> None:
    for mod in model.modules():
        if hasattr(mod, "inplace") and isinstance(getattr(mod, "inplace"), bool):
            mod.inplace = False


class FeatureNet(nn.Module):
    """A backbone returning the requested taps as flat float tensors.

    Input: N x 3 x H x W float RGB in [0, 1] at ``spec.input_size``; the spec's colour
    conversion (RGB -> BGR or grey) and normalisation happen inside."""

    def __init__(self, spec: BackboneSpec, layers: list[str], model: nn.Module):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        unknown = [name for name in layers if name not in spec.taps]
        if unknown:
            raise ValueError(
                f"backbone {spec.name!r} has no layer(s) {', '.join(unknown)}; "
                f"known: {', '.join(spec.taps)}"
            )
        if spec.colour not in ("RGB", "BGR", "GRAY"):
            raise ValueError(f"backbone {spec.name!r}: colour {spec.colour!r}")
        _no_inplace(model)
        _unwrap_ops_sequentials(model)
        self.spec = spec
        self.layers = list(layers)
        nodes = sorted({spec.taps[name].node for name in self.layers})
        self._node_key = {node: f"n{i}" for i, node in enumerate(nodes)}
        self.body = create_feature_extractor(model.eval(), return_nodes=self._node_key)
        channels = 1 if spec.colour == "GRAY" else 3
        if len(spec.mean) != channels or len(spec.std) != channels:
            raise ValueError(f"backbone {spec.name!r}: mean/std need {channels} values")
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, channels, 1, 1))
        self.register_buffer("grey", torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: N x 3 x H x W float in [0, 1], RGB."""
        if self.spec.colour == "BGR":
            images = images.flip(1)
        elif self.spec.colour == "GRAY":
            images = (images * self.grey.to(images.dtype)).sum(1, keepdim=True)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = self.body(x)
        feats = {}
        for name in self.layers:
            tap = self.spec.taps[name]
            t = out[self._node_key[tap.node]]
            if tap.pool == "avg" and t.ndim == 4:
                t = t.mean(dim=(2, 3))
            feats[name] = t.flatten(1)
        return feats


def load_backbone(
    name: str, layers: list[str], weights_dir: str | Path | None = None,
    pretrained: bool = True, cfg: Mapping[str, Any] | None = None,
) -> tuple[FeatureNet, dict[str, str]]:
    """Build backbone ``name`` with its verified weights; return (net, sources).

    ``cfg``: the backbone's config entry (overrides, see :func:`get_spec`).
    ``sources`` maps ``weights:<file>`` to its full sha256, for provenance.
    ``pretrained=False`` keeps random initialisation (shape tests only).
    """
    spec = get_spec(name, cfg)
    unknown = [layer for layer in layers if layer not in spec.taps]
    if unknown:   # before building: some architectures are large
        raise ValueError(f"backbone {spec.name!r} has no layer(s) {', '.join(unknown)}; "
                         f"known: {', '.join(spec.taps)}")
    sources: dict[str, str] = {}
    if pretrained:
        model, path, digest = load_pretrained(spec, weights_dir)
        sources[f"weights:{spec.weights_file}"] = digest
        log.info("loaded %s weights from %s (sha256 %s)", name, path, digest)
    else:
        model = spec.build()
    return FeatureNet(spec, layers, model), sources
