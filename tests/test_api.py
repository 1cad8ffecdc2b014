"""The public API: `import super_sub` stays light, and every advertised name resolves."""

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

import super_sub


def test_import_loads_no_tensorflow():
  """The edge runtime imports super_sub on devices without TensorFlow; so do the file formats
  and the run folder's layout, which training and the benchmarks share."""
  out = subprocess.run(
      [sys.executable, "-c",
       "import importlib, pkgutil, sys\n"
       "import super_sub, super_sub.runtime, super_sub.routing, super_sub.runs, super_sub.formats\n"
       "for m in pkgutil.iter_modules(super_sub.formats.__path__):\n"
       "  importlib.import_module('super_sub.formats.' + m.name)\n"
       "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
       "('tensorflow', 'tf_keras', 'keras', 'tensorflow_datasets', 'matplotlib'))\n"
       "print(heavy)"],
      capture_output=True, text=True, timeout=120, check=True)
  assert out.stdout.strip() == "[]", out.stdout


def test_every_public_name_resolves_to_its_module():
  for name in super_sub.__all__:
    value = getattr(super_sub, name)
    module, attribute = super_sub._API[name]  # pylint: disable=protected-access
    assert value is getattr(sys.modules[module], attribute), name
  assert set(super_sub.__all__) <= set(dir(super_sub))


def test_the_docstring_lists_every_public_name():
  """The module docstring is the API's table of contents: a name left out of it is hidden."""
  words = set(re.findall(r"\w+", super_sub.__doc__))
  missing = [name for name in super_sub._API if name not in words]  # pylint: disable=protected-access
  assert not missing, f"add to super_sub/__init__.py's docstring: {missing}"


def test_public_functions_have_one_name():
  """A public function is defined under the name users call it by (README: What is in the
  box), so that a traceback, the docs and the code all say the same name."""
  for name, (_, attribute) in super_sub._API.items():  # pylint: disable=protected-access
    assert attribute == name, f"{name} is defined as {attribute}"


def test_unknown_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
    super_sub.no_such_thing  # pylint: disable=pointless-statement


LIBRARY = pathlib.Path(super_sub.__file__).parent
BENCH = LIBRARY.parent / "bench"


def _imported_modules(tree: ast.AST, package: str) -> list[str]:
  """Every module a file imports (`from a import b` counts as a and a.b), relative ones made
  absolute against `package`."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      out += [base] + [f"{base}.{alias.name}" for alias in node.names]
  return out


@pytest.mark.parametrize("package", ["training", "bundles", "data", "models", "formats"])
def test_training_and_export_never_import_the_runtime(package):
  """The trainer and the exporter share the file formats with the runtime (super_sub.formats),
  never the runtime itself."""
  for path in sorted((LIBRARY / package).rglob("*.py")):
    modules = _imported_modules(ast.parse(path.read_text(encoding="utf-8")),
                                f"super_sub.{package}")
    bad = [m for m in modules if m == "super_sub.runtime" or m.startswith("super_sub.runtime.")]
    assert not bad, f"{path} imports {bad}"



def _private_uses(tree: ast.AST) -> list[str]:
  """Names with a leading underscore that a script takes from super_sub: in what it imports,
  and as attributes of names it imported from super_sub."""
  bound, out = set(), []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      module = node.module if isinstance(node, ast.ImportFrom) else None
      for alias in node.names:
        full = f"{module}.{alias.name}" if module else alias.name
        if full.split(".")[0] != "super_sub":
          continue
        out += [full] if any(p.startswith("_") for p in full.split(".")) else []
        bound.add(alias.asname or alias.name.split(".")[0])
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      root = node.value
      while isinstance(root, ast.Attribute):
        root = root.value
      if isinstance(root, ast.Name) and root.id in bound:
        out.append(f"{ast.unparse(node.value)}.{node.attr}")
  return out


def test_bench_scripts_use_only_public_names():
  scripts = sorted(BENCH.glob("*.py"))
  assert scripts
  for path in scripts:
    used = _private_uses(ast.parse(path.read_text(encoding="utf-8")))
    assert not used, f"{path.name} uses private names of super_sub: {used}"


def test_private_names_are_found():
  tree = ast.parse("from super_sub.runtime import predictor\n"
                   "from super_sub._internal import files\n"
                   "predictor._LiteModel(1)\n")
  assert _private_uses(tree) == ["super_sub._internal.files", "predictor._LiteModel"]


def test_the_commands_user_errors_list_only_foreign_classes():
  """cli.USER_ERRORS names classes by module and name (so listing them imports nothing), and
  only classes from outside super-sub: super-sub's own are SuperSubErrors, which carry their
  exit status."""
  from super_sub._internal import cli  # pylint: disable=import-outside-toplevel
  ours = [key for key in cli.USER_ERRORS if key.split(".")[0] == "super_sub"]
  assert not ours, f"make these SuperSubErrors instead: {ours}"


def test_every_public_error_is_a_super_sub_error():
  """A public error that is not a SuperSubError would end a command in a traceback."""
  names = [name for name in super_sub._API if name.endswith("Error")]  # pylint: disable=protected-access
  assert "HierarchyError" in names and "SuperSubError" in names
  for name in names:
    assert issubclass(getattr(super_sub, name), super_sub.SuperSubError), name


def test_every_error_class_in_the_library_is_a_super_sub_error():
  """The same for the errors that are not exported (UsageError, FindingsError, ...): every
  class in super_sub/ whose name ends in Error."""
  found = []
  for path in sorted(LIBRARY.rglob("*.py")):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = [node.name for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name.endswith("Error")]
    if not classes:
      continue
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    for name in classes:
      cls = getattr(importlib.import_module(module), name)
      assert issubclass(cls, super_sub.SuperSubError), f"{module}.{name}"
      found.append(name)
  assert {"UsageError", "MissingExtraError", "FindingsError", "UnknownConfigError",
          "UndecodableImageError"} <= set(found)