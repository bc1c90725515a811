"""Registries: every plugin file registered itself; names are unique; unknown names fail in one line;
packaging lists every subpackage (the configs ship inside the wheel)."""
import ast
import pathlib
import tomllib

import pytest

from clpet.registry import BACKBONES, METHODS, SCENARIOS, Registry, UnknownNameError

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLUGIN_DIRS = {"methods": METHODS, "scenarios": SCENARIOS, "backbones": BACKBONES}
# shared helpers, not registry entries (and any private ``_name.py`` module)
# not plugins: shared bases, and conpet_lm (the task-incremental classes behind the names conpet.py registers)
NOT_PLUGINS = {"__init__.py", "base.py", "common.py", "images.py", "lm_base.py", "conpet_lm.py", "validation.py"}


def registered_names(path: pathlib.Path):
    """Names passed to ``@X.register("name")`` in a source file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.append(node.args[0].value)
    return names


@pytest.mark.parametrize("folder", sorted(PLUGIN_DIRS))
def test_every_plugin_file_registers_itself(folder):
    registry = PLUGIN_DIRS[folder]
    for path in sorted((ROOT / "clpet" / folder).glob("*.py")):
        if path.name in NOT_PLUGINS or path.name.startswith("_"):
            continue
        names = registered_names(path)
        assert names, f"{path.name} registers nothing"
        for name in names:
            assert name in registry, f"{path.name} declares '{name}' but importing clpet did not register it"


def test_duplicate_name_is_an_error():
    r = Registry("thing")
    r.register("a")(type("A", (), {}))
    with pytest.raises(ValueError, match="already registered"):
        r.register("a")(type("B", (), {}))


def test_unknown_name_is_one_line_with_the_closest():
    with pytest.raises(UnknownNameError) as info:
        METHODS.get("simplecl")
    msg = str(info.value)
    assert "did you mean 'simplecil'" in msg and "valid:" in msg and "\n" not in msg


def test_every_entry_has_a_config_dataclass_and_a_description():
    import dataclasses

    for registry in (METHODS, SCENARIOS, BACKBONES):
        for name in registry.names():
            entry = registry.get(name)
            assert dataclasses.is_dataclass(entry.Config), f"{registry.kind} {name}"
            assert registry.describe()[name], f"{registry.kind} {name} has no docstring"


def test_pyproject_lists_every_subpackage():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "clpet").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_every_yaml_names_a_registered_entry():
    import yaml

    for folder, registry in (("scenarios", SCENARIOS), ("methods", METHODS)):
        for path in sorted((ROOT / folder).glob("*.yaml")):
            data = yaml.safe_load(path.read_text())
            assert data.get("name") in registry, f"{path} names '{data.get('name')}'"
            assert path.read_text().startswith("#"), f"{path} needs a header comment (source, defaults)"
