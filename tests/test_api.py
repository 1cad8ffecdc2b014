"""The public API: `import super_sub` stays light, and every advertised name resolves."""

import subprocess
import sys

import pytest

import super_sub


def test_import_loads_no_tensorflow():
  """The edge runtime imports super_sub on devices without TensorFlow."""
  out = subprocess.run(
      [sys.executable, "-c",
       "import super_sub, super_sub.runtime, super_sub.routing, sys\n"
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


def test_unknown_name_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
    super_sub.no_such_thing  # pylint: disable=pointless-statement
