"""Expected failures: what went wrong, where (a file, a config field or a flag), what to do.

The command line (``cli.py``) prints one of these as two lines on stderr and exits with status 2:

    error: <what> (<where>)
    hint: <hint>                  (only where one helps)

with no traceback (``--verbosity=1`` or ``EAAU_TRACEBACK=1`` adds it). Any other exception is a bug
and keeps its traceback. Each kind is also a ``ValueError``, as these errors were before.

Most messages in this project are written as one string, ``"WHERE: WHAT"`` (the file or field
first), optionally followed by more lines of advice; ``UserError(message)`` splits such a string
at its first ``": "`` and first newline, so ``str(e)`` stays the message it always was.
"""

from __future__ import annotations

from typing import Optional


class UserError(Exception):
  """A failure a person can act on. ``where``: the file, config field or flag at fault."""

  def __init__(self, what: str, where: Optional[str] = None, hint: Optional[str] = None):
    if where is None:
      message = what
      first, _, more = what.partition("\n")
      head, sep, tail = first.partition(": ")
      where, what = (head, tail) if sep else (None, first)
      hint = hint or more.strip() or None
    else:
      message = f"{where}: {what}" + (f"\n{hint}" if hint else "")
    super().__init__(message)
    self.what, self.where, self.hint = what, where, hint

  def lines(self) -> str:
    """What the command line prints: ``error: <what> (<where>)`` and maybe ``hint: ...``."""
    out = f"error: {self.what}" + (f" ({self.where})" if self.where else "")
    return out + (f"\nhint: {self.hint}" if self.hint else "")


class DataError(UserError, ValueError):
  """Bad input data: a missing, unreadable or inconsistent file; ``where`` is the file."""


class CheckpointError(UserError, ValueError):
  """A missing, unreadable or incompatible checkpoint (or released weights file)."""


class ConfigError(UserError, ValueError):
  """A config field or flag whose value cannot work; ``where`` names it."""

  def __init__(self, what: str, where: Optional[str] = None, hint: Optional[str] = None):
    super().__init__(what, where, hint)
    if self.hint is None and (self.where or "").startswith("config."):
      # Every field can be changed without editing a file: say how.
      self.hint = f"set it in the config file or override it: --{self.where}=VALUE"
