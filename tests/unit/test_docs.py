"""The docs cannot rot when code moves.

Every ``neopain.x.y`` dotted name in README.md and docs/*.md must name a module of
src/neopain (a file or a package), and, when it goes on past the module, a name that
module defines at top level (or a class's member); the only other dotted names allowed
are the Parquet/safetensors metadata keys the code writes (string literals in src/ and
scripts/, e.g. ``neopain.provenance``). Every repository path (``src/...``, ``scripts/...``,
``bench/...``, ``tests/...``, ``workflow/...``, ...) and every relative Markdown link
must exist. The README stays a front door: under 150 lines.

Names are resolved from the source files (``ast``), so nothing heavy is imported, and
the test fails once, listing every broken reference.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

from _paths import REPO

SRC = REPO / "src"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# `neopain.learn.select.ReliefF`; not `model.neopain` or `results/x.neopain`
DOTTED = re.compile(r"(?<![\w./-])neopain(?:\.[A-Za-z_]\w*)+")
# repository paths; placeholders (`{video}`) and globs end a match before them
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:src|scripts|bench|tests|workflow|profiles|envs|docs|samples|\.ci)"
    r"/[\w./-]*\w)")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# the metadata keys the code writes: `neopain.provenance`, `neopain.backbone`, ...
KEY_LITERAL = re.compile(r"""b?["'](neopain(?:\.[A-Za-z_]\w*)+)["']""")


@lru_cache(maxsize=None)
def metadata_keys() -> frozenset[str]:
    keys = set()
    for py in [*(SRC / "neopain").rglob("*.py"), *(REPO / "scripts").glob("*.py")]:
        keys.update(KEY_LITERAL.findall(py.read_text()))
    return frozenset(keys)


def module_file(dotted: str) -> Path | None:
    base = SRC.joinpath(*dotted.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a module or class body binds at its top level (``if``/``try`` included)."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                out[(a.asname or a.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            inner = list(node.body) + list(getattr(node, "orelse", []))
            inner += list(getattr(node, "finalbody", []))
            for h in getattr(node, "handlers", []):
                inner += h.body
            out.update(_names(inner))
    return out


@lru_cache(maxsize=None)
def _module_names(path: Path) -> dict[str, ast.AST]:
    return _names(ast.parse(path.read_text()).body)


def broken_dotted(name: str) -> str | None:
    """Why ``name`` does not resolve, or None."""
    if name in metadata_keys():
        return None
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        f = module_file(".".join(parts[:i]))
        if f is None:
            continue
        if i == 1:
            break                    # `neopain.x` with no module x: moved or renamed
        scope, rest = _module_names(f), parts[i:]
        for j, attr in enumerate(rest):
            node = scope.get(attr)
            if node is None:
                return f"{'.'.join(parts[:i + j])} has no attribute {attr!r}"
            if not isinstance(node, ast.ClassDef):
                return None          # a function, constant or import: stop there
            scope = _names(node.body)
        return None
    return "no such module"


def references():
    """(page, line number, kind, reference) for every checked reference."""
    for page in PAGES:
        for no, line in enumerate(page.read_text().splitlines(), 1):
            for m in DOTTED.finditer(line):
                yield page, no, "name", m.group(0)
            for m in REPO_PATH.finditer(line):
                yield page, no, "path", m.group(1)
            for m in LINK.finditer(line):
                if not re.match(r"[a-z]+:", m.group(1)):
                    yield page, no, "link", m.group(1)


def test_every_name_path_and_link_in_the_docs_exists():
    broken, n = [], 0
    for page, no, kind, ref in references():
        n += 1
        where = f"{page.relative_to(REPO)}:{no}: {ref}"
        if kind == "name":
            why = broken_dotted(ref)
            if why:
                broken.append(f"{where} ({why})")
        elif kind == "path":
            if not (REPO / ref.rstrip(".")).exists():
                broken.append(f"{where} (no such file or folder)")
        elif not (page.parent / ref).exists():
            broken.append(f"{where} (link target missing)")
    assert n > 50, f"only {n} references found: is the pattern still right?"
    assert not broken, f"{len(broken)} broken references:\n" + "\n".join(broken)


def test_the_checker_catches_rot():
    """Known answers: a moved module, a missing attribute, a metadata key, a class member."""
    assert broken_dotted("neopain.learn.select") is None
    assert broken_dotted("neopain.core.provenance.atomic_path") is None
    assert broken_dotted("neopain.provenance") is None          # metadata key, not a module
    assert broken_dotted("neopain.select") == "no such module"  # the pre-subpackage name
    assert "no attribute" in broken_dotted("neopain.core.provenance.no_such_function")
    assert DOTTED.findall("results/export/model.neopain and `neopain.learn`") == [
        "neopain.learn"]
    assert REPO_PATH.findall("see `results/features/{b}` and workflow/rules/{x}.smk, "
                             "tests/test_docs.py::test_x") == ["workflow/rules",
                                                               "tests/test_docs.py"]


def test_readme_is_a_front_door():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n < 150, f"README.md has {n} lines: move method detail to docs/"
