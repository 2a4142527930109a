"""The documentation's examples are programs, and this file runs them, so the docs cannot rot.

Every fenced ```python block of docs/*.md and README.md is a complete program: it is run in a
subprocess (cwd: a scratch directory, timeout EXAMPLE_TIMEOUT) and must exit 0.  A ```cython
block preceded by ``<!-- file: NAME.pyx -->`` is compiled first, the way
tests/test_cython_subclass.py compiles its reactor (against the installed reactio/_core.pxd),
and the page's python blocks can import it.  All python blocks are also type-checked with mypy
against reactio's stubs (skipped when mypy is not installed).

Directives, as HTML comments on their own line anywhere in a page (they apply to the page):
  <!-- requires-module: reactio.threaded -->   skip the page's examples if it cannot be imported
  <!-- requires-platform: linux -->            skip elsewhere (sys.platform prefix)
  <!-- requires-command: cc -->                skip if the program is not on PATH
Directly before one python block:
  <!-- no-run: reason -->                      type-check only (e.g. it would run forever)

    python tests/test_docs.py --extract DIR    writes the python blocks to DIR (for mypy by hand)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
EXAMPLE_TIMEOUT = 120

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_DIRECTIVE = re.compile(r"<!--\s*([\w-]+)\s*:\s*(.*?)\s*-->")


@dataclasses.dataclass
class Block:
    doc: Path
    lang: str
    line: int
    code: str
    directives: Dict[str, str]      # the directives directly before this block

    @property
    def ident(self) -> str:
        rel = self.doc.relative_to(ROOT)
        return f"{rel}:{self.line}"


@dataclasses.dataclass
class Page:
    path: Path
    blocks: List[Block]
    requires: List[tuple]           # (kind, value) page-wide directives

    def python_blocks(self) -> List[Block]:
        return [b for b in self.blocks if b.lang == "python"]

    def cython_blocks(self) -> List[Block]:
        return [b for b in self.blocks if b.lang == "cython"]


def parse(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        directives = {}
        for line in reversed(before[-3:]):
            d = _DIRECTIVE.fullmatch(line.strip())
            if not d:
                break
            directives[d.group(1)] = d.group(2)
        blocks.append(Block(path, m.group(1), text.count("\n", 0, m.start()) + 1,
                            m.group(2), directives))
    requires = [(d.group(1), d.group(2)) for d in _DIRECTIVE.finditer(text)
                if d.group(1).startswith("requires-")]
    return Page(path, blocks, requires)


PAGES = [parse(p) for p in DOC_FILES if p.exists()]
PY_BLOCKS = [b for page in PAGES for b in page.python_blocks()]


def page_of(block: Block) -> Page:
    return next(p for p in PAGES if p.path == block.doc)


def skip_reason(page: Page) -> Optional[str]:
    for kind, value in page.requires:
        if kind == "requires-module":
            try:
                found = importlib.util.find_spec(value) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return f"{page.path.name} documents {value}, which is not importable here"
        elif kind == "requires-platform":
            if not sys.platform.startswith(value):
                return f"{page.path.name} runs on {value} only"
        elif kind == "requires-command":
            if shutil.which(value) is None:
                return f"{page.path.name} needs {value!r} on PATH"
    return None


# ------------------------------------------------------------------------------ Cython blocks

_built: Dict[Path, Path] = {}


def build_cython(page: Page, tmp_root: Path) -> Path:
    """Compile the page's cython blocks into one directory; returns it (cached per page)."""
    if page.path in _built:
        return _built[page.path]
    pytest.importorskip("Cython")
    import reactio
    build = tmp_root / f"cy-{page.path.stem}"
    build.mkdir(parents=True, exist_ok=True)
    modules = []
    for b in page.cython_blocks():
        name = b.directives.get("file")
        if not name:
            continue                        # an illustrative fragment, not a module
        (build / name).write_text(b.code, encoding="utf-8")
        modules.append(name)
    pkg_root = os.path.dirname(os.path.dirname(reactio.__file__))
    (build / "setup.py").write_text(textwrap.dedent(f"""
        from setuptools import setup, Extension
        from Cython.Build import cythonize
        exts = [Extension(m[:-4], [m]) for m in {modules!r}]
        setup(ext_modules=cythonize(exts, include_path=[{pkg_root!r}], language_level=3,
                                    quiet=True))
    """))
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _built[page.path] = build
    return build


