#!/usr/bin/env python3
"""Checks the source layout rules of docs/architecture.md ("Layers"):

- no production file over 800 non-blank lines (an inline `#[cfg(test)] mod tests { .. }` at the
  end of a file is not counted; `tests.rs` and `*_tests.rs` files are test code);
- no import cycle between files (a `use` of a name that a `mod.rs` re-exports counts as a use of
  the file that defines it, so a folder's facade does not create cycles with its own files);
- no file imports from a top-level module of a higher layer (LAYERS below, lowest first).

Usage: scripts/layout-check.py [SRC_DIR]   (default: src). Exit 1 with the findings, 0 if clean.
"""
import os
import re
import sys

MAX_LINES = 800
# Lowest layer first; a module may import only from its own layer or lower ones. Modules on one
# line are siblings and may not import each other.
LAYERS = [
    ["exposition"],
    ["store"],
    ["telemetry"],
    ["ingest", "scrape", "tls"],
    ["gateway"],
    ["cluster", "http"],
    ["config"],
    ["node", "migrate"],
]
ROOT_FILES = {"lib.rs", "main.rs", "alloc.rs", "testsupport.rs", "time.rs"}
# Root files that every layer may use (plain helpers below every module).
SHARED_ROOT = {"time.rs"}


def layer_of(top):
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return None


def production_text(text):
    """The file without its trailing `#[cfg(test)] mod ... { .. }` block(s)."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*\{", text, re.M)
    if m:
        return text[: m.start()]
    return text


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def module_path_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel


def file_of(src, modpath):
    if not modpath:
        return os.path.join(src, "lib.rs")
    base = os.path.join(src, *modpath)
    for cand in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(cand):
            return cand
    return None


def expand_use_tree(s):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    s = s.strip()
    depth = 0
    for i, ch in enumerate(s):
        if ch == "{":
            if depth == 0:
                prefix = s[:i]
                inner = s[i + 1 : s.rindex("}")]
                parts, d, cur = [], 0, ""
                for c in inner:
                    if c == "{":
                        d += 1
                    elif c == "}":
                        d -= 1
                    if c == "," and d == 0:
                        parts.append(cur)
                        cur = ""
                    else:
                        cur += c
                parts.append(cur)
                out = []
                for p in parts:
                    p = p.strip()
                    if not p:
                        continue
                    if p == "self":
                        out.append(prefix.rstrip(":"))
                    else:
                        out.extend(prefix + e for e in expand_use_tree(p))
                return out
            depth += 1
    return [re.sub(r"\s+as\s+\w+$", "", s)]


def paths_in(code):
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use_tree(re.sub(r"\s+", " ", m.group(1))))
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", code):
        paths.append(m.group(1))
    # Paths that start at a submodule of the current module (`render::RenderCache`); resolve()
    # keeps only those whose first segment is one.
    for m in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*(?:::\w+)+)", code):
        paths.append(m.group(1))
    return paths


def reexports(src, file, cache={}):
    """name -> defining file, for `pub use` items of a module file."""
    if file in cache:
        return cache[file]
    cache[file] = {}
    code = strip_comments(production_text(open(file).read()))
    here = module_path_of(src, file)
    out = {}
    for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
        for p in expand_use_tree(re.sub(r"\s+", " ", m.group(1))):
            segs = p.split("::")
            name = segs[-1].split(" as ")[-1].strip()
            target = resolve(src, here, segs, follow=True)
            if target and target != file:
                out[name] = target
    cache[file] = out
    return out


def resolve(src, here, segs, follow=True):
    segs = [s.strip() for s in segs if s.strip()]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(here)
        rest = list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest = rest[1:]
    else:
        # A path relative to the current module (`use child::X`) when `child` is a submodule.
        if file_of(src, list(here) + [segs[0]]):
            base, rest = list(here), list(segs)
        else:
            return None
    cur = base
    target = file_of(src, cur)
    i = 0
    while i < len(rest):
        f = file_of(src, cur + [rest[i]])
        if not f:
            break
        cur = cur + [rest[i]]
        target = f
        i += 1
    if follow and target and i < len(rest):
        name = rest[i]
        r = reexports(src, target)
        if name in r:
            target = r[name]
    return target


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = []
    for dp, _, fns in os.walk(src):
        for fn in fns:
            if fn.endswith(".rs"):
                files.append(os.path.join(dp, fn))
    problems = []
    edges = {}
    for f in sorted(files):
        name = os.path.basename(f)
        is_test = name == "tests.rs" or name.endswith("_tests.rs")
        text = open(f).read()
        prod = production_text(text)
        if not is_test:
            n = sum(1 for line in prod.splitlines() if line.strip())
            if n > MAX_LINES:
                problems.append(f"{f}: {n} non-blank production lines (max {MAX_LINES})")
        if is_test:
            continue
        code = strip_comments(prod)
        # `mod x;` and `pub use` lines are structure, not use.
        code_no_decl = re.sub(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]+;", "", code)
        here = module_path_of(src, f)
        for p in paths_in(code_no_decl):
            t = resolve(src, here, p.split("::"))
            if t and t != f and not os.path.relpath(t, src).startswith(".."):
                edges.setdefault(f, set()).add(t)
        # Layer rule.
        rel = os.path.relpath(f, src).split(os.sep)
        top = rel[0][:-3] if len(rel) == 1 else rel[0]
        lf = layer_of(top)
        for t in edges.get(f, ()):
            trel = os.path.relpath(t, src).split(os.sep)
            ttop = trel[0][:-3] if len(trel) == 1 else trel[0]
            if ttop == top or len(trel) == 1 and trel[0] in SHARED_ROOT:
                continue
            lt = layer_of(ttop)
            if lf is None or lt is None:
                continue
            if lt >= lf:
                problems.append(f"{f}: imports {t} (layer '{ttop}' is not below '{top}')")
    # Cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            strong(v)
    for comp in sccs:
        inner = [f"{a} -> {b}" for a in comp for b in sorted(edges.get(a, ())) if b in comp]
        problems.append("import cycle: " + "; ".join(inner))
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"layout ok: {len(files)} files")


if __name__ == "__main__":
    main()
