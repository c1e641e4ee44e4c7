#!/usr/bin/env python3
"""Structure checks on src/ (Python 3 standard library only):

1. No import cycles between the crate's top-level modules. A module is src/X.rs or src/X/
   (every file under it); it depends on Y when its code names `crate::Y` (in a `use`, a
   `use crate::{Y, ...}` group, or a path written inline). Test code does not count: blocks
   `#[cfg(test)] mod NAME { ... }` and files named tests.rs are skipped, since unit tests may
   reach across modules without making the library's modules depend on each other.
2. No file in src/ over MAX_LINES lines: a file that long holds more than one concept.

usage: scripts/check-structure.py [SRC_DIR]   (default: the repository's src/)
Prints one OK line and exits 0, or names each cycle and each long file and exits 1.
"""
import re
import sys
from pathlib import Path

MAX_LINES = 600
# Files that are crate roots, not modules: their `crate::` means another crate or the root.
ROOTS = {"lib.rs", "main.rs"}
RAW_STRING = re.compile(r'b?r(#*)"')
CHAR_LITERAL = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'")


def strip_comments_and_literals(text):
    """The code with comments, string and char literals blanked out (newlines kept, so line
    numbers stay right): braces or `crate::` inside them must not count."""
    out = []
    i, n = 0, len(text)

    def blank(segment):
        out.append("".join(c if c == "\n" else " " for c in segment))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(text[i:end])
            i = end
        elif text.startswith("/*", i):
            # Rust block comments nest.
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(text[i:j])
            i = j
        elif (m := RAW_STRING.match(text, i)) and not _ident_char_before(text, i):
            # Raw string: ends at a quote followed by as many #s as it opened with.
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            blank(text[i:end])
            i = end
        elif c == '"' or (c == "b" and text.startswith('b"', i) and not _ident_char_before(text, i)):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(text[i:j + 1])
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}', '{') or a lifetime ('a): only the
            # former closes with a quote right after one (possibly escaped) character.
            m = CHAR_LITERAL.match(text, i)
            if m:
                blank(m.group(0))
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ident_char_before(text, i):
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


TEST_MOD = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]\s*(?:#\s*\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")


def without_test_modules(code):
    """`code` with every `#[cfg(test)] mod NAME { ... }` blanked out (newlines kept)."""
    while m := TEST_MOD.search(code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[:m.start()] + "".join(c if c == "\n" else " " for c in code[m.start():j]) + code[j:]
    return code


CRATE_PATH = re.compile(r"(?<![\w$])crate\s*::\s*(\{|\w+)")


def crate_references(code):
    """(line, module) for every top-level name reached through `crate::` in `code`."""
    refs = []
    for m in CRATE_PATH.finditer(code):
        line = code.count("\n", 0, m.start()) + 1
        if m.group(1) != "{":
            refs.append((line, m.group(1)))
            continue
        # A group `crate::{a, b::c, d::{e, f}}`: the first name of each top-level item.
        depth, j, item_start = 1, m.end(), m.end()
        while j < len(code) and depth:
            ch = code[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if depth == 0 or (depth == 1 and ch == ","):
                name = re.compile(r"\s*(\w+)").match(code, item_start, j)
                if name:
                    refs.append((code.count("\n", 0, name.start(1)) + 1, name.group(1)))
                item_start = j + 1
            j += 1
    return refs


def module_of(path, src):
    """The top-level module a file belongs to, or None for crate roots and test files."""
    rel = path.relative_to(src)
    if path.name == "tests.rs" or (len(rel.parts) == 1 and rel.name in ROOTS) or rel.parts[0] == "bin":
        return None
    return rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]


def find_cycles(graph):
    """Each strongly connected component of more than one module (Tarjan), as a pair: a
    shortest cycle through its first module, and all of its modules."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(shortest_cycle(graph, c), c) for c in components]


def shortest_cycle(graph, component):
    """A shortest cycle through the component's first module, as [a, b, ..., a] (BFS)."""
    start, members = component[0], set(component)
    parent, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if w in members and w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    return component


def main(argv):
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src"
    if not src.is_dir():
        print(f"check-structure: {src} is not a directory", file=sys.stderr)
        return 2
    files = sorted(src.rglob("*.rs"))
    shown = lambda f: f.relative_to(src.parent)  # src/x.rs, as the user knows it
    modules = {module_of(f, src) for f in files} - {None}

    graph = {m: set() for m in modules}
    evidence = {}  # (from, to) -> "file:line", the first place the dependency is written
    sizes = []  # (lines, file)
    for f in files:
        text = f.read_text(encoding="utf-8")
        sizes.append((lines_of(text), f))
        module = module_of(f, src)
        if module is None:
            continue
        code = without_test_modules(strip_comments_and_literals(text))
        for line, target in crate_references(code):
            if target in modules and target != module:
                graph[module].add(target)
                evidence.setdefault((module, target), f"{shown(f)}:{line}")

    problems = []
    for cycle, component in find_cycles(graph):
        steps = ", ".join(f"{a} -> {b} at {evidence[(a, b)]}" for a, b in zip(cycle, cycle[1:]) if (a, b) in evidence)
        # Other cycles may run through the same modules; name them all so one fix is not
        # followed by a surprise.
        rest = f"; {', '.join(component)} all reach each other" if len(component) > len(cycle) - 1 else ""
        problems.append(f"import cycle: {' -> '.join(cycle)} ({steps}){rest}")
    for lines, f in sizes:
        if lines > MAX_LINES:
            problems.append(f"{shown(f)} has {lines} lines, over the limit of {MAX_LINES}")
    for p in problems:
        print(f"check-structure: {p}", file=sys.stderr)
    if problems:
        return 1
    edges = sum(len(v) for v in graph.values())
    longest = max(sizes, default=(0, src))
    print(f"check-structure: OK: {len(modules)} modules, {edges} imports between them, no cycles; "
          f"longest file {shown(longest[1])} ({longest[0]} lines, limit {MAX_LINES})")
    return 0


def lines_of(text):
    """Lines as `wc -l` counts them, plus a last line without a newline."""
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
