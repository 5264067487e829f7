"""``bessai keys generate|show``: operator keys for signed dispatch commands.

``generate --out DIR [--name NAME]`` writes an Ed25519 key pair: ``DIR/NAME.key`` (the private
key, mode 0600: keep it with whoever sends commands, never on a gateway) and ``DIR/NAME.pub``
(copy it into each gateway's COMMAND_VERIFY_KEYS directory). ``show PATH`` prints a key's id
(from a .pub or a .key file) — never the key itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bessai.cli._lazy import load

if TYPE_CHECKING:
    from bessai.cli._common import Subcommands


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "keys",
        parents=[common],
        help="make and inspect operator keys for signed dispatch commands",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    gen = sub.add_parser("generate", parents=[common], help="write a new key pair")
    gen.add_argument("--out", required=True, type=Path, metavar="DIR",
                     help="directory for NAME.key (0600) and NAME.pub")
    gen.add_argument("--name", default="operator",
                     help="file name of the pair, e.g. dispatch-2026 (default: operator)")
    gen.set_defaults(func=run_generate)
    show = sub.add_parser("show", parents=[common], help="print a key file's key id")
    show.add_argument("path", type=Path, metavar="PATH", help="a .pub or .key file")
    show.set_defaults(func=run_show)


def run_generate(args: argparse.Namespace) -> int:
    generate = load("bessai.trust", "generate_key_pair", command="keys generate")
    pair = generate(args.out, args.name)
    print(f"key id:      {pair.key_id}")
    print(f"private key: {pair.private_path} (mode 0600; keep it with whoever signs commands, "
          "never on a gateway)")
    print(f"public key:  {pair.public_path} (copy it into each gateway's COMMAND_VERIFY_KEYS "
          "directory, then send SIGHUP)")
    print(f"sign with:   bessai command ... --sign-key {pair.private_path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    key_id = load("bessai.trust", "key_id", command="keys show")
    path: Path = args.path
    head = b""
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(64)
    if b"PRIVATE KEY" in head:
        public = load("bessai.trust", "load_private_key", command="keys show")(path).public_key()
        kind = "private"
    else:
        public = load("bessai.trust", "load_public_key", command="keys show")(path)
        kind = "public"
    print(f"{path}: {kind} key, key id {key_id(public)}")
    return 0
