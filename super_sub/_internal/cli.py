"""The one start-up of super-sub's absl entry points (flags stay in the entry points).

`run(main)` gives every command the same behaviour: --help lists the command's own flags
(and imports no TensorFlow, as long as the entry module imports it only inside main);
TensorFlow's and LiteRT's C++ start-up lines are hidden (native_logs; SUPER_SUB_TF_LOGS=1
or --verbosity=0 shows them); a user mistake ends in one line `<prog>: error: <message>`
with no traceback; old flag spellings still work, with one line naming the new one.
"""

import importlib.util
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging

from super_sub._internal import native_logs
from super_sub.errors import SuperSubError


class UsageError(SuperSubError, ValueError):
  """A user mistake (a bad path, flag value or input file): the command prints its message as
  one line, with no traceback, and exits with status 2. The message names the problem and
  the fix."""


# Flags renamed for one vocabulary across the commands: old spelling -> new name.
# An old spelling is rewritten where a command defines the new name and not the old one.
RENAMED = {"out": "output", "export_dir": "output", "k": "soft_k"}

# Errors from outside super-sub that mean "your input or command line is wrong", by class
# (module and name, so that listing them imports nothing): the command prints the message and
# exits with the status given (2: a usage error; 1: the command could not finish). super-sub's
# own are the SuperSubErrors, which carry their status (`exit_status`).
USER_ERRORS = {
    "absl.app.UsageError": 2,
    "absl.flags._exceptions.Error": 2,
    # TFDS: an unknown dataset name, a manual download that is missing.
    "tensorflow_datasets.core.registered.DatasetNotFoundError": 2,
    "tensorflow_datasets.core.download.download_manager.NonMatchingChecksumError": 1,
    # A user's path: missing, a file for a folder or the reverse, not readable.
    "builtins.FileNotFoundError": 2,
    "builtins.NotADirectoryError": 2,
    "builtins.IsADirectoryError": 2,
    "builtins.PermissionError": 2,
    "builtins.FileExistsError": 2,
}

_DATASET_NOT_FOUND = "tensorflow_datasets.core.registered.DatasetNotFoundError"
_HELP = {"--help", "-help", "-h", "-?", "--helpshort", "-helpshort"}
_HELPFULL = {"--helpfull", "-helpfull"}
_LOGS_NOTE = ("\nTensorFlow's and LiteRT's start-up log lines are hidden; SUPER_SUB_TF_LOGS=1\n"
              "(or --verbosity=0, or TF_CPP_MIN_LOG_LEVEL=0) shows them.\n")


def prog() -> str:
  """The command's name as the user typed it (super-sub-train, ...)."""
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "super-sub"


def user_error_status(error: BaseException) -> int | None:
  """The exit status for an error that is the user's to fix (a SuperSubError, or a foreign
  class in USER_ERRORS), else None: an internal error, which keeps its traceback."""
  if isinstance(error, SuperSubError):
    return error.exit_status
  for cls in type(error).__mro__:
    status = USER_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
    if status is not None:
      return status
  return None


def message(error: BaseException) -> str:
  """The error's message for one line: an OSError as 'reason: path', not '[Errno 2] ...'; an
  unknown TFDS name without TFDS's list of every dataset it has."""
  if isinstance(error, OSError) and error.strerror and error.filename is not None:
    return f"{error.strerror}: {error.filename}"
  text = str(error) or type(error).__name__
  if any(f"{c.__module__}.{c.__qualname__}" == _DATASET_NOT_FOUND for c in type(error).__mro__):
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "datasets")
    ours = sorted(n for n in os.listdir(folder) if not n.startswith(("_", ".")))
    text = f"{text.splitlines()[0]} super-sub's datasets: {', '.join(ours)}"
  return text


