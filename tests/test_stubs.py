"""The type stubs cover the public API.  A cheap guard that runs everywhere (no mypy needed):
every public name of the compiled module, and every public method and property of its
classes, must be declared in reactio/_core.pyi, and every public name of reactio must be
typed somewhere.  The full check, signatures included, is `python -m mypy.stubtest reactio`
(tools/build-dist.sh).
"""
from __future__ import annotations

import ast
import inspect
import os
from typing import Dict, Set

import pytest

import reactio
from reactio import _core

PKG_DIR = os.path.dirname(os.path.abspath(reactio.__file__))


def stub_members(path: str) -> Dict[str, Set[str]]:
    """{'': module-level names, 'Class': names defined in its body} of a .pyi file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out: Dict[str, Set[str]] = {"": set()}

    def names(body) -> Set[str]:
        found = set()
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found.add(node.target.id)
            elif isinstance(node, ast.Assign):
                found.update(t.id for t in node.targets if isinstance(t, ast.Name))
        return found

    out[""] = names(tree.body)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = names(node.body)
    return out


STUB = stub_members(os.path.join(PKG_DIR, "_core.pyi"))


def public_core_names():
    for name, obj in vars(_core).items():
        if name.startswith("_"):
            continue
        if getattr(obj, "__module__", None) != "reactio._core":
            continue                    # imported into _core (errors, stdlib modules)
        yield name, obj


def test_stub_files_are_installed():
    for name in ("py.typed", "_core.pyi", "listener.pyi"):
        assert os.path.isfile(os.path.join(PKG_DIR, name)), name


def test_every_public_name_of_the_extension_is_in_the_stub():
    missing = [name for name, _ in public_core_names() if name not in STUB[""]]
    assert not missing, f"add to src/reactio/_core.pyi: {missing}"


@pytest.mark.parametrize("name", [n for n, o in public_core_names() if inspect.isclass(o)])
def test_every_public_member_is_in_the_stub(name):
    cls = getattr(_core, name)
    declared = STUB.get(name, set())
    runtime = {m for m in vars(cls) if not m.startswith("_")}   # IntEnum members included
    missing = sorted(runtime - declared)
    assert not missing, f"add to class {name} in src/reactio/_core.pyi: {missing}"


def test_every_name_in_reactio_all_is_typed():
    """Names re-exported by reactio come from the stubbed extension or from annotated
    Python modules (which mypy reads directly, py.typed)."""
    for name in reactio.__all__:
        if name == "__version__":
            continue
        obj = getattr(reactio, name)
        if isinstance(obj, str):             # a constant of the extension (BACKEND)
            assert name in STUB[""], f"{name} is missing from _core.pyi"
            continue
        module = getattr(obj, "__module__", None)
        if module == "reactio._core":        # SimpleIoRuntime is ReactRuntime under a new name
            real = getattr(obj, "__name__", name)
            assert real in STUB[""], f"{real} is missing from _core.pyi"
        else:
            assert module is not None and module.startswith("reactio."), (name, module)
