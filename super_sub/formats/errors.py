"""The two errors of the file formats: a delta that cannot be made or applied, a bad bundle."""

from super_sub.errors import SuperSubError


class DeltaError(SuperSubError, ValueError):
  """A model or delta that cannot be diffed or rebuilt; the message says which and why."""


class BundleError(SuperSubError, ValueError):
  """A bundle that is malformed, incomplete or altered; the message names the file."""
