"""``python -m mobileunet.commands.mediapipe fetch | status``: MediaPipe's two models into ``data/models/``.

The command half of ``mobileunet.mediapipe`` (``bash course.sh models`` runs
``fetch``); the library never imports this module. Exit status: 0 when the
models are in place, 1 when they could not be fetched (the message says why).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import mediapipe as mp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mobileunet.commands.mediapipe",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"pip download mediapipe=={mp.MEDIAPIPE_VERSION}, keep its two models")
    fetch.add_argument("--dest", type=Path, default=None, help="folder for the .tflite files (default: data/models)")
    fetch.add_argument("--force", action="store_true", help="download again even if both files are present")
    sub.add_parser("status", help="say which models are present and verified")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        for name, m in mp.MODELS.items():
            state = "present, sha256 ok" if mp.available(name) else "missing (or not the pinned file)"
            print(f"{name}: {mp.model_path(name)}: {state}")
        return 0 if all(mp.available(n) for n in mp.MODELS) else 1
    try:
        mp.fetch(args.dest, force=args.force)
    except mp.FetchError as err:
        print(f"[models] {err}\n[models] the course runs without them: lesson 08 keeps its cascade detector "
              f"and the MediaPipe benchmark rows are skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
