"""Issue 10, defect 10, run as a subprocess (one per class: a crash is a signal here, not a
dead pytest):

    python new_abuse.py CLASS_NAME

Builds ``cls.__new__(cls)`` (skipping __init__), then calls every public method and property
with a battery of plausible arguments, each on a fresh object, then all of them in a row on
one object, then drops everything and collects.  Every call must either work or raise an
ordinary exception; a SystemError ("error return without exception set" and the like) or an
unraisable exception from a destructor counts as a failure.  The call about to be made is
written to stderr first, so a crash names it.

Prints one JSON line: {"skip": reason} when __new__ needs arguments, else {"calls": n,
"ordinary": {exception name: count}, "bad": [...], "unraisable": [...]}.
"""
import copy
import gc
import json
import os
import pickle
import sys

import reactio
import reactio._core as core


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # see crash_exit.py
from crash_exit import die_on_crash  # noqa: E402


def public_cdef_classes():
    """Every public class of reactio / reactio._core that is an extension (cdef) type."""
    found = {}
    for mod in (reactio, core):
        for name in dir(mod):
            obj = getattr(mod, name)
            if (isinstance(obj, type) and not name.startswith("_")
                    and obj.__module__ == "reactio._core"
                    and not obj.__flags__ & (1 << 9)):          # Py_TPFLAGS_HEAPTYPE
                found.setdefault(obj.__name__, obj)
    return found


def battery(cls):
    rid = reactio.ReactorID(0, 1)
    reactor = reactio.Reactor()
    handler = reactio.DefaultTcpListenerHandler(lambda count, param: reactio.Reactor())
    loose_ctx = reactio.DispatchContext.__new__(reactio.DispatchContext)
    same = cls.__new__(cls)
    return [(), (0,), (1,), (-1,), (0.0,), (True,), (None,), (b"x",), (bytearray(b"xy"),),
            ("127.0.0.1:1",), (rid,), (loose_ctx,), (same,), (reactor,), (print,),
            (rid, "cmd"), (b"x", None), (b"x", print), (loose_ctx, None), (rid, None, print),
            ("127.0.0.1:1", handler), ("127.0.0.1:1", 4096, reactor),
            (memoryview(b"abc"), 3, 0, loose_ctx), (rid, reactio.Deferred.IMMEDIATE, print),
            (1, 1), (None, None, None)]


DUNDERS = {
    "repr": repr, "str": str, "hash": hash, "eq": lambda o: o == o, "len": len, "bool": bool,
    "enter": lambda o: o.__enter__(), "exit": lambda o: o.__exit__(None, None, None),
    "pickle": pickle.dumps, "copy": copy.copy, "sizeof": sys.getsizeof, "dir": dir,
}

ordinary = {}
bad = []
calls = 0


def attempt(label, fn):
    global calls
    calls += 1
    sys.stderr.write(label + "\n")
    sys.stderr.flush()
    try:
        fn()
    except SystemError as exc:
        bad.append(f"{label}: SystemError: {exc}")
    except Exception as exc:
        ordinary[type(exc).__name__] = ordinary.get(type(exc).__name__, 0) + 1
    except BaseException as exc:
        bad.append(f"{label}: {type(exc).__name__}: {exc}")


def members(cls):
    methods, props = [], []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        raw = None
        for klass in cls.__mro__:
            if name in vars(klass):
                raw = vars(klass)[name]
                break
        if raw is None:
            continue
        if hasattr(raw, "__get__") and not callable(raw):
            props.append(name)                 # getset/member descriptor or property
        elif callable(raw) or isinstance(raw, (staticmethod, classmethod)):
            methods.append(name)
    return methods, props


def call_method(obj, name, args):
    if name == "run_forever":
        # only after stop(): a stop() that came first makes run_forever() return at once
        obj.stop()
    return getattr(obj, name)(*args)


def main():
    die_on_crash()
    name = sys.argv[1]
    classes = public_cdef_classes()
    cls = classes[name]
    try:
        cls.__new__(cls)
    except TypeError as exc:
        print(json.dumps({"skip": f"{name}.__new__({name}) needs arguments: {exc}"}))
        return
    unraisable = []
    sys.unraisablehook = lambda u: unraisable.append(
        f"{type(u.exc_value).__name__}: {u.exc_value} ({u.object!r})")
    methods, props = members(cls)
    args_list = battery(cls)
    for dname, fn in DUNDERS.items():
        attempt(f"{name}: {dname}(obj)", lambda fn=fn: fn(cls.__new__(cls)))
    for prop in props:
        attempt(f"{name}.{prop} (get)", lambda p=prop: getattr(cls.__new__(cls), p))
        for value in (True, 0, None):
            attempt(f"{name}.{prop} = {value!r}",
                    lambda p=prop, v=value: setattr(cls.__new__(cls), p, v))
    for meth in methods:
        for args in args_list:
            attempt(f"{name}.{meth}{args!r} (fresh object)",
                    lambda m=meth, a=args: call_method(cls.__new__(cls), m, a))
    # all in a row on one object: later calls see the state earlier ones left
    obj = cls.__new__(cls)
    for meth in methods:
        for args in args_list:
            attempt(f"{name}.{meth}{args!r} (same object)",
                    lambda m=meth, a=args: call_method(obj, m, a))
        for prop in props:
            attempt(f"{name}.{prop} (get, same object)", lambda p=prop: getattr(obj, p))
    for dname, fn in DUNDERS.items():
        attempt(f"{name}: {dname}(obj) (same object)", lambda fn=fn: fn(obj))
    obj = args_list = None
    gc.collect()
    gc.collect()
    print(json.dumps({"calls": calls, "methods": methods, "properties": props,
                      "ordinary": ordinary, "bad": bad, "unraisable": unraisable}), flush=True)


if __name__ == "__main__":
    main()
