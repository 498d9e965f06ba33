"""The ``bigvol`` command: a thin layer over the Python API.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args)``; heavy modules
are imported inside the command. Errors caused by the user's input (:class:`BigvolError`)
print one line and exit with status 2, without a traceback. Logging is configured here
only, never on import of the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ._version import __version__
from .errors import BigvolError


def _voxel_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"), default=None,
        help="voxel size in nm (z = milling step, y, x = pixel size)",
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# -- info ---------------------------------------------------------------------------------
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a run store: arrays, voxel size, stages")
    p.add_argument("run", help="path of the run store (run.zarr)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from .store import Run

    info = Run.open(args.run).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    vs = info["voxel_size_nm"]
    print(f"run store    {info['path']}")
    print(f"voxel size   {'unknown' if vs is None else ' x '.join(f'{v:g}' for v in vs) + ' nm (z, y, x)'}")
    print(f"phases       {', '.join(f'{i}={n}' for i, n in enumerate(info['phases']))}")
    print(f"size on disk {_human_bytes(info['bytes_on_disk'])}")
    print("arrays:")
    for name, a in info["arrays"].items():
        state = "" if a["complete"] else "  INCOMPLETE"
        print(
            f"  {name:<16} {tuple(a['shape'])} {a['dtype']:<8} chunks {tuple(a['chunks'])}"
            f"  {_human_bytes(a['bytes_on_disk'])}{state}"
        )
    print("completed stages:" + ("" if info["stages"] else " none"))
    for name, when in info["stages"].items():
        print(f"  {name:<16} {when}")
    return 0


# Subcommands in the order ``bigvol --help`` lists them.
_COMMANDS = [_add_info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigvol",
        description="FIB-SEM volumes of battery electrodes -> 3-phase segmentation -> structure metrics",
    )
    parser.add_argument("--version", action="version", version=f"bigvol {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    try:
        return int(args.func(args) or 0)
    except BigvolError as e:
        print(f"bigvol {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bigvol {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
