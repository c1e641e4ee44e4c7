#!/usr/bin/env python3
"""Structure checks on src/ (Python 3 standard library only):

1. No import cycles between the crate's top-level modules. A module is src/X.rs or src/X/
   (every file under it); it depends on Y when its code names `crate::Y` (in a `use`, a
   `use crate::{Y, ...}` group, or a path written inline). Test code does not count: blocks
   `#[cfg(test)] mod NAME { ... }` and files named tests.rs are skipped, since unit tests may
   reach across modules without making the library's modules depend on each other.
2. No cycles between sibling files: the files (and folders) directly in one module folder,
   e.g. src/sweep/asha.rs and src/sweep/space.rs, may not reach each other both ways. A file
   depends on a sibling when its code names it through `super::X`, `self::X` or
   `crate::sweep::X` (in a `use` or inline; groups `{...}` included), or names an item that
   the folder's mod.rs re-exports from it (`pub use spec::Sweep` makes `super::Sweep` a use
   of spec). Test code does not count, as in 1.
3. No file in src/ over MAX_LINES lines: a file that long holds more than one concept.

usage: scripts/check-structure.py [SRC_DIR]   (default: the repository's src/)
       scripts/check-structure.py --self-test (checks the checks on made-up trees)
Prints one OK line and exits 0, or names each cycle and each long file and exits 1.
"""
import re
import sys
import tempfile
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


def check(src):
    """(problems, summary line) for the crate whose sources are in `src`."""
    files = sorted(src.rglob("*.rs"))
    shown = lambda f: f.relative_to(src.parent)  # src/x.rs, as the user knows it
    modules = {module_of(f, src) for f in files} - {None}

    graph = {m: set() for m in modules}
    evidence = {}  # (from, to) -> "file:line", the first place the dependency is written
    sizes = []  # (lines, file)
    codes = {}  # file -> its code without comments, literals and test modules
    for f in files:
        text = f.read_text(encoding="utf-8")
        sizes.append((lines_of(text), f))
        module = module_of(f, src)
        if module is None:
            continue
        code = without_test_modules(strip_comments_and_literals(text))
        codes[f] = code
        for line, target in crate_references(code):
            if target in modules and target != module:
                graph[module].add(target)
                evidence.setdefault((module, target), f"{shown(f)}:{line}")

    problems = []
    for cycle, component in find_cycles(graph):
        problems.append(f"import cycle: {describe(cycle, component, evidence)}")
    siblings = sibling_graphs(src, codes, shown)
    for folder, (sgraph, sevidence) in sorted(siblings.items()):
        for cycle, component in find_cycles(sgraph):
            where = "src/" + "/".join(folder) + "/"
            problems.append(f"sibling cycle in {where}: {describe(cycle, component, sevidence)}")
    for lines, f in sizes:
        if lines > MAX_LINES:
            problems.append(f"{shown(f)} has {lines} lines, over the limit of {MAX_LINES}")
    edges = sum(len(v) for v in graph.values())
    sibling_edges = sum(len(v) for g, _ in siblings.values() for v in g.values())
    longest = max(sizes, default=(0, src))
    summary = (f"check-structure: OK: {len(modules)} modules, {edges} imports between them, no cycles; "
               f"{sibling_edges} imports between sibling files in {len(siblings)} folders, no cycles; "
               f"longest file {shown(longest[1])} ({longest[0]} lines, limit {MAX_LINES})")
    return problems, summary


def describe(cycle, component, evidence):
    steps = ", ".join(f"{a} -> {b} at {evidence[(a, b)]}" for a, b in zip(cycle, cycle[1:]) if (a, b) in evidence)
    # Other cycles may run through the same modules; name them all so one fix is not
    # followed by a surprise.
    others = [f"{a} -> {b} at {at}" for (a, b), at in sorted(evidence.items())
              if a in component and b in component and (a, b) not in zip(cycle, cycle[1:])]
    rest = f"; {', '.join(component)} all reach each other, also through {', '.join(others)}" if others else ""
    return f"{' -> '.join(cycle)} ({steps}){rest}"


def module_path(path, src):
    """The module a file is, as a tuple of names (src/sweep/asha.rs: ("sweep", "asha"),
    src/sweep/mod.rs: ("sweep",)); None for crate roots, bin/ and test files."""
    rel = path.relative_to(src)
    if path.name == "tests.rs" or (len(rel.parts) == 1 and rel.name in ROOTS) or rel.parts[0] == "bin":
        return None
    parts = list(rel.parts[:-1])
    if rel.name != "mod.rs":
        parts.append(rel.name[:-3])
    return tuple(parts)


