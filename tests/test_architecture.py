"""The package is built in floors, and each floor keeps to its own rules.

Read from the source with `ast` (every import, including those inside
functions): lower floors never import higher ones, there is no import cycle,
no private Keras (no `keras.src` import anywhere; outside `kernels/`, no
private attribute that is not the package's own), and backend-specific code
(a backend import or a question about which backend runs) only in
`kernels/`, `data/`, `distribute/` and `weights/`.
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


def is_private(name):
    """`_name` or `__name`, not a dunder such as `__class__`."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def assignment_targets(node):
    """The targets of an assignment statement, else `[]`."""
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def own_private_names(trees):
    """The private names the package defines itself: `def _name` and `class _Name`,
    `self._name = ...` (or `cls._name`) and class attributes `_name = ...`."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    targets = assignment_targets(statement)
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
            for target in assignment_targets(node):
                for part in ast.walk(target):
                    if (
                        isinstance(part, ast.Attribute)
                        and isinstance(part.value, ast.Name)
                        and part.value.id in ("self", "cls")
                    ):
                        names.add(part.attr)
    return {name for name in names if is_private(name)}


def private_accesses(tree):
    """`(line, name)` of every `x._name`, and of `getattr(x, "_name")` and its kin."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            yield node.lineno, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            yield node.lineno, node.args[1].value


def foreign_private_uses(trees, own):
    """`"path:line: name"` for each private access in `trees` (`{path: tree}`)
    whose name is not in `own`."""
    return [
        f"{path}:{line}: {name}"
        for path, tree in sorted(trees.items())
        for line, name in sorted(private_accesses(tree))
        if name not in own
    ]


def test_private_keras_only_in_kernels():
    # Keras' (or another library's) private attributes and methods live behind
    # named functions in keras_mae/kernels/ (keras_mae/kernels/compat.py for
    # the other subpackages), each with a comment naming the behaviour used.
    trees = {
        os.path.relpath(path, ROOT): ast.parse(open(path).read(), filename=path)
        for path in MODULES.values()
    }
    own = own_private_names(trees.values())
    outside = {
        path: tree
        for path, tree in trees.items()
        if not path.startswith(os.path.join("keras_mae", "kernels", ""))
    }
    violations = foreign_private_uses(outside, own)
    assert not violations, (
        "private attributes of another library outside keras_mae/kernels/ (move each "
        "behind a function in keras_mae/kernels/compat.py):\n" + "\n".join(violations)
    )


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


def test_the_private_rule_catches_what_it_should():
    sample = ast.parse(
        "class Table:\n"
        "    _rows = ()\n"
        "    def __init__(self):\n"
        "        self._count = 0\n"
        "    def _total(self):\n"
        "        return self._count + len(self._rows) + len(self.__class__.__name__)\n"
        "def gather(variable, optimizer, model):\n"
        "    variable._layout = None\n"
        "    index = optimizer._get_variable_index(variable)\n"
        "    return getattr(model, '_loss_tracker', None), index\n"
    )
    own = own_private_names([sample])
    assert own == {"_rows", "_count", "_total"}
    # `variable._layout = None` assigns to another library's object: not a definition.
    assert foreign_private_uses({"sample.py": sample}, own) == [
        "sample.py:8: _layout",
        "sample.py:9: _get_variable_index",
        "sample.py:10: _loss_tracker",
    ]