def rename_old_flags(argv: list[str], defined, warn=None) -> list[str]:
  """argv with the RENAMED old spellings (--out=X, --out X, --k=2) turned into the new names,
  where `defined` (flag names) holds the new name and not the old; one line per old spelling
  goes to `warn` (default: stderr). Arguments after "--" are left alone."""
  warn = warn or (lambda line: print(line, file=sys.stderr))
  out, told = list(argv[:1]), set()
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      out.extend(argv[i:])
      break
    match = re.fullmatch(r"(--?)(\w+)(=.*)?", arg, re.DOTALL)
    if match and match.group(2) in RENAMED:
      old, new = match.group(2), RENAMED[match.group(2)]
      if new in defined and old not in defined:
        arg = f"{match.group(1)}{new}{match.group(3) or ''}"
        if old not in told:
          warn(f"{prog()}: --{old} is deprecated; use --{new}")
          told.add(old)
    out.append(arg)
  return out


def _adopt_key_flags(module) -> None:
  """Makes `module`'s flags the key flags of the program that --help describes: absl shows the
  main module's, and a console script's main module (its generated wrapper) defines none."""
  fv = flags.FLAGS
  for flag in fv.get_key_flags_for_module(module.__name__):
    fv.register_key_flag_for_module(sys.argv[0], flag)
  main_module = sys.modules.get("__main__")
  if main_module is not None and main_module is not module and not main_module.__doc__:
    main_module.__doc__ = module.__doc__  # the usage lines --help prints first
  if main_module is not None and main_module.__doc__ and _LOGS_NOTE not in main_module.__doc__:
    main_module.__doc__ = main_module.__doc__.replace("%", "%%") + _LOGS_NOTE


def _parse(argv: list[str]) -> list[str]:
  """absl's flag parsing, with --help exiting 0 (absl exits 1) and a bad flag reported as one
  line with status 2."""
  before_dashes = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if _HELP & set(before_dashes) or _HELPFULL & set(before_dashes):
    full = bool(_HELPFULL & set(before_dashes))
    app.usage(shorthelp=not full, writeto_stdout=True)
    if not full:
      print("Try --helpfull to get a list of all flags.")
    sys.exit(0)
  argv = rename_old_flags(argv, set(flags.FLAGS))
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    required = re.fullmatch(r"flag --(\w+)=None: Flag --\1 must have a value other than None\.",
                            text)
    text = f"--{required.group(1)} is required" if required else text
    print(f"{prog()}: error: {text} (--help lists the flags)", file=sys.stderr)
    sys.exit(2)


class MissingExtraError(SuperSubError, ImportError):
  """A training-side command run where only the edge runtime is installed: its message says
  which extra to install."""
  exit_status = 1


def run(main, needs_training_extra: bool = False) -> None:
  """`app.run(main)` with the behaviour of every super-sub command (module docstring).

  The absl log level is WARNING unless --verbosity is given: TFDS logs every file it reads at
  INFO, which drowns Keras's progress lines. (Setting the --verbosity default before app.run
  does not reach absl's logging level.)

  `needs_training_extra`: the command trains, evaluates, exports or analyses, so it needs
  TensorFlow; where only the edge runtime is installed, --help still works and any other use
  ends in one line saying what to install (`require_training_extra`).
  """
  _adopt_key_flags(sys.modules[main.__module__])

  def quiet_main(argv):
    asked = flags.FLAGS["verbosity"].present
    if not asked:
      logging.set_verbosity(logging.WARNING)
    with native_logs.filtered_stderr(native_logs.min_level_to_hide(
        asked and flags.FLAGS.verbosity >= 0)):
      try:
        if needs_training_extra:
          require_training_extra()
        return main(argv)
      except Exception as e:  # pylint: disable=broad-except
        status = user_error_status(e)
        if status is None:
          raise
        print(f"{prog()}: error: {message(e)}", file=sys.stderr)
        sys.exit(status)
  app.run(quiet_main, flags_parser=_parse)


def require_training_extra() -> None:
  """Raises MissingExtraError saying how to install what the training side needs, where only
  the edge runtime is installed (no TensorFlow): before a command fails on its first import."""
  if importlib.util.find_spec("tensorflow") is None:
    raise MissingExtraError(
        "this super-sub command needs TensorFlow, which is not installed here (the base "
        "install is the edge runtime, for super-sub-predict). To train, evaluate, export or "
        "analyse: pip install 'super-sub[train]'")
