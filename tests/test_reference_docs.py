"""docs/reference.md covers the public API, and only the public API.

Every name of ``reactio.__all__`` and every public member of its classes (the non-underscore
names of ``vars(cls)``, as tests/test_stubs.py enumerates them, plus the classes of the
compiled module that test enumerates) must be the first code span of a table row of
docs/reference.md -- ``Name`` or ``Name.member``, optionally followed by a signature.  A row
that names something reactio does not have fails, and so does a row whose link to the page
that explains it points at a missing page or heading.
"""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import reactio
from test_stubs import PKG_DIR, public_core_names, stub_members

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def reference_rows() -> List[Tuple[int, str, List[str]]]:
    """(line number, documented name, links) of every table row of reference.md."""
    rows = []
    for lineno, line in enumerate(REFERENCE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|") or re.match(r"^\|\s*-", line):
            continue
        cells = [c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]]
        if not cells or cells[0] == "name":
            continue                                    # a header row
        span = _CODE_SPAN.match(cells[0])
        assert span, f"reference.md:{lineno}: the first cell must start with `Name`: {line}"
        name = _NAME.match(span.group(1))
        assert name, f"reference.md:{lineno}: no name in {span.group(0)}"
        rows.append((lineno, name.group(0), _LINK.findall(line)))
    return rows


def public_classes() -> Dict[str, type]:
    """The public classes under the name they are documented by (an alias such as
    SimpleIoRuntime is documented as a name only; its members under ReactRuntime)."""
    classes = {}
    for name in reactio.__all__:
        obj = getattr(reactio, name)
        if inspect.isclass(obj) and obj.__name__ == name:
            classes[name] = obj
    for name, obj in public_core_names():
        if inspect.isclass(obj):
            classes.setdefault(name, obj)
    return classes


def public_members(cls: type) -> Set[str]:
    return {m for m in vars(cls) if not m.startswith("_")}


def expected_names() -> Set[str]:
    names = set(reactio.__all__)
    for cname, cls in public_classes().items():
        names.add(cname)
        names.update(f"{cname}.{m}" for m in public_members(cls))
    return names


STUBS = {**stub_members(os.path.join(PKG_DIR, "listener.pyi")),
         **{k: v for k, v in stub_members(os.path.join(PKG_DIR, "_core.pyi")).items() if k}}


def exists(dotted: str) -> bool:
    top, _, member = dotted.partition(".")
    if top not in reactio.__all__ and top not in public_classes():
        return False
    if not member:
        return True
    obj = getattr(reactio, top)
    if hasattr(obj, member):
        return True
    # instance attributes: declared in a stub or annotated in the class (or a base)
    for base in getattr(obj, "__mro__", ()):
        if member in STUBS.get(base.__name__, ()) or member in getattr(base, "__annotations__",
                                                                      {}):
            return True
    return False


def github_anchor(heading: str) -> str:
    """The id GitHub gives a markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> Set[str]:
    out = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            out.add(github_anchor(line.lstrip("#")))
    return out


def test_every_public_name_is_in_the_reference():
    documented = {name for _, name, _ in reference_rows()}
    missing = sorted(expected_names() - documented)
    assert not missing, f"add to docs/reference.md: {missing}"


def test_the_reference_names_nothing_that_does_not_exist():
    unknown = [(line, name) for line, name, _ in reference_rows() if not exists(name)]
    assert not unknown, f"docs/reference.md names what reactio does not have: {unknown}"


def test_every_name_is_documented_once():
    seen: Dict[str, int] = {}
    dupes = []
    for line, name, _ in reference_rows():
        if name in seen:
            dupes.append((name, seen[name], line))
        seen[name] = line
    assert not dupes, f"documented twice (name, first line, again): {dupes}"


def test_every_row_links_to_the_page_that_explains_it():
    bad = []
    for line, name, links in reference_rows():
        pages = [link for link in links if not link.startswith("http")]
        if not pages:
            bad.append((line, name, "no link"))
        for link in pages:
            target, _, anchor = link.partition("#")
            page = DOCS / target
            if not page.is_file():
                bad.append((line, name, f"no page {target}"))
            elif anchor and anchor not in anchors(page):
                bad.append((line, name, f"no heading #{anchor} in {target}"))
    assert not bad, bad


@pytest.mark.parametrize("name", ["MsgReader", "MsgSender", "AutoSendBuffer", "set_log_level",
                                  "Timer", "ReactorClosedError", "CommandNotHandledError",
                                  "TimerHandle", "BACKEND"])
def test_names_the_issue_found_undocumented_are_explained_on_a_concept_page(name):
    """Issue 13 item 3: the reference links to a page; that page must mention the name."""
    for line, documented, links in reference_rows():
        if documented == name:
            for link in links:
                page = DOCS / link.partition("#")[0]
                text = page.read_text(encoding="utf-8")
                assert re.search(rf"`[\w.]*\b{name}\b", text), (name, page.name)
            return
    pytest.fail(f"{name} is not in docs/reference.md")
