"""The package's shape: no import cycles, library code never reaches up into experiments."""
import ast
from pathlib import Path

import polarity

SRC = Path(polarity.__file__).resolve().parent
# modules that may import experiments: the command lines, and the engine and store that run
# them and keep their results (the store reads the experiment contract's record types)
MAY_IMPORT_EXPERIMENTS = ("polarity.cli", "polarity.engine", "polarity.store",
                          "polarity.experiments")


def _may_import_experiments(module: str) -> bool:
    return module.startswith(MAY_IMPORT_EXPERIMENTS) or module.endswith("_cli")


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = ("polarity",) + p.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every polarity module ``name`` imports, at module level or inside functions."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph():
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "polarity"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    graph = _graph()
    assert graph["polarity.a"] == {"polarity.sub.b"} and graph["polarity.sub.b"] == {"polarity.a"}


def test_library_modules_never_import_experiments():
    bad = {m: sorted(n for n in deps if n.startswith("polarity.experiments"))
           for m, deps in _graph().items() if not _may_import_experiments(m)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"library modules importing experiments: {bad}"
