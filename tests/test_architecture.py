"""The package is built in floors, and each floor keeps to its own rules.

Read from the source with `ast` (every import, including those inside
functions): lower floors never import higher ones, there is no import cycle,
no private Keras, and backend-specific code (a backend import or a question
about which backend runs) only in `kernels/`, `data/`, `distribute/` and
`weights/`.
"""

import ast
import os

import pytest

pytestmark = pytest.mark.backend_free

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_mae")

# Each subpackage's floor; a module may import its own subpackage and lower floors.
FLOORS = {
    "kernels": 0,
    "layers": 1,
    "weights": 1,
    "data": 1,
    "models": 2,
    "recipes": 3,
    "distribute": 3,
}
TOP = 4  # keras_mae/__init__.py and the top-level modules
BACKEND_PACKAGES = {"tensorflow", "torch", "jax", "jaxlib"}
BACKEND_AWARE = {"kernels", "data", "distribute", "weights"}


def modules():
    """`{dotted name: path}` of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports_of(path):
    """Every module name imported anywhere in the file (top level or in functions)."""
    tree = ast.parse(open(path).read(), filename=path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            # `from keras_mae import kernels` imports the module keras_mae.kernels;
            # `from keras_mae.layers import ViTBlock` the package keras_mae.layers.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            submodules = [name for name in submodules if name in MODULES]
            names.extend(submodules or [node.module])
    return names


def package_imports(module):
    """The keras_mae modules that `module` imports."""
    return {name for name in imports_of(MODULES[module]) if name in MODULES and name != module}


def floor(module):
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in FLOORS:
        return TOP
    return FLOORS[parts[1]]


def subpackage(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_subpackage_has_a_floor():
    subpackages = {
        name
        for name in os.listdir(PACKAGE)
        if os.path.isdir(os.path.join(PACKAGE, name)) and not name.startswith("__")
    }
    assert subpackages == set(FLOORS)


def test_top_of_the_package_is_small():
    top = sorted(m for m in MODULES if m.count(".") == 1 and subpackage(m) not in FLOORS)
    assert len(top) <= 2, top
    for module in top:
        assert sum(1 for _ in open(MODULES[module])) < 150, module


def test_lower_floors_never_import_higher_ones():
    violations = [
        f"{module} (floor {floor(module)}) imports {imported} (floor {floor(imported)})"
        for module in sorted(MODULES)
        for imported in sorted(package_imports(module))
        if subpackage(imported) != subpackage(module) and floor(imported) > floor(module)
    ]
    assert not violations, "\n".join(violations)


def test_no_import_cycle():
    graph = {module: package_imports(module) for module in MODULES}
    # A package's __init__ importing its own modules is not a cycle with them.
    for module, imported in graph.items():
        graph[module] = {m for m in imported if not module.startswith(m + ".")}
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(path + [module])
        state[module] = "open"
        for imported in sorted(graph[module]):
            visit(imported, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_no_private_keras():
    private = {
        module: [name for name in imports_of(path) if name.startswith("keras.src")]
        for module, path in MODULES.items()
    }
    assert not {m: names for m, names in private.items() if names}


def test_backend_specific_code_only_where_allowed():
    violations = []
    for module, path in sorted(MODULES.items()):
        if subpackage(module) in BACKEND_AWARE:
            continue
        imported = [n for n in imports_of(path) if n.split(".")[0] in BACKEND_PACKAGES]
        if imported:
            violations.append(f"{module} imports {imported}")
        if "backend.backend()" in open(path).read():
            violations.append(f"{module} asks which backend runs")
    assert not violations, "\n".join(violations)


def test_the_rules_catch_what_they_should(tmp_path):
    # The helpers see imports inside functions and from-imports of modules.
    path = tmp_path / "sample.py"
    path.write_text("def f():\n    import torch\n    from keras_mae.models import mae_encoder\n")
    assert "torch" in imports_of(str(path))
    assert "keras_mae.models.mae_encoder" in imports_of(str(path))
    assert floor("keras_mae.recipes.finetune") > floor("keras_mae.models.mae_encoder")
