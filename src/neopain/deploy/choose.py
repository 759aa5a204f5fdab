"""Which frame-level configuration to export: the best of Table 5 or a named one.

``export.configuration: best`` takes the Table 5 row with the highest frame accuracy
(ties frame AUC, then name order) over every backbone x layer x protocol, or within
``export.protocol``: chosen on test results, so labelled optimistic. A named
configuration (backbone, layer, protocol, selector, k, classifier) is checked against
the study's config. ``nested`` is chosen by :mod:`neopain.deploy.videoexport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd


@dataclass(frozen=True)
class Configuration:
    backbone: str
    layer: str
    protocol: str
    selector: str
    k: int
    classifier: str

    def label(self) -> str:
        return (f"{self.backbone}/{self.layer} {self.selector}({self.k}) {self.classifier} "
                f"[{self.protocol}]")


def choose_configuration(table5: pd.DataFrame, protocol: str | None = None) -> Configuration:
    """The best Table 5 row: highest frame accuracy, then frame AUC, then name order."""
    t = table5.copy()
    if protocol is not None:
        t = t[t["protocol"] == protocol]
        if t.empty:
            raise ValueError(f"export.protocol {protocol!r}: no Table 5 row for it "
                             f"(protocols: {sorted(set(table5['protocol']))})")
    if t.empty:
        raise ValueError("Table 5 is empty: nothing to export")
    t["_acc"] = t["frame_accuracy"].fillna(-1)
    t["_auc"] = t["frame_auc"].fillna(-1)
    t = t.sort_values(["_acc", "_auc", "backbone", "layer", "protocol", "selector",
                       "classifier"], ascending=[False, False, True, True, True, True, True])
    r = t.iloc[0]
    return Configuration(str(r["backbone"]), str(r["layer"]), str(r["protocol"]),
                         str(r["selector"]), int(r["k"]), str(r["classifier"]))


def study_configuration(study: Mapping[str, Any], table5: pd.DataFrame | None
                        ) -> tuple[Configuration, str]:
    """The paper-path configuration to export and how it was chosen
    (``export.configuration``: ``best`` or a mapping backbone, layer, protocol, selector,
    k, classifier)."""
    exp = dict(study.get("export") or {})
    named = exp.get("configuration", "nested")
    if named == "nested":
        raise ValueError("export.configuration nested: exported by "
                         "neopain.deploy.videoexport.export_nested_study, not from Table 5")
    if named in (None, "best"):
        cfg = choose_configuration(table5, exp.get("protocol"))
        how = ("best Table 5 row (highest frame-level test accuracy, ties frame AUC"
               + (f", protocol {exp['protocol']}" if exp.get("protocol") else "")
               + "); chosen on test results as the paper does: optimistic")
        return cfg, how
    need = ["backbone", "layer", "protocol", "selector", "k", "classifier"]
    missing = [k for k in need if k not in named]
    if missing:
        raise ValueError(f"export.configuration: missing {', '.join(missing)} (or use 'best')")
    cfg = Configuration(str(named["backbone"]), str(named["layer"]), str(named["protocol"]),
                        str(named["selector"]), int(named["k"]), str(named["classifier"]))
    backbones = (study.get("extract") or {}).get("backbones") or {}
    checks = [
        (cfg.backbone in backbones, f"backbone {cfg.backbone!r} is not in extract.backbones"),
        (cfg.layer in (backbones.get(cfg.backbone) or {}).get("layers", []),
         f"layer {cfg.layer!r} is not extracted for {cfg.backbone!r}"),
        (cfg.protocol in (study.get("protocols") or {}), f"protocol {cfg.protocol!r} unknown"),
        (cfg.selector in (study.get("select") or {}).get("selectors", {}),
         f"selector {cfg.selector!r} is not in select.selectors"),
        (cfg.k in (study.get("select") or {}).get("k", []), f"k={cfg.k} is not in select.k"),
        (cfg.classifier in (study.get("classify") or {}).get("classifiers", {}),
         f"classifier {cfg.classifier!r} is not in classify.classifiers"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"export.configuration: {msg}")
    return cfg, "named in export.configuration"

