"""MatConvNet "simplenn" networks in PyTorch: the VGG-F/M/S (Chatfield et al. 2014) and
VGG-Face (Parkhi et al. 2015) architectures, and the importer of the official
``imagenet-vgg-f.mat`` / ``-m`` / ``-s`` and ``vgg-face.mat`` files.

The simplenn layout (a MATLAB v5 ``.mat`` read with :func:`scipy.io.loadmat`):

* ``layers``: cell array of structs with ``type`` (``conv``, ``relu``, ``lrn`` (older files:
  ``normalize``), ``pool``, ``softmax``, ``dropout``) and ``name``; ``conv`` layers have
  ``weights`` = {filters H x W x Cin x Cout, biases Cout} (older files: fields ``filters``
  and ``biases``), ``stride`` [sy sx] and ``pad`` [top bottom left right]; ``pool`` layers
  have ``method`` (``max``), ``pool`` [h w], ``stride``, ``pad``; ``lrn`` layers have
  ``param`` = [N kappa alpha beta], computing ``x / (kappa + alpha * sum_N x^2)^beta``
  (alpha is *not* divided by N, so it equals ``nn.LocalResponseNorm(N, alpha * N, beta,
  kappa)``).  Fully connected layers are convolutions whose filters cover the whole input.
* ``meta.normalization`` (older files: top-level ``normalization``): ``averageImage``
  (H x W x 3 or 3 values, subtracted from the 0-255 RGB input) and ``imageSize``.
  The file may also hold the whole struct in one variable ``net``.

MatConvNet computes correlations on H x W x C arrays, rounds output sizes down, and
ignores padded cells in max pooling; :class:`SimpleNN` does the same (explicit zero / -inf
padding modules where the padding is asymmetric).  Module names are the paper's layer
names (``conv5``, ``relu5``, ``fc7``, ``relu7``, ...; VGG-Face's ``conv5_3`` is module
``conv5x3``), so taps are ``body.fc7`` etc.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# --- architectures: simplenn layer lists without weights -------------------------------
# conv: size = (kh, kw, cin, cout); stride = (sy, sx); pad = (top, bottom, left, right)


def _conv(name, kh, kw, cin, cout, stride=1, pad=0):
    return {"type": "conv", "name": name, "size": (kh, kw, cin, cout),
            "stride": _two(stride), "pad": _four(pad)}


def _relu(name):
    return {"type": "relu", "name": name}


def _lrn(name, param=(5, 2.0, 1e-4, 0.75)):
    # Caffe's VGG_CNN_* nets: local_size 5, k 2, alpha 5e-4 (= 1e-4 per channel), beta 0.75;
    # a real .mat's own values replace these when it is loaded.
    return {"type": "lrn", "name": name, "param": tuple(float(p) for p in param)}


def _pool(name, size, stride, pad=0):
    return {"type": "pool", "name": name, "method": "max", "pool": _two(size),
            "stride": _two(stride), "pad": _four(pad)}


def _two(v):
    v = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _four(v):
    v = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
    if v.size == 1:
        return (int(v[0]),) * 4
    if v.size == 4:
        return tuple(int(x) for x in v)
    raise ValueError(f"pad must have 1 or 4 values, got {v.tolist()}")


def _chatfield(conv1, pool1, conv2, pool2, c345, pool5, lrn2=True, n_classes=1000):
    """conv1..fc8 of the CNN-F/M/S family (Chatfield et al. 2014, Table 1)."""
    L = [conv1, _relu("relu1"), _lrn("norm1"), pool1, conv2, _relu("relu2")]
    if lrn2:
        L.append(_lrn("norm2"))
    L += [pool2, _conv("conv3", 3, 3, conv2["size"][3], c345, pad=1), _relu("relu3"),
          _conv("conv4", 3, 3, c345, c345, pad=1), _relu("relu4"),
          _conv("conv5", 3, 3, c345, c345, pad=1), _relu("relu5"), pool5,
          _conv("fc6", 6, 6, c345, 4096), _relu("relu6"),
          _conv("fc7", 1, 1, 4096, 4096), _relu("relu7"),
          _conv("fc8", 1, 1, 4096, n_classes), {"type": "softmax", "name": "prob"}]
    return L


# Output sizes at 224 x 224 (MatConvNet rounds down; the pads emulate Caffe's ceil):
# VGG-F conv1 54 -> pool1 27 -> conv2 27 -> pool2 13 -> conv5 13 (256x13x13 = 43,264) -> 6
VGG_F = _chatfield(_conv("conv1", 11, 11, 3, 64, stride=4), _pool("pool1", 3, 2, (0, 1, 0, 1)),
                   _conv("conv2", 5, 5, 64, 256, pad=2), _pool("pool2", 3, 2, (0, 1, 0, 1)),
                   256, _pool("pool5", 3, 2, (0, 1, 0, 1)))
# VGG-M conv1 109 -> 54 -> conv2 (stride 2) 26 -> 13 -> conv5 512x13x13 = 86,528 -> 6
VGG_M = _chatfield(_conv("conv1", 7, 7, 3, 96, stride=2), _pool("pool1", 3, 2, (0, 1, 0, 1)),
                   _conv("conv2", 5, 5, 96, 256, stride=2, pad=1),
                   _pool("pool2", 3, 2, (0, 1, 0, 1)), 512, _pool("pool5", 3, 2, (0, 1, 0, 1)))
# VGG-S conv1 109 -> pool1 (x3) 37 -> conv2 35 -> 17 -> conv5 512x17x17 = 147,968 -> pool5 6
VGG_S = _chatfield(_conv("conv1", 7, 7, 3, 96, stride=2), _pool("pool1", 3, 3, (0, 2, 0, 2)),
                   _conv("conv2", 5, 5, 96, 256, pad=1), _pool("pool2", 3, 2, (0, 1, 0, 1)),
                   512, _pool("pool5", 3, 3, (0, 1, 0, 1)), lrn2=False)


def _vgg_face(n_classes=2622):
    L, cin = [], 3
    for block, (n, cout) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, n + 1):
            L += [_conv(f"conv{block}_{i}", 3, 3, cin, cout, pad=1), _relu(f"relu{block}_{i}")]
            cin = cout
        L.append(_pool(f"pool{block}", 2, 2))
    L += [_conv("fc6", 7, 7, 512, 4096), _relu("relu6"), _conv("fc7", 1, 1, 4096, 4096),
          _relu("relu7"), _conv("fc8", 1, 1, 4096, n_classes), {"type": "softmax", "name": "prob"}]
    return L


VGG_FACE = _vgg_face()   # conv5_3 512x14x14 = 100,352

ARCHITECTURES = {"vgg_f": VGG_F, "vgg_m": VGG_M, "vgg_s": VGG_S, "vgg_face": VGG_FACE}
# random-initialisation defaults; a loaded file brings its own normalisation
DEFAULT_AVERAGE = {"vgg_f": (123.675, 116.28, 103.53), "vgg_m": (123.675, 116.28, 103.53),
                   "vgg_s": (123.675, 116.28, 103.53), "vgg_face": (129.1863, 104.7624, 93.5940)}


# --- the PyTorch network ------------------------------------------------------------------


class SimpleNN(nn.Module):
    """A simplenn network: input N x 3 x H x W RGB in [0, 255]; ``average_image`` (1 x 3 x
    1 x 1 or 1 x 3 x H x W) is subtracted, then the layers run in order."""

    def __init__(self, layers: list[dict], average_image=(0.0, 0.0, 0.0)):
        super().__init__()
        self.layer_specs = [_geometry(layer) for layer in layers]
        avg = np.asarray(average_image, dtype=np.float32)
        self.register_buffer("average_image", _avg_to_tensor(avg))
        mods: "OrderedDict[str, nn.Module]" = OrderedDict()
        channels = None
        for layer in layers:
            t, name = layer["type"], _modname(layer["name"])
            if t == "conv":
                kh, kw, cin, cout = layer["size"]
                top, bottom, left, right = layer["pad"]
                groups = 1
                if channels is not None and channels != cin:
                    if channels % cin:
                        raise ValueError(f"layer {name}: {channels} input channels, filters "
                                         f"for {cin}")
                    groups = channels // cin
                if (top, left) != (bottom, right):
                    mods[name + "_pad"] = nn.ZeroPad2d((left, right, top, bottom))
                    padding = 0
                else:
                    padding = (top, left)
                mods[name] = nn.Conv2d(cin * groups, cout, (kh, kw), stride=layer["stride"],
                                       padding=padding, groups=groups)
                channels = cout
            elif t == "relu":
                mods[name] = nn.ReLU(inplace=False)
            elif t == "lrn":
                n, kappa, alpha, beta = layer["param"]
                mods[name] = nn.LocalResponseNorm(int(n), alpha=alpha * n, beta=beta, k=kappa)
            elif t == "pool":
                if layer["method"] != "max":
                    raise NotImplementedError(f"layer {name}: pooling method "
                                              f"{layer['method']!r} (only max is supported)")
                top, bottom, left, right = layer["pad"]
                if any(layer["pad"]):
                    mods[name + "_pad"] = nn.ConstantPad2d((left, right, top, bottom),
                                                           float("-inf"))
                mods[name] = nn.MaxPool2d(layer["pool"], stride=layer["stride"])
            elif t == "softmax":
                mods[name] = nn.Softmax(dim=1)
            elif t == "dropout":
                mods[name] = nn.Identity()
            else:
                raise NotImplementedError(f"layer {name}: MatConvNet layer type {t!r}")
        self.body = nn.Sequential(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - self.average_image)


def _modname(name: str) -> str:
    """A module name for a MatConvNet layer name.  A trailing ``_<digits>`` becomes
    ``x<digits>`` (``conv5_3`` -> ``conv5x3``): torchvision's feature extractor reads such a
    suffix as a repeated call of one module and would misname the nodes."""
    import re

    out = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))
    out = re.sub(r"_(\d+)$", r"x\1", out)
    return out if out and not out[0].isdigit() else "l" + out


def _avg_to_tensor(avg: np.ndarray) -> torch.Tensor:
    if avg.ndim == 3:                               # H x W x 3
        if avg.shape[0] == 1 and avg.shape[1] == 1:
            avg = avg.reshape(3)
        else:
            return torch.from_numpy(np.ascontiguousarray(avg.transpose(2, 0, 1))[None].copy())
    return torch.from_numpy(avg.reshape(1, 3, 1, 1).copy())


def _geometry(layer: dict) -> dict:
    """What fixes a layer's output shape (compared between a file and an architecture)."""
    keys = {"conv": ("size", "stride", "pad"), "pool": ("method", "pool", "stride", "pad")}
    return {"type": layer["type"], **{k: tuple(layer[k]) if isinstance(layer[k], (list, tuple))
                                      else layer[k] for k in keys.get(layer["type"], ())}}


