"""The fine-tuned network: :class:`FinetuneNet` = the registry backbone truncated at a tap
(``layer``, default ``penultimate``: the classifier's input) + a new head (dropout,
linear); which of its parameters train (``unfreeze``).

The body is the backbone's FX feature extractor
(:class:`neopain.features.backbones.FeatureNet`, which shares its modules with the full
architecture), so preprocessing (colour, mean/std) is the registry's, and a checkpoint
keeps the *full* architecture's state dict: it loads back as a backbone for ``extract``
(:mod:`neopain.features.checkpoint`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from neopain.features import checkpoint
from neopain.features.backbones import FeatureNet
from neopain.features.registry import get_spec
from neopain.features.weightfiles import WeightsError
from neopain.features.weightload import load_pretrained

#: module-name prefixes of each architecture's last block (``unfreeze: last_block``)
LAST_BLOCK: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.17", "features.18"),       # last inverted residual + 1x1 conv
    "fer": ("layers.separable_conv2d_7", "layers.batch_normalization_13",
            "layers.separable_conv2d_8", "layers.batch_normalization_14",
            "layers.conv2d_6", "layers.batch_normalization_12"),   # 4th residual block
    "vgg16": ("classifier.0", "classifier.3"),              # fc6, fc7
    "alexnet": ("classifier.1", "classifier.4"),            # fc6, fc7
    "vgg_f": ("body.fc6", "body.fc7"), "vgg_m": ("body.fc6", "body.fc7"),
    "vgg_s": ("body.fc6", "body.fc7"), "vgg_face": ("body.fc6", "body.fc7"),
    "resnet50": ("layer4",),
    "inception_v3": ("Mixed_7c",),
    "xception": ("block12", "conv3", "bn3", "conv4", "bn4"),
}


class FinetuneNet(nn.Module):
    """Backbone truncated at ``layer`` + a new head.  Input: N x 3 x H x W RGB in [0, 1]."""

    def __init__(self, spec, layer: str, base: nn.Module, n_classes: int,
                 dropout: float = 0.2, input_size: int | None = None):
        super().__init__()
        self.features = FeatureNet(spec, [layer], base)
        self._base = [base]       # the full architecture (shares the body's modules)
        self.spec = spec
        self.layer = layer
        self.input_size = int(input_size or spec.input_size)
        with torch.no_grad():
            self.features.eval()
            d = self.features(torch.zeros(1, 3, self.input_size, self.input_size))[layer]
        self.feature_dim = int(d.shape[1])
        self.head = nn.Sequential(nn.Dropout(float(dropout)),
                                  nn.Linear(self.feature_dim, int(n_classes)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[self.layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return checkpoint.checkpoint_tensors(self.base.state_dict(), self.head.state_dict())


def _spec(backbone: str, backbone_cfg: Mapping[str, Any] | None, input_size: int | None):
    cfg = {k: v for k, v in dict(backbone_cfg or {}).items() if k != "layers"}
    spec = get_spec(backbone, cfg)
    base_name = cfg.get("base", backbone)
    size = int(input_size or spec.input_size)
    if base_name == "fer" and size != 64:
        raise ValueError(f"backbone {backbone!r} (fer) has a fixed 64 px input; "
                         f"input_size {size} is not possible")
    return spec, base_name, size


def default_layer(spec) -> str:
    """``penultimate`` (the classifier's input), or ``fc7_post`` for the VGG family."""
    return "penultimate" if "penultimate" in spec.taps else "fc7_post"


def build_net(backbone: str, n_classes: int, layer: str | None = "penultimate", *,
              backbone_cfg: Mapping[str, Any] | None = None,
              weights_dir: str | os.PathLike | None = None, init: str = "pretrained",
              input_size: int | None = None, dropout: float = 0.2, seed: int = 0,
              ) -> tuple[FinetuneNet, dict[str, Any]]:
    """A :class:`FinetuneNet` and its parent record ``{kind, file, sha256}``.

    ``init``: ``pretrained`` (the backbone's verified weights), ``random`` (random
    initialisation: throughput benchmarks only) or the path of a fine-tuned checkpoint
    (cascade stage 2: its body is loaded after its sha256 is verified, its head is
    replaced).
    """
    spec, base_name, size = _spec(backbone, backbone_cfg, input_size)
    layer = layer or default_layer(spec)
    if layer not in spec.taps:
        raise ValueError(f"backbone {backbone!r} has no layer {layer!r}; known: "
                         f"{', '.join(spec.taps)}")
    torch.manual_seed(int(seed))
    if init == "pretrained":
        base, _, digest = load_pretrained(spec, weights_dir)
        parent = {"kind": "weights", "file": spec.weights_file, "sha256": digest}
    elif init == "random":
        base = spec.build()
        parent = {"kind": "random", "file": None, "sha256": None}
    else:
        tensors, meta, digest = checkpoint.read_checkpoint(init)
        if meta["base"] != base_name:
            raise WeightsError(f"{init}: a checkpoint of {meta['base']!r}, not {base_name!r}")
        base = spec.build()
        base.load_state_dict(checkpoint.backbone_state(tensors))
        parent = {"kind": "checkpoint", "file": str(init), "sha256": digest,
                  "classes": meta.get("classes")}
    torch.manual_seed(int(seed) + 1)         # the head's initialisation
    net = FinetuneNet(spec, layer, base, n_classes, dropout, size)
    net.base_name = base_name
    return net, parent


def unfreeze_prefixes(net: FinetuneNet, unfreeze: str,
                      modules: Sequence[str] | None = None) -> list[str] | None:
    """Module-name prefixes (of the full architecture) that train; None = all."""
    if modules:
        return list(modules)
    if unfreeze == "all":
        return None
    if unfreeze == "head":
        return []
    if net.base_name in LAST_BLOCK:
        return list(LAST_BLOCK[net.base_name])
    # another architecture: the block (parent module) of the body's last parameter
    names = [n for n, _ in net.features.body.named_parameters()]
    if not names:
        return []
    module = names[-1].rsplit(".", 1)[0]
    return [module.rsplit(".", 1)[0] if "." in module else module]


def set_trainable(net: FinetuneNet, unfreeze: str, modules: Sequence[str] | None = None
                  ) -> list[str]:
    """Freeze/unfreeze the body; return the names of its trainable parameters."""
    prefixes = unfreeze_prefixes(net, unfreeze, modules)
    trainable = []
    for name, p in net.features.body.named_parameters():
        on = prefixes is None or any(name == q or name.startswith(q + ".") for q in prefixes)
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    if prefixes and not trainable:
        raise ValueError(f"unfreeze_modules {prefixes}: no parameter of the body matches "
                         f"(the body ends at layer {net.layer!r})")
    for p in net.head.parameters():
        p.requires_grad_(True)
    return trainable


def frozen_bn_eval(net: FinetuneNet) -> None:
    for mod in net.features.body.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in mod.parameters(recurse=False)):
                mod.eval()



