"""House rules: layers tools -> flare -> seg, jobs ship flare + seg only, the README names every module,
no function longer than 80 lines."""

import ast
from pathlib import Path

import pytest
from fedgin.tools.federation.jobs import SHIPPED, build_job
from fedgin.tools.files import PACKAGE_DIR
from helpers import REPO

LOWER = {"seg": set(), "flare": {"seg"}, "tools": {"seg", "flare"}}


def _fedgin_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("fedgin.")}


@pytest.mark.parametrize("layer", sorted(LOWER))
def test_a_layer_imports_only_the_layers_below_it(layer):
    wrong = []
    for path in sorted((PACKAGE_DIR / layer).rglob("*.py")):
        for name in _fedgin_imports(path):
            target = name.split(".")[1]
            if target != layer and target not in LOWER[layer]:
                wrong.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not wrong, wrong
    assert list((PACKAGE_DIR / layer).rglob("*.py")), f"no modules under {layer}"


def test_only_the_package_root_and_the_layers_sit_at_the_top():
    top = {p.name for p in PACKAGE_DIR.iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "__main__.py", "seg", "flare", "tools"}


def test_a_built_job_ships_flare_and_seg_and_test_doubles_only_when_named(tmp_path):
    job = build_job(REPO / "jobs" / "fedgin_abdomen", tmp_path / "job")
    shipped = sorted(p.name for p in (job / "app/custom/fedgin").iterdir())
    assert shipped == sorted(SHIPPED)
    faulty = build_job(
        REPO / "jobs" / "fedgin_abdomen",
        tmp_path / "faulty",
        executor_path="fedgin.tools.testing.faulty.FaultyExecutor",
    )
    tools = sorted(p.name for p in (faulty / "app/custom/fedgin/tools").iterdir())
    assert tools == ["__init__.py", "testing"]


def test_the_readme_layout_table_names_every_module():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout") : readme.index("## Commands")]
    missing = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.name in ("__init__.py", "__main__.py"):
            continue
        layer, *_ = rel.parts
        # A module is named by its path, by its name in its folder's row, or its folder's row names it.
        folder_row = f"`{layer}/{'/'.join(rel.parts[1:-1])}/`" if len(rel.parts) > 2 else None
        if f"`{rel}`" in table or f"`{rel.name}`" in table or (folder_row and folder_row in table):
            continue
        missing.append(str(rel))
    assert not missing, f"README layout table does not name {missing}"


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long
