"""The package's layers import one way: each module imports only its own layer and the layers below
it (README, "How the code is laid out"), module-level and function-level imports alike."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge_runtime"
# lowest first; edge_runtime/errors.py and the package's __init__ are shared by all
ORDER = ["engine", "formats", "text", "model", "board", "serve", "assist", "training", "cli"]
SHARED = {"errors", "__init__", "__main__"}


def layer_of(parts):
    """The layer of edge_runtime.<parts...>, or None for the shared modules."""
    head = parts[0] if parts else "__init__"
    if head in SHARED or head == "models" or head == "device_configs":
        return None
    return head if head in ORDER else "cli"


def imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_every_import_points_down():
    wrong = []
    modules = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx"))
    assert len(modules) > 50
    for path in modules:
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        own = layer_of(rel)
        if own is None or path.suffix == ".pyx":
            continue
        for line, name in imports(path):
            if not name.startswith("edge_runtime.") and name != "edge_runtime":
                continue
            target = layer_of(name.split(".")[1:])
            if target is not None and ORDER.index(target) > ORDER.index(own):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {name} ({target})")
    assert not wrong, "imports that point up a layer:\n" + "\n".join(wrong)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from edge_runtime.assist.home import Home\n")
    assert [n for _, n in imports(bad)] == ["edge_runtime.assist.home"]
    assert ORDER.index(layer_of(["assist"])) > ORDER.index(layer_of(["model"]))