# ------------------------------------------------------------------------------ tests

def test_every_page_has_examples():
    names = {p.path.name for p in PAGES}
    for concept in ("reactor.md", "framing.md", "commands.md", "timers.md", "listeners.md",
                    "simpleio.md", "threaded.md", "cython.md", "bench.md", "asyncio.md",
                    "workers.md"):
        assert concept in names, f"docs/{concept} is missing"
        page = next(p for p in PAGES if p.path.name == concept)
        assert page.python_blocks(), f"docs/{concept} has no python example"


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[b.ident for b in PY_BLOCKS])
def test_example_runs(block: Block, tmp_path_factory):
    pytest.importorskip("reactio")
    page = page_of(block)
    reason = skip_reason(page)
    if reason:
        pytest.skip(reason)
    if "no-run" in block.directives:
        pytest.skip(f"not run: {block.directives['no-run']} (type-checked only)")
    import reactio
    cwd = tmp_path_factory.mktemp("doc")
    # the example imports the reactio this test imported (a source tree or site-packages)
    path = [os.path.dirname(os.path.dirname(os.path.abspath(reactio.__file__)))]
    if any(b.directives.get("file") for b in page.cython_blocks()):
        cwd = build_cython(page, tmp_path_factory.getbasetemp())
        path.insert(0, str(cwd))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]]
                                                if env.get("PYTHONPATH") else []))
    script = cwd / f"example_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.ident} did not finish within {EXAMPLE_TIMEOUT} s; output:\n"
                    f"{exc.stdout!r}\n{exc.stderr!r}")
    print(proc.stdout)
    assert proc.returncode == 0, (f"{block.ident} exited {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")


def extract(dest: Path, blocks: Optional[List[Block]] = None) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for b in PY_BLOCKS if blocks is None else blocks:
        stem = re.sub(r"\W", "_", f"{b.doc.stem}_{b.line}")
        f = dest / f"doc_{stem}.py"
        f.write_text(b.code, encoding="utf-8")
        files.append(f)
    return files


README = ROOT / "README.md"
@pytest.mark.parametrize("which", ["docs", "README.md"])
def test_examples_typecheck_with_mypy(which: str, tmp_path):
    pytest.importorskip("mypy")
    blocks = [b for b in PY_BLOCKS if (b.doc == README) == (which == "README.md")]
    if not blocks:
        pytest.skip(f"no python blocks in {which}")
    files = extract(tmp_path / "examples", blocks)
    cy_modules = sorted({b.directives["file"][:-4] for p in PAGES for b in p.cython_blocks()
                         if b.directives.get("file")})
    config = tmp_path / "mypy.ini"
    # reactio's own modules are type-checked elsewhere (stubtest, mypy on the package): an
    # error inside them is not the examples' fault, while their types still apply
    config.write_text(
        "[mypy]\ncheck_untyped_defs = True\nwarn_unused_ignores = True\n"
        "strict_equality = True\n[mypy-reactio.*]\nignore_errors = True\n"
        # optional dependencies an example may use where installed (the docs say so)
        "[mypy-uvloop,trustme]\nignore_missing_imports = True\n"
        + (f"[mypy-{','.join(cy_modules)}]\nignore_missing_imports = True\n"
           if cy_modules else ""))
    import reactio
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(reactio.__file__)))
    if "site-packages" not in pkg_root and "dist-packages" not in pkg_root:
        env["MYPYPATH"] = pkg_root          # a source tree: mypy does not read PYTHONPATH
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(tmp_path / "cache"), *[str(f) for f in files]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    for f, b in zip(files, blocks):         # name errors by page and line
        out = out.replace(str(f), b.ident).replace(f.name, b.ident)
    print(out)
    assert proc.returncode == 0, out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--extract":
        for f in extract(Path(sys.argv[2])):
            print(f)
    else:
        print(__doc__)
        sys.exit(2)
