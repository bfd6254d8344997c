"""docs/architecture.md's rules that lint-imports does not check: state belongs to objects (no
module writes another module's module-level state) and there are no imports inside functions."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "exporter"
# Methods that change the object they are called on (dict, set, list, deque, Counter).
MUTATORS = {"add", "append", "appendleft", "clear", "discard", "extend", "insert", "pop",
            "popitem", "popleft", "remove", "setdefault", "update"}


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def foreign_writes(name: str, tree: ast.Module, tops: dict[str, set[str]]) -> list[str]:
    """Writes in ``tree`` into a module-level object of another exporter module."""
    imported: dict[str, tuple[str, str | None]] = {}  # local name -> (module, its global)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter"):
            for alias in node.names:
                local = alias.asname or alias.name
                if f"{node.module}.{alias.name}" in tops:
                    imported[local] = (f"{node.module}.{alias.name}", None)
                elif alias.name in tops.get(node.module, set()):
                    imported[local] = (node.module, alias.name)

    def owner(expr: ast.expr) -> str | None:
        chain: list[str] = []
        while isinstance(expr, (ast.Attribute, ast.Subscript)):
            if isinstance(expr, ast.Attribute):
                chain.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name) or expr.id not in imported:
            return None
        module, global_name = imported[expr.id]
        if global_name is None:  # module.GLOBAL...
            if not chain or chain[-1] not in tops[module]:
                return None
            global_name = chain[-1]
        return f"{module}.{global_name}"

    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in MUTATORS):
            targets = [node.func.value]
        for target in targets:
            if isinstance(target, ast.Name) and not isinstance(node, ast.Call):
                continue  # rebinding a local name
            if (what := owner(target)) is not None:
                found.append(f"{name}:{node.lineno} writes {what}")
    return found


def test_no_module_writes_another_modules_state() -> None:
    trees = modules()
    tops = {name: top_level_names(tree) for name, tree in trees.items()}
    assert [w for name, tree in trees.items() for w in foreign_writes(name, tree, tops)] == []


def test_the_state_check_sees_a_foreign_write() -> None:
    tops = {"exporter.secrets": {"SECRETS"}, "exporter.other": set()}
    tree = ast.parse("from exporter.secrets import SECRETS\n"
                     "def f():\n    SECRETS.known.add('x')\n    SECRETS.cache['k'] = 1\n")
    assert sorted(foreign_writes("exporter.other", tree, tops)) == [
        "exporter.other:3 writes exporter.secrets.SECRETS",
        "exporter.other:4 writes exporter.secrets.SECRETS"]


def test_no_imports_inside_functions() -> None:
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.extend(f"{name}:{inner.lineno}" for inner in ast.walk(node)
                             if isinstance(inner, (ast.Import, ast.ImportFrom)))
    assert found == []
