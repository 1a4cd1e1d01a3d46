"""No import cycles: read from the sources (every ``import`` statement, parsed, nothing imported).

Module-level imports across the whole package must form no cycle (they decide import order). Within
one package folder even imports inside functions must form none: a module and its neighbour that need
each other belong together or need a third module (as builder/prebuilt and the layer norm's ops/cuda did).
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"accelops": "accelops", "accelops.accelerator": "accelerator", "accelops.op_builder": "op_builder"}


def modules():
    """Installed module name -> (source path, is a package)."""
    found = {}
    for package, folder in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package] + (parts[:-1] if is_package else parts))
            found[name] = (path, is_package)
    return found


def imports(name, path, is_package, known):
    """``(target, module_level)`` for every import of ``name`` that names a module of ``known``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    here = name if is_package else name.rpartition(".")[0]
    result = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            base = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a parent imports first anyway
                result.append((target, id(node) in top))
    return result


def find_cycle(graph):
    """One cycle of ``graph`` (node -> set of nodes) as a list, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def graphs():
    known = modules()
    module_level, same_folder = {}, {}
    for name, (path, is_package) in known.items():
        for target, top in imports(name, path, is_package, known):
            if top:
                module_level.setdefault(name, set()).add(target)
            folder = name if is_package else name.rpartition(".")[0]
            target_folder = target if known[target][1] else target.rpartition(".")[0]
            if folder == target_folder and not is_package and not known[target][1]:
                same_folder.setdefault(name, set()).add(target)
    return module_level, same_folder


def test_the_parser_sees_the_imports():
    module_level, same_folder = graphs()
    assert "accelops.op_builder.errors" in module_level["accelops.op_builder.builder"]
    assert "accelops.op_builder.prebuilt" in same_folder["accelops.op_builder.pipeline"]
    assert "accelops.ops.layer_norm.ops" in module_level["accelops.ops.layer_norm.module"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_cycle_among_module_level_imports():
    cycle = find_cycle(graphs()[0])
    assert cycle is None, " -> ".join(cycle)


def test_no_cycle_between_neighbours_even_inside_functions():
    cycle = find_cycle(graphs()[1])
    assert cycle is None, " -> ".join(cycle)
