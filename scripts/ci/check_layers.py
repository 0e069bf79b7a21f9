#!/usr/bin/env python3
"""Checks the layers (docs/ARCHITECTURE.md): between crates, that each crate depends only on
those below it and the core names no inference or training engine; within each crate, that no
module uses another that uses it back, directly or through others.

A module is a file under a crate's src/ (src/a/b.rs and src/a/b/mod.rs are `a::b`); a module
uses every module it names as `crate::…` outside comments, in `use` lines or in paths. Children
may use their parent module's items (`super::`) as part of it.

Usage: scripts/ci/check_layers.py [--graph]   (exit 1 and what is wrong, or exit 0)
"""
import os
import re
import sys
import tomllib

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The crates from the bottom up: each may depend on those before it, never on one after it.
# `banned`: crates (dependency names) it must neither depend on nor name in its code.
ENGINES = ["tract-onnx", "tract-core", "tract-nnef", "tract-linalg", "tract-hir", "burn", "ort",
           "prost", "pyo3"]
CRATES = [
    {"package": "fastretrain-core", "dir": "crates/core", "banned": ENGINES},
    {"package": "fastretrain", "dir": ".", "banned": ["pyo3"]},
    {"package": "fastretrain-python", "dir": "python", "banned": []},
    # The C library sits beside the Python bindings (neither uses the other) and adds no engine.
    {"package": "fastretrain-capi", "dir": "capi", "banned": ["fastretrain-python", "pyo3", "burn"]},
]
ROOT = None  # the src/ folder of the crate being read
PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)")
USE_GROUP = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*)\{([^}]*)\}", re.S)


def modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                continue
            found["::".join(rel)] = os.path.join(folder, f)
    return found


def code(path):
    """The file without comments (line comments, doc comments, block comments)."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def owner(path, known):
    """The longest known module that `path` (a::b::Item) lies in."""
    parts = path.split("::")
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in known:
            return name
    return None


def graph():
    known = modules()
    edges = {m: set() for m in known}
    for module, path in known.items():
        text = code(path)
        paths = PATH.findall(text)
        for prefix, items in USE_GROUP.findall(text):
            paths += [prefix + item.strip().split(" ")[0] for item in items.split(",") if item.strip()]
        for p in paths:
            target = owner(p, known)
            # A module may use its own children and its parent's items freely only through
            # themselves: every other module counts.
            if target and target != module and not module.startswith(target + "::") \
                    and not target.startswith(module + "::"):
                edges[module].add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def crate_problems(index, crate):
    """What is wrong between `crate` and the others: its Cargo.toml and the crates its code names."""
    problems = []
    manifest = tomllib.load(open(os.path.join(CHECKOUT, crate["dir"], "Cargo.toml"), "rb"))
    deps = set()
    for table in ("dependencies", "dev-dependencies", "build-dependencies"):
        deps |= set(manifest.get(table, {}))
    for target in manifest.get("target", {}).values():
        for table in ("dependencies", "dev-dependencies", "build-dependencies"):
            deps |= set(target.get(table, {}))
    above = {c["package"] for c in CRATES[index + 1:]}
    for dep in sorted(deps & (above | set(crate["banned"]))):
        problems.append(f"{crate['package']} depends on {dep}")
    banned_names = [d.replace("-", "_") for d in sorted(above | set(crate["banned"]))]
    src = os.path.join(CHECKOUT, crate["dir"], "src")
    for folder, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith(".rs"):
                path = os.path.join(folder, f)
                text = code(path)
                for name in banned_names:
                    if re.search(r"\b" + name + r"::", text):
                        problems.append(f"{os.path.relpath(path, CHECKOUT)} names {name}")
    return problems


def main():
    global ROOT
    failed = False
    for index, crate in enumerate(CRATES):
        ROOT = os.path.join(CHECKOUT, crate["dir"], "src")
        for problem in crate_problems(index, crate):
            print(problem)
            failed = True
        edges = graph()
        if "--graph" in sys.argv:
            for m in sorted(edges):
                print(f"{crate['package']}: {m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
        found = cycles(edges)
        for component in found:
            inner = [f"{a} -> {b}" for a in component for b in sorted(edges[a]) if b in component]
            print(f"{crate['package']}: import cycle among " + ", ".join(component) + ": "
                  + "; ".join(inner))
            failed = True
        if not found:
            print(f"{crate['package']}: no import cycles among {len(edges)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
