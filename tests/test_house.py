"""House rules: layers tools -> flare -> seg, and inside tools rooms that import only themselves, the
shared modules and the rooms they are listed to use; jobs ship flare + seg only; the layout table of
docs/design.md names every module; no module longer than 400 lines, no function longer than 80."""

import ast
from pathlib import Path

import pytest
from fedgin.tools.federation.jobs import SHIPPED, build_job
from fedgin.tools.files import PACKAGE_DIR
from helpers import REPO

LOWER = {"seg": set(), "flare": {"seg"}, "tools": {"seg", "flare"}}
# tools/ is one room per kind of user; its other modules (cli_options, job_folder, files, ...) are shared.
ROOMS = ("federation", "trained_model", "data", "study")
# The only arrows between rooms, each with its reason; they point one way (no room uses study).
ROOM_USES = {
    "study": {
        "federation": "the demo and the study build jobs and run them in the FLARE simulator",
        "data": "the demo's and the study's default sites are phantoms",
    },
}


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


def _tools_part(name: str) -> str | None:
    """``fedgin.tools.federation.poc`` -> ``federation``; ``fedgin.tools.files`` -> ``files``."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "tools" else None


def _shared_tools_modules() -> list[Path]:
    return sorted(
        p for p in (PACKAGE_DIR / "tools").rglob("*.py") if p.relative_to(PACKAGE_DIR / "tools").parts[0] not in ROOMS
    )


@pytest.mark.parametrize("room", ROOMS)
def test_a_tools_room_imports_only_itself_the_shared_modules_and_the_rooms_it_uses(room):
    allowed = {room, *ROOM_USES.get(room, {})}
    wrong = []
    for path in sorted((PACKAGE_DIR / "tools" / room).rglob("*.py")):
        for name in _fedgin_imports(path):
            part = _tools_part(name)
            if part == "cli" or (part in ROOMS and part not in allowed):
                wrong.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not wrong, wrong
    assert (PACKAGE_DIR / "tools" / room / "commands.py").is_file(), f"{room} has no commands.py"


def test_rooms_use_each_other_one_way_only():
    assert set(ROOM_USES) <= set(ROOMS) and all(set(used) <= set(ROOMS) for used in ROOM_USES.values())
    assert [(a, b) for a in ROOM_USES for b in ROOM_USES[a] if a in ROOM_USES.get(b, {}) or a == b] == []


def test_the_shared_tools_modules_import_no_room_and_cli_only_the_rooms_commands():
    wrong = []
    for path in _shared_tools_modules():
        for name in _fedgin_imports(path):
            part = _tools_part(name)
            if part not in ROOMS and part != "cli":
                continue
            # cli.py assembles the rooms' commands modules (``from fedgin.tools.data import commands``).
            is_commands = name == f"fedgin.tools.{part}" or name.endswith("commands")
            if not (path.name == "cli.py" and part in ROOMS and is_commands):
                wrong.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not wrong, wrong


def test_the_test_doubles_import_only_what_ships_with_them():
    # A job that names a test double ships fedgin.tools.testing and tools/__init__.py, no other tools module.
    wrong = []
    shipped = [PACKAGE_DIR / "tools/__init__.py", *sorted((PACKAGE_DIR / "tools/testing").rglob("*.py"))]
    for path in shipped:
        for name in _fedgin_imports(path):
            if name.split(".")[1] not in ("seg", "flare") and not name.startswith("fedgin.tools.testing"):
                wrong.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not wrong, wrong


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


def test_the_design_pages_layout_table_names_every_module():
    design = (REPO / "docs" / "design.md").read_text()
    table = design[design.index("## Layout") : design.index("## How our code reaches the sites")]
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
    assert not missing, f"docs/design.md's layout table does not name {missing}"


MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_400_lines():
    lengths = {str(p.relative_to(PACKAGE_DIR)): len(p.read_text().splitlines()) for p in PACKAGE_DIR.rglob("*.py")}
    long = sorted(f"{rel} ({n} lines)" for rel, n in lengths.items() if n > MAX_MODULE_LINES)
    assert not long, long


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