PATH_START = re.compile(r"(?<![\w$:])(crate|super|self)\s*::")
IDENT = re.compile(r"\s*(r#)?([A-Za-z_]\w*)")


def parse_tree(code, i):
    """The paths of a use tree (or an inline path) starting at code[i]: ([names...], ...)
    with their lines, and where the tree ends. `a::{b, c::{d}}` gives [a, b], [a, c, d]."""
    j = skip_space(code, i)
    if j < len(code) and code[j] == "{":
        paths, j = [], j + 1
        while True:
            sub, j = parse_tree(code, j)
            paths += sub
            j = skip_space(code, j)
            if j < len(code) and code[j] == ",":
                j += 1
                continue
            if j < len(code) and code[j] == "}":
                j += 1
            return paths, j
    m = IDENT.match(code, j)
    if not m:
        return [([], j)], j
    name, j = m.group(2), m.end()
    k = skip_space(code, j)
    if code.startswith("::", k):
        sub, end = parse_tree(code, k + 2)
        return [([name] + p, at) for p, at in sub], end
    return [([name], j)], j


def skip_space(code, i):
    while i < len(code) and code[i].isspace():
        i += 1
    return i


INLINE_MOD = re.compile(r"(?<![\w$])mod\s+(\w+)\s*\{")


def inline_modules(code):
    """(start, end, name) of each `mod NAME { ... }` written inside a file."""
    spans = []
    for m in INLINE_MOD.finditer(code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        spans.append((m.start(), j, m.group(1)))
    return spans


def paths_in(code, module):
    """(line, absolute path, called) for every `crate::`, `super::` or `self::` path in
    `code` of `module` (or of a `mod NAME { ... }` inside it); `called` when its last name is
    followed by `(` or `!` (a function or macro, which may share a module's name)."""
    found, consumed, spans = [], 0, inline_modules(code)
    for m in PATH_START.finditer(code):
        if m.start() < consumed:
            continue
        trees, consumed = parse_tree(code, m.end())
        line = code.count("\n", 0, m.start()) + 1
        here = tuple(module) + tuple(name for start, end, name in spans if start < m.start() < end)
        for names, at in trees:
            names = [m.group(1)] + names
            base = () if names[0] == "crate" else here
            if names[0] == "self":
                names = names[1:]
            elif names[0] == "crate":
                names = names[1:]
            while names and names[0] == "super":
                base, names = base[:-1], names[1:]
            names = [n for n in names if n != "self"]
            k = skip_space(code, at)
            called = k < len(code) and code[k] in "(!"
            found.append((line, tuple(base) + tuple(names), called))
    return found


def re_exports(code, folder, children):
    """{name: child} for each `pub use child::...::name` in the folder's own file."""
    table = {}
    for m in re.finditer(r"\bpub(?:\s*\([^)]*\))?\s+use\s+", code):
        trees, _ = parse_tree(code, m.end())
        for names, _ in trees:
            names = [n for n in names if n not in ("self",)]
            if names and names[0] == "crate" and tuple(names[1:len(folder) + 1]) == folder:
                names = names[len(folder) + 1:]
            if len(names) >= 2 and names[0] in children:
                table[names[-1]] = names[0]
    return table


def sibling_graphs(src, codes, shown):
    """{folder: (graph, evidence)}: for each module folder, which of its files (or
    subfolders) names which other."""
    paths = {f: module_path(f, src) for f in codes}
    children = {}  # folder -> the names of its child modules
    for p in paths.values():
        for depth in range(1, len(p)):
            children.setdefault(p[:depth], set()).add(p[depth])
    exports = {}  # folder -> {re-exported name: child}
    for f, p in paths.items():
        if p in children:
            exports[p] = re_exports(codes[f], p, children[p])
    graphs = {folder: ({c: set() for c in names}, {}) for folder, names in children.items()}
    for f, module in paths.items():
        for line, target, called in paths_in(codes[f], module):
            common = 0
            while common < min(len(module), len(target)) and module[common] == target[common]:
                common += 1
            folder = module[:common]
            if common == 0 or folder not in children or common >= len(module) or common >= len(target):
                continue
            source, name = module[common], target[common]
            if name not in children[folder]:
                name = exports.get(folder, {}).get(name)
            elif called and len(target) == common + 1:
                continue  # a function of the folder's module named like a child module
            if name is None or name == source:
                continue
            graph, evidence = graphs[folder]
            graph[source].add(name)
            evidence.setdefault((source, name), f"{shown(f)}:{line}")
    return graphs


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src"
    if not src.is_dir():
        print(f"check-structure: {src} is not a directory", file=sys.stderr)
        return 2
    problems, summary = check(src)
    for p in problems:
        print(f"check-structure: {p}", file=sys.stderr)
    if problems:
        return 1
    print(summary)
    return 0


# Made-up crates for --self-test: {file: text}, and the problems check() must report (each
# expected string is a substring of one problem; no other problem may be reported).
SELF_TESTS = [
    ("sibling cycle through super::", {
        "lib.rs": "mod sweep;",
        "sweep/mod.rs": "mod asha;\nmod space;\nmod spec;",
        "sweep/asha.rs": "use super::spec::Mode;\npub struct Asha;",
        "sweep/space.rs": "use super::spec::{Space, Sweep};",
        "sweep/spec.rs": "pub fn f() -> super::asha::Asha { super::asha::Asha }",
    }, ["sibling cycle in src/sweep/: asha -> spec -> asha (asha -> spec at src/sweep/asha.rs:1, "
        "spec -> asha at src/sweep/spec.rs:1)"]),
    ("sibling cycle through crate:: paths, groups and a nested folder", {
        "lib.rs": "mod train;",
        "train/mod.rs": "mod graph;\nmod trainer;",
        "train/graph/mod.rs": "mod capture;",
        "train/graph/capture.rs": "use crate::train::{trainer::{self, Batch}};",
        "train/trainer.rs": "fn step() { let _ = crate::train::graph::run(); }",
    }, ["sibling cycle in src/train/: graph -> trainer -> graph (graph -> trainer at "
        "src/train/graph/capture.rs:1, trainer -> graph at src/train/trainer.rs:1)"]),
    ("sibling cycle through a re-export of the folder's mod.rs", {
        "lib.rs": "mod sweep;",
        "sweep/mod.rs": "mod spec;\nmod space;\npub use spec::Sweep;",
        "sweep/spec.rs": "use super::space::Trial;\npub struct Sweep;",
        "sweep/space.rs": "\n\nfn f(s: &super::Sweep) {}",
    }, ["sibling cycle in src/sweep/: space -> spec -> space (space -> spec at src/sweep/space.rs:3"]),
    ("no cycle: one way only, the other way in test code, comments, strings or a function", {
        "lib.rs": "mod sweep;",
        "sweep/mod.rs": "mod asha;\nmod spec;\npub fn asha() {}",
        "sweep/asha.rs": "use super::spec::Mode;",
        "sweep/spec.rs": ("// super::asha::Asha\nconst S: &str = \"super::asha::x\";\nfn f() { super::asha(); }\n"
                          "#[cfg(test)]\nmod tests {\n    use super::super::asha::Asha;\n}"),
        "sweep/tests.rs": "use super::asha::Asha;",
    }, []),
    ("no cycle: super:: inside a module written in a file means that file", {
        "lib.rs": "mod sweep;",
        "sweep/mod.rs": "mod asha;\nmod spec;",
        "sweep/asha.rs": "use super::spec::Mode;\npub struct Spec;",
        "sweep/spec.rs": ("pub struct Mode;\nmod asha {\n    pub struct Local;\n}\n"
                          "mod inner {\n    use super::asha::Local;\n    use super::super::spec::Mode;\n}"),
    }, []),
    ("a cycle between top-level modules is still found", {
        "lib.rs": "mod a;\nmod b;",
        "a.rs": "use crate::b::X;",
        "b/mod.rs": "use crate::a::Y;",
    }, ["import cycle: a -> b -> a"]),
]


def self_test():
    failures = 0
    for name, tree, expected in SELF_TESTS:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            for rel, text in tree.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text + "\n", encoding="utf-8")
            problems, _ = check(src)
        missing = [e for e in expected if not any(e in p for p in problems)]
        extra = [p for p in problems if not any(e in p for e in expected)]
        if missing or extra:
            failures += 1
            print(f"check-structure self-test FAILED: {name}: missing {missing}, unexpected {extra}",
                  file=sys.stderr)
    if failures:
        return 1
    print(f"check-structure: self-test OK: {len(SELF_TESTS)} made-up crates")
    return 0


def lines_of(text):
    """Lines as `wc -l` counts them, plus a last line without a newline."""
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
