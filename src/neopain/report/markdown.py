"""Result tables as Markdown: p-values for people, estimates with their CIs.

:func:`to_markdown` writes a table with a title and notes; :func:`with_ci_columns` folds
``m``, ``m_lo``, ``m_hi`` into one ``m (95% CI)`` cell; :func:`format_p` prints
p-values (``< 0.001``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def fmt_cell(x) -> str:
    if isinstance(x, (float, np.floating)):
        return "n/a" if np.isnan(x) else f"{x:.4f}"
    return str(x)


def is_p_column(name: str) -> bool:
    """``p`` and ``p_...`` columns hold p-values."""
    return name == "p" or str(name).startswith("p_")


def format_p(p) -> str:
    """A p-value for people: ``< 0.001`` below one in a thousand, else three decimals."""
    if p is None or (isinstance(p, (float, np.floating)) and np.isnan(p)):
        return "n/a"
    try:
        p = float(p)
    except (TypeError, ValueError):  # a text cell in a p column ("", "n/a")
        return str(p) or "n/a"
    return "n/a" if np.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def with_ci_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Fold ``m``, ``m_lo``, ``m_hi`` into one display column ``m (95% CI)``."""
    out = df.copy()
    for col in list(df.columns):
        if f"{col}_lo" in df.columns and f"{col}_hi" in df.columns:
            out[col] = [
                fmt_cell(v) if pd.isna(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                for v, lo, hi in zip(df[col], df[f"{col}_lo"], df[f"{col}_hi"])]
            out = out.drop(columns=[f"{col}_lo", f"{col}_hi"])
    return out


def to_markdown(df: pd.DataFrame, title: str, notes: list[str] | None = None) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", ""]
    for note in notes or []:
        lines.append(f"> {note}")
    if notes:
        lines.append("")
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(format_p(r[c]) if is_p_column(c) else fmt_cell(r[c])
                                       for c in cols) + " |")
    return "\n".join(lines) + "\n"