def build(arch: str | list[dict], average_image=None) -> SimpleNN:
    layers = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    if average_image is None:
        average_image = DEFAULT_AVERAGE.get(arch, (0.0, 0.0, 0.0)) \
            if isinstance(arch, str) else (0.0, 0.0, 0.0)
    return SimpleNN(copy.deepcopy(layers), average_image)


# --- reading and writing .mat files -------------------------------------------------------


def _un(x):
    """Unwrap the 1 x 1 object arrays loadmat(squeeze_me=False) puts around everything."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.ravel()[0]
    return x


def _field(obj, name, default=None):
    obj = _un(obj)
    if isinstance(obj, dict):
        val = obj.get(name, default)
    elif name in (getattr(obj, "_fieldnames", None) or ()):
        val = getattr(obj, name)
    else:
        return default
    return _un(val)


def _str(x) -> str:
    x = _un(x)
    if isinstance(x, np.ndarray):
        return "".join(str(c) for c in x.ravel())
    return str(x)


def _num(x) -> np.ndarray:
    return np.asarray(_un(x), dtype=float).ravel()


def _cells(x) -> list:
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_un(c) for c in x.ravel()]
    return [x]


def read_simplenn(path: str | Path) -> tuple[list[dict], dict[str, Any]]:
    """Layers (with ``weights`` = (filters, biases) as float32 arrays) and normalisation of a
    MatConvNet simplenn ``.mat``."""
    import scipy.io

    try:
        # squeeze_me=False: squeezing would drop the 1 x 1 of fully connected filters
        mat = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False)
    except NotImplementedError as exc:   # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: {exc}; re-save it in MATLAB with save(..., '-v7') "
                         f"or use the v5 file from the MatConvNet site") from exc
    net = _un(mat["net"]) if "net" in mat else mat
    raw_layers = net.get("layers") if isinstance(net, dict) else _field(net, "layers")
    if raw_layers is None:
        raise ValueError(f"{path}: no 'layers' (not a MatConvNet simplenn file; DagNN files "
                         f"are not supported)")
    layers = []
    for i, raw in enumerate(_cells(raw_layers)):
        t = _str(_field(raw, "type"))
        name = _str(_field(raw, "name", f"layer{i + 1}"))
        if t == "normalize":
            t = "lrn"
        layer: dict[str, Any] = {"type": t, "name": name}
        if t == "conv":
            w = _field(raw, "weights")
            if isinstance(w, np.ndarray) and w.dtype == object and w.size == 2:
                filters, biases = _cells(w)
            else:
                filters, biases = _field(raw, "filters"), _field(raw, "biases")
            filters = np.asarray(_un(filters), dtype=np.float32)
            while filters.ndim < 4:       # MATLAB drops trailing singleton dims
                filters = filters[..., None]
            biases = np.asarray(_un(biases), dtype=np.float32).ravel()
            layer.update(size=tuple(int(s) for s in filters.shape),
                         stride=_two(_field(raw, "stride", 1)), pad=_four(_field(raw, "pad", 0)),
                         weights=(filters, biases))
        elif t == "pool":
            layer.update(method=_str(_field(raw, "method", "max")),
                         pool=_two(_field(raw, "pool")), stride=_two(_field(raw, "stride", 1)),
                         pad=_four(_field(raw, "pad", 0)))
        elif t == "lrn":
            layer["param"] = tuple(float(p) for p in _num(_field(raw, "param")))
        layers.append(layer)
    meta = net.get("meta") if isinstance(net, dict) else _field(net, "meta")
    norm = _field(meta, "normalization") if meta is not None else None
    if norm is None:
        norm = net.get("normalization") if isinstance(net, dict) else _field(net, "normalization")
    normalization: dict[str, Any] = {}
    if norm is not None:
        avg = _field(norm, "averageImage")
        if avg is not None:
            avg = np.asarray(avg, dtype=np.float32)
            normalization["averageImage"] = avg if avg.ndim == 3 and avg.size > 3 \
                else avg.ravel()
        size = _field(norm, "imageSize")
        if size is not None:
            normalization["imageSize"] = tuple(int(v) for v in _num(size))
    return layers, normalization


def write_simplenn(path: str | Path, layers: list[dict], normalization: dict[str, Any],
                   legacy: bool = False) -> None:
    """Write a simplenn ``.mat`` (MATLAB v5) in MatConvNet's layout (``legacy``: the older
    layout with ``filters``/``biases`` fields and a top-level ``normalization``)."""
    import scipy.io

    cells = np.empty((1, len(layers)), dtype=object)
    for i, layer in enumerate(layers):
        s: dict[str, Any] = {"type": layer["type"], "name": layer["name"]}
        if layer["type"] == "lrn" and legacy:
            s["type"] = "normalize"
        if layer["type"] == "conv":
            filters, biases = layer["weights"]
            if legacy:
                s["filters"], s["biases"] = filters, biases.reshape(1, -1)
            else:
                w = np.empty((1, 2), dtype=object)
                w[0, 0], w[0, 1] = filters, biases.reshape(1, -1)
                s["weights"] = w
            s["stride"] = np.asarray(layer["stride"], float)
            s["pad"] = np.asarray(layer["pad"], float)
        elif layer["type"] == "pool":
            s.update(method=layer["method"], pool=np.asarray(layer["pool"], float),
                     stride=np.asarray(layer["stride"], float),
                     pad=np.asarray(layer["pad"], float))
        elif layer["type"] == "lrn":
            s["param"] = np.asarray(layer["param"], float)
        cells[0, i] = s
    norm = {k: np.asarray(v, float) for k, v in normalization.items()}
    if legacy:
        content = {"layers": cells, "normalization": norm}
    else:
        content = {"layers": cells, "meta": {"normalization": norm}}
    scipy.io.savemat(str(path), content, do_compression=False)


def state_dict_from_layers(net: SimpleNN, layers: list[dict],
                           normalization: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of ``net`` holding the arrays of ``layers`` (read from a file)."""
    state = {}
    for layer in layers:
        if layer["type"] != "conv":
            continue
        filters, biases = layer["weights"]
        name = _modname(layer["name"])
        state[f"body.{name}.weight"] = torch.from_numpy(
            np.ascontiguousarray(filters.transpose(3, 2, 0, 1)))
        state[f"body.{name}.bias"] = torch.from_numpy(biases.copy())
    if "averageImage" in normalization:
        state["average_image"] = _avg_to_tensor(normalization["averageImage"])
    else:
        state["average_image"] = net.average_image.clone()
    return state


