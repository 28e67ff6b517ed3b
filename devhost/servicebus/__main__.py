"""`python -m devhost.servicebus --port <port> --data-dir <dir> --config <file>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devhost.cli import configure_logging
from devhost.servicebus.config import ConfigError, load_config
from devhost.servicebus.server import DEFAULT_KEY, DEFAULT_KEY_NAME, ServerOptions, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.servicebus", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="serve the management API (ServiceBusAdministrationClient) on this port (the "
        "official emulator uses 5300); default: none",
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "servicebus.config.json",
    )
    parser.add_argument("--sas-key-name", default=DEFAULT_KEY_NAME)
    parser.add_argument("--sas-key", default=DEFAULT_KEY)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    serve(
        ServerOptions(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            config=config,
            key_name=args.sas_key_name,
            key=args.sas_key,
            admin_port=args.admin_port,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
