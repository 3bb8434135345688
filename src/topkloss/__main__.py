"""``topkloss`` command line: ``python -m topkloss demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="topkloss", description="topkloss command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small classifier with top-k losses")
    from .demo import add_arguments

    add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run

        return run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
