"""``python -m polarity ...`` and the ``polarity`` command.

The command line is imported inside ``run`` so that a Ctrl-C while it is still being imported
(torch takes seconds on a loaded machine) also ends with one line and status 130."""
import sys


def run() -> int:
    try:
        from .cli import main
    except BaseException as e:
        while e is not None and not isinstance(e, KeyboardInterrupt):
            e = e.__cause__ or e.__context__     # an import may wrap the interrupt
        if e is None:
            raise
        print("polarity: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
