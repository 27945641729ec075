"""The command line's one convention for user errors, shared by every sub-command.

A user error is one line on stderr, ``polarity: error: <what is wrong and what to do>``, and exit
status 2, whichever sub-command (``run``, ``template``, ``source``, ``theory``, ...) and whether
argparse or the command found it.  A name that is not known is answered with the closest known
names (``did_you_mean``) before the list of all of them (``unknown``).  Standard library only: the
CLI imports it before torch.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Iterable, NoReturn

PROG = "polarity"
EXIT_USAGE = 2


class UsageError(ValueError):
    """A user error found by the command line itself (printed by ``error``, status 2)."""


def error(msg: object) -> int:
    """Print ``polarity: error: MSG`` (one line) on stderr; returns the exit status 2."""
    text = " ".join(str(msg).split())  # one line, whatever the message held
    try:
        print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed stderr must not turn a user error into a traceback
        pass
    return EXIT_USAGE


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (difflib's ratio >= 0.6; case-insensitive), best first."""
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[h] for h in hits]


def unknown(what: str, name: str, known: Iterable[str], *, context: str = "") -> str:
    """``unknown WHAT 'NAME'[ CONTEXT]; did you mean 'X'? known: a, b, c`` (no guess when none is close)."""
    known = list(known)
    close = did_you_mean(name, known)
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown {what} {name!r}{' ' + context if context else ''}; {guess}known: {', '.join(known)}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the convention: a bad command line is one ``polarity: error:`` line naming
    the sub-command and pointing at its ``--help``, status 2 (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        m = _INVALID_CHOICE.search(message)
        if m:  # argparse lists the choices but guesses none
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = did_you_mean(m.group(1), choices)
            if close:
                message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        sub = self.prog[len(PROG) + 1:] if self.prog.startswith(PROG + " ") else ""
        raise SystemExit(error(f"{sub + ': ' if sub else ''}{message} (see '{self.prog} --help')"))


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