def checkpoint_meta(net: FinetuneNet, classes: Sequence[str], parent: Mapping[str, Any],
                    prov: Mapping[str, Any]) -> dict[str, Any]:
    spec = net.spec
    return {"format": checkpoint.FORMAT, "base": net.base_name, "backbone": spec.name,
            "layer": net.layer, "feature_dim": net.feature_dim,
            "n_classes": len(classes), "classes": list(classes),
            "input_size": net.input_size, "colour": spec.colour, "mean": list(spec.mean),
            "std": list(spec.std), "parent": dict(parent), "provenance": dict(prov)}




def save_checkpoint(net: FinetuneNet, path: str | os.PathLike, meta: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None,
                    sidecar: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write ``net``'s checkpoint then its sidecar
    (:func:`neopain.features.checkpoint.write_checkpoint`); return the sidecar record."""
    return checkpoint.write_checkpoint(net.checkpoint_tensors(), path, meta, extra, sidecar)


def load_finetuned(path: str | os.PathLike, backbone_cfg: Mapping[str, Any] | None = None
                   ) -> FinetuneNet:
    """The full fine-tuned network (body + head) of a verified checkpoint."""
    tensors, meta, _ = checkpoint.read_checkpoint(path)
    cfg = dict(backbone_cfg or {})
    cfg.setdefault("base", meta["base"])
    spec, base_name, size = _spec(meta["backbone"], cfg, meta["input_size"])
    base = spec.build()
    base.load_state_dict(checkpoint.backbone_state(tensors))
    net = FinetuneNet(spec, meta["layer"], base, meta["n_classes"], 0.0, size)
    net.base_name = base_name
    net.head.load_state_dict(checkpoint.head_state(tensors))
    return net.eval()
