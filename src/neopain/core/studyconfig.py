"""Study-level configuration checks run by ``workflow/rules/common.smk`` before any job.

* :func:`coerce_strings`: ``snakemake --config key='{a: true, k: [5, 10]}'`` parses nested
  values with YAML's base loader, so every scalar inside arrives as a string; where the
  schema wants a boolean, number or null (and no string) the string is read as YAML.
* :func:`select_run`: the ``run`` section chooses which of the defined ``protocols`` and
  ``extract.backbones`` a run uses.  ``--configfile`` overlays deep-merge into
  ``config.yaml`` and cannot delete a key, so a study overlay that defines its own
  protocol lists it in ``run.protocols`` to leave the default ``holdout`` out.
* :func:`check_backbones`: every backbone and layer name is known (the registry's taps,
  plus ``taps`` added in the config), so a typo stops the run before tracking starts.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

__all__ = ["ConfigError", "check_backbones", "coerce_strings", "select_run"]

_PY_TYPES = {"boolean": bool, "integer": int, "number": (int, float), "null": type(None),
             "array": list, "object": dict}


class ConfigError(ValueError):
    """A configuration value that cannot be run, named by its key path."""


def _types(schema: Mapping) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def coerce_strings(value: Any, schema: Mapping, where: str = "config") -> Any:
    """``value`` with strings converted where ``schema`` does not allow a string."""
    if not isinstance(schema, Mapping):
        return value
    alts = [schema] + [s for key in ("oneOf", "anyOf") for s in schema.get(key, [])]
    if isinstance(value, str):
        types = [t for s in alts for t in _types(s)]
        if not types or any("string" in _types(s) and value in s.get("enum", [value])
                            for s in alts):
            return value  # a string is allowed here (e.g. threshold: youden)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        ok = any(isinstance(parsed, _PY_TYPES[t]) and not (t in ("integer", "number")
                 and isinstance(parsed, bool)) for t in types if t in _PY_TYPES)
        return coerce_strings(parsed, schema, where) if ok else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = None
            for s in alts:
                sub = (s.get("properties") or {}).get(k)
                if sub is None and isinstance(s.get("additionalProperties"), Mapping):
                    sub = s["additionalProperties"]
                if sub is not None:
                    break
            out[k] = coerce_strings(v, sub or {}, f"{where}.{k}")
        return out
    if isinstance(value, list):
        item = next((s["items"] for s in alts if isinstance(s.get("items"), Mapping)), {})
        return [coerce_strings(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def select_run(config: Mapping) -> tuple[dict, dict]:
    """``(backbones, protocols)`` of this run: those named in ``run.backbones`` /
    ``run.protocols`` (in that order), or every defined one when the list is absent."""
    run = config.get("run") or {}
    defined = {"backbones": dict(config["extract"]["backbones"]),
               "protocols": dict(config["protocols"])}
    where = {"backbones": "extract.backbones", "protocols": "protocols"}
    chosen = {}
    for key, items in defined.items():
        names = run.get(key)
        if names is None:
            chosen[key] = items
            continue
        unknown = [n for n in names if n not in items]
        if unknown:
            raise ConfigError(
                f"config: run.{key}: {', '.join(map(repr, unknown))} not defined in "
                f"{where[key]} (defined: {', '.join(items) or 'none'})")
        if not names:
            raise ConfigError(f"config: run.{key} is empty (defined: {', '.join(items)})")
        chosen[key] = {n: items[n] for n in names}
    return chosen["backbones"], chosen["protocols"]


def check_backbones(backbones: Mapping[str, Mapping]) -> None:
    """Every backbone and layer name resolves (no weights are read)."""
    from neopain.features.registry import get_spec

    for name, spec_cfg in backbones.items():
        cfg = {k: v for k, v in dict(spec_cfg or {}).items() if k != "layers"}
        try:
            spec = get_spec(name, cfg)
        except (ValueError, RuntimeError) as exc:  # unknown name, contradicting pin
            raise ConfigError(f"config: extract.backbones.{name}: {exc}") from None
        layers = list((spec_cfg or {}).get("layers") or [])
        unknown = [layer for layer in layers if layer not in spec.taps]
        if unknown:
            raise ConfigError(
                f"config: extract.backbones.{name}.layers: unknown layer(s) "
                f"{', '.join(map(repr, unknown))} (known for {name}: {', '.join(spec.taps)})")