def load_mat(arch: str, path: str | Path) -> SimpleNN:
    """Build architecture ``arch`` with the weights of the MatConvNet file ``path``.

    The file's layers must have the architecture's types and geometry (kernel sizes,
    strides, pads, pooling), in order; dropout layers are ignored.  Their names are mapped
    positionally onto the paper's names used for the taps.  LRN parameters and the
    average image come from the file."""
    layers, normalization = read_simplenn(path)
    layers = [dict(layer) for layer in layers if layer["type"] != "dropout"]
    want = ARCHITECTURES[arch]
    if len(layers) != len(want):
        raise ValueError(f"{path}: {len(layers)} layers, architecture {arch!r} has "
                         f"{len(want)} ({[w['name'] for w in want]})")
    for got, exp in zip(layers, want):
        g, e = _geometry(got), _geometry(exp)
        if g != e:
            raise ValueError(f"{path}: layer {got['name']!r} is {g}, architecture {arch!r} "
                             f"expects {exp['name']!r} = {e}: wrong file for {arch!r}?")
        got["name"] = exp["name"]
    size = normalization.get("imageSize")
    if size and tuple(size[:2]) != (224, 224):
        raise ValueError(f"{path}: imageSize {size}, expected 224 x 224")
    avg = normalization.get("averageImage", DEFAULT_AVERAGE[arch])
    avg = np.asarray(avg, np.float32)
    if avg.ndim == 3 and avg.shape[:2] not in ((1, 1), (224, 224)):
        avg = avg.reshape(-1, 3).mean(0)
    net = SimpleNN(layers, avg)
    net.load_state_dict(state_dict_from_layers(net, layers, {"averageImage": avg}))
    return net
