"""Self-contained HTML pages of result tables for the Snakemake report.

Snakemake shows an ``.html`` result inside the report (an iframe); Markdown would only be
offered as a download.  Each page here is one file with its CSS and, for long tables, a
few lines of JavaScript that sort a column on a click (no network, no external files).

Cells are written for readers, not parsers: three decimals, an estimate and its interval
in one cell (``0.812 (0.701-0.903)``), p-values as ``< 0.001``, and statistics that the
data cannot support (an interval over fewer than :data:`MIN_SUBJECTS_CI` subjects) as
``n/a (too few subjects)``.  The numbers themselves are in the Parquet tables.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from neopain.learn.metrics import MIN_SUBJECTS_CI
from neopain.report.markdown import format_p, is_p_column
TOO_FEW = "n/a (too few subjects)"
#: tables longer than this get click-to-sort headers
SORTABLE_ROWS = 12

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
margin:16px;max-width:1400px}
h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:18px 0 6px}
p.caption{margin:4px 0 10px;color:#333;max-width:75em} p.note{color:#555;font-size:12px}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f5f7;position:sticky;top:0} td.t,th.t{text-align:left}
tr.chance td{background:#fff8e1;font-style:italic} tr.flag td{background:#fdecea}
th.sort{cursor:pointer} th.sort:after{content:" \\2195";color:#999}
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function(t){
 t.querySelectorAll("th").forEach(function(th,i){th.classList.add("sort");
  th.addEventListener("click",function(){var b=t.tBodies[0],r=Array.from(b.rows),
   d=th.dataset.dir==="a"?-1:1;th.dataset.dir=d===1?"a":"d";
   r.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,
    c=y.cells[i].dataset.v||y.cells[i].textContent,na=parseFloat(a),nc=parseFloat(c);
    if(!isNaN(na)&&!isNaN(nc))return d*(na-nc);return d*a.localeCompare(c);});
   r.forEach(function(x){b.appendChild(x);});});});});
"""


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def number(v, digits: int = 3) -> str:
    """A value for a table cell."""
    if _isnan(v) or v is pd.NA:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def estimate(v, lo=None, hi=None, n_subjects=None) -> str:
    """``0.812 (0.701-0.903)``; the interval as ``n/a (too few subjects)`` when fewer
    than :data:`MIN_SUBJECTS_CI` subjects stand behind it."""
    if _isnan(v):
        return "n/a"
    if n_subjects is not None and not _isnan(n_subjects) and n_subjects < MIN_SUBJECTS_CI:
        return f"{v:.3f}, CI {TOO_FEW}"
    if _isnan(lo) or _isnan(hi):
        return f"{v:.3f}"
    return f"{v:.3f} ({lo:.3f}\u2013{hi:.3f})"


def display(df: pd.DataFrame, names: dict[str, str] | None = None) -> pd.DataFrame:
    """Fold ``m``/``m_lo``/``m_hi`` into one text column, format p-values and numbers,
    rename columns to plain words (``names``)."""
    out = pd.DataFrame(index=df.index)
    n_subj = df["n_subjects"] if "n_subjects" in df.columns else None
    for col in df.columns:
        if col.endswith(("_lo", "_hi")) and col[:-3] in df.columns:
            continue
        if f"{col}_lo" in df.columns and f"{col}_hi" in df.columns:
            out[col] = [estimate(v, lo, hi, None if n_subj is None else n_subj[i])
                        for i, v, lo, hi in zip(df.index, df[col], df[f"{col}_lo"],
                                                df[f"{col}_hi"])]
        elif is_p_column(col):
            out[col] = [format_p(v) for v in df[col]]
        else:
            out[col] = [number(v) for v in df[col]]
    return out.rename(columns=names or {})


def table(df: pd.DataFrame, caption: str = "", row_class=None, sortable: bool | None = None,
          table_id: str | None = None) -> str:
    """An HTML ``<table>`` of already formatted cells (see :func:`display`).

    ``row_class(i) -> str`` marks rows (``chance``, ``flag``); text columns are left-
    aligned; tables longer than :data:`SORTABLE_ROWS` sort on a header click."""
    if sortable is None:
        sortable = len(df) > SORTABLE_ROWS
    cls = "sortable" if sortable else ""
    text_cols = {c for c in df.columns
                 if not all(_looks_numeric(v) for v in df[c].astype(str))}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{html.escape(str(c))}</th>'
                   for c in df.columns)
    body = []
    for i, (_, r) in enumerate(df.iterrows()):
        rc = row_class(i) if row_class else ""
        cells = "".join(
            f'<td class="{"t" if c in text_cols else ""}">{html.escape(str(r[c]))}</td>'
            for c in df.columns)
        body.append(f'<tr class="{rc}">{cells}</tr>')
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    tid = f' id="{html.escape(table_id)}"' if table_id else ""
    return (f'<table class="{cls}"{tid}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _looks_numeric(s: str) -> bool:
    s = s.split(" ")[0].split(",")[0]
    if s in ("n/a", "<", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


def page(title: str, parts: list[str], heading: bool = True) -> str:
    """A complete HTML document: title (as ``<h1>`` unless ``heading`` is false), then
    ``parts`` (HTML snippets) in order."""
    h1 = f"<h1>{html.escape(title)}</h1>" if heading else ""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"{h1}{''.join(parts)}"
            f"<script>{SORT_JS}</script></body></html>\n")


def markdown_page(text: str, title: str) -> str:
    """A Markdown document (headings, paragraphs, lists, pipe tables) as a page of this
    module's style: its tables become HTML tables, sortable when longer than
    :data:`SORTABLE_ROWS`; raw HTML in the text is escaped, not passed through."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    rows = 0
    for tok in tokens:                      # count body rows per table, mark long ones
        if tok.type == "table_open":
            opening, rows = tok, 0
        elif tok.type == "tr_open":
            rows += 1
        elif tok.type == "table_close" and rows - 1 > SORTABLE_ROWS:
            opening.attrSet("class", "sortable")
    body = md.renderer.render(tokens, md.options, {})
    return page(title, [body], heading=not text.lstrip().startswith("# "))


def write_markdown_page(md_path, html_path, title: str) -> None:
    """:func:`markdown_page` of the file ``md_path``, written atomically to ``html_path``."""
    from pathlib import Path

    from neopain.core.provenance import write_text

    write_text(markdown_page(Path(md_path).read_text(), title), html_path)


def caption(text: str, cls: str = "caption") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'
