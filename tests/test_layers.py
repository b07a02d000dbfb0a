"""The layers import one way: DataModules serve events and neither fit baselines nor draw; tasks never read
DataModules. Checked on the source (every import statement, also those inside functions)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "numl"
FORBIDDEN = {
    "data": ("numl.baselines", "numl.tasks", "numl.figures", "numl.pipeline", "matplotlib"),
    "tasks": ("numl.data", "numl.baselines", "numl.figures", "numl.pipeline", "matplotlib"),
}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_finds_nested_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from numl.baselines import next as blob_cut\n    import matplotlib\n")
    assert {"os", "numl.baselines", "matplotlib"} <= imported_modules(source)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    modules = sorted((PACKAGE / layer).glob("*.py"))
    assert modules, f"no modules under numl/{layer}"
    offending = [f"{path.relative_to(PACKAGE.parent)} imports {name}" for path in modules
                 for name in sorted(imported_modules(path))
                 if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[layer])]
    assert not offending, "\n".join(offending)
