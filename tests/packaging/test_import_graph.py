"""The import graph, read from the sources (every ``import`` statement and ``import_module("...")`` call,
parsed, nothing imported): no cycles, and the layer order of the design.

Module-level imports across the whole package must form no cycle (they decide import order). Within
one package folder even imports inside functions must form none: a module and its neighbour that need
each other belong together or need a third module (as builder/prebuilt and the layer norm's ops/cuda did).

Every import, at module level or inside a function, goes down the layers (accelerator -> op build engine ->
ops -> comm -> engine) or stays in its layer; the few places where a lower layer must reach a higher one to
keep a DeepSpeed name working are listed, with the reason, in ``ALLOWED_UPWARD``.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"accelops": "accelops", "accelops.accelerator": "accelerator", "accelops.op_builder": "op_builder"}

#: The layers in order, by module prefix: each may use its own and those before it.
LAYERS = [
    ("base", ["accelops.version", "accelops._logging", "accelops._lazy"]),
    ("accelerator", ["accelops.accelerator"]),
    ("op build engine", ["accelops.op_builder"]),
    ("ops", ["accelops.ops"]),
    ("comm", ["accelops.comm"]),
    ("engine", ["accelops.runtime", "accelops.checkpoint", "accelops.utils", "accelops.monitor", "accelops.profiling",
                "accelops.pipe", "accelops.moe"]),
]
#: Beside the layers: what each may use. The launcher starts processes and uses the accelerator only (device
#: counts, visible-devices variables); the readers (ds_report, DeepSpeed's ``git_version_info``, ``python -m
#: accelops`` and the package's lazily loaded names) read every layer.
BESIDE = {
    "launcher": (["accelops.launcher"], {"base", "accelerator", "launcher"}),
    "readers": (["accelops.report", "accelops.git_version_info", "accelops.__main__", "accelops"], None),
}
#: (importing module, imported module) -> why a lower layer reaches a higher one there.
ALLOWED_UPWARD = {
    ("accelops.accelerator.torch_device", "accelops.op_builder"):
        "DeepSpeed's get_accelerator().get_op_builder(name) / create_op_builder(name) return the op builders",
    ("accelops.op_builder", "accelops.ops.registry"):
        "DeepSpeed's op_builder.ALL_OPS and `from op_builder import CPUAdamBuilder` name every op's builder "
        "(and a prebuild builds every op); loading an op never goes this way",
    ("accelops.accelerator.torch_device", "accelops.utils.pin_memory"):
        "DeepSpeed's get_accelerator().pin_memory/is_pinned/unpin_memory use deepspeed.utils.pin_memory's native "
        "manager while DS_PIN_MEMORY_BACKEND=native",
    ("accelops.launcher.rank", "accelops.comm.env_mapping"):
        "the rank wrapper exports the launch variables that comm reads: one table of their names",
}


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
        if _is_import_module_call(node):
            targets = [node.args[0].value]
        elif isinstance(node, ast.Import):
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


def _is_import_module_call(node):
    """``importlib.import_module("a.b")`` or ``import_module("a.b")`` with an absolute name written out."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "import_module" and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")


def layer_of(module):
    """``(layer name, the layers it may use or None for all)`` of a module."""
    best = None
    for index, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer, {name for name, _ in LAYERS[:index + 1]})
    for layer, (prefixes, may_use) in BESIDE.items():
        for prefix in prefixes:
            exact_only = prefix == "accelops"  # the package itself, not everything in it
            if module == prefix or (not exact_only and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer, may_use)
    assert best is not None, f"{module} is in no layer: add it to LAYERS or BESIDE"
    return best[1], best[2]


def layer_violations(edges):
    """``(module, target, why)`` for every import in ``edges`` ((module, target) pairs) against the layer
    order and not allowed in ``ALLOWED_UPWARD``."""
    found = []
    for module, target in sorted(edges):
        layer, may_use = layer_of(module)
        target_layer, _ = layer_of(target)
        if may_use is not None and target_layer not in may_use and (module, target) not in ALLOWED_UPWARD:
            found.append((module, target, f"{layer} may not use {target_layer}"))
    return found


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


def all_imports():
    """Every ``(module, target)`` import between modules of the package, at module level or in a function."""
    known = modules()
    return {(name, target) for name, (path, is_package) in known.items()
            for target, _ in imports(name, path, is_package, known)}


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


def test_the_parser_sees_imports_inside_functions_and_import_module_calls(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import importlib\n\ndef f():\n    from accelops.ops import registry\n"
                      "    importlib.import_module('accelops.runtime.engine')\n")
    known = modules()
    assert set(imports("accelops.accelerator.probe", source, False, known)) == {
        ("accelops.ops.registry", False), ("accelops.runtime.engine", False)}
    assert ("accelops.accelerator.torch_device", "accelops.op_builder") in all_imports()


def test_the_layer_check_finds_an_upward_import():
    assert layer_violations({("accelops.op_builder.jit_cache", "accelops.ops.loader"),
                             ("accelops.launcher.cli", "accelops.runtime.engine"),
                             ("accelops.report.verify", "accelops.runtime.engine"),
                             ("accelops.ops.loader", "accelops.op_builder.builder")}) == [
        ("accelops.launcher.cli", "accelops.runtime.engine", "launcher may not use engine"),
        ("accelops.op_builder.jit_cache", "accelops.ops.loader", "op build engine may not use ops")]


def test_every_import_follows_the_layer_order():
    """Module-level and function-level imports alike: a function-level import that climbs the layers is the
    same dependency, only later."""
    found = layer_violations(all_imports())
    assert not found, "\n".join(f"{module} imports {target}: {why}" for module, target, why in found)


def test_every_allowed_exception_is_still_used():
    unused = set(ALLOWED_UPWARD) - all_imports()
    assert not unused, f"remove these from ALLOWED_UPWARD, nothing imports that way any more: {sorted(unused)}"
