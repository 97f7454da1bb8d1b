"""``cipherpost-server``: run the relay with uvicorn; ``cipherpost-server admin ...`` is
``cipherpost-admin ...`` (docs/operations.md)."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

import uvicorn

from . import native
from .app import create_app
from .settings import Settings
from .ws_protocol import RelayWebSocketProtocol


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load settings, serve."""
    args_given = sys.argv[1:] if argv is None else argv
    if args_given[:1] == ["admin"]:
        from .admin_cli import cli
        cli.main(args=args_given[1:], prog_name="cipherpost-server admin")
        return
    parser = argparse.ArgumentParser(prog="cipherpost-server",
                                     description="Run the Cipherpost relay.")
    parser.add_argument("--config", help="TOML settings file (else CIPHERPOST_CONFIG)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8080)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except (OSError, ValueError) as exc:
        sys.exit(f"cipherpost-server: {exc}")
    host = args.host or settings.host
    port = args.port or settings.port
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if bool(settings.tls_certfile) != bool(settings.tls_keyfile):
        sys.exit("cipherpost-server: set both tls_certfile and tls_keyfile, or neither")
    logging.getLogger("cipherpost.server").info("per-message modules: %s", native.status)
    app = create_app(settings)
    _tune_gc()
    uvicorn.run(app, host=host, port=port, access_log=False,
                ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile,
                # uvicorn's "websockets-sansio", less work per frame (see ws_protocol)
                ws=RelayWebSocketProtocol, ws_max_size=1024 * 1024, ws_per_message_deflate=False,
                # X-Forwarded-For is believed from settings.trusted_proxies only (the
                # relay's client_ip), not from whatever uvicorn trusts by default.
                proxy_headers=False,
                log_level=settings.log_level.lower())


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the delivery path.

    Everything built so far (modules, the app, its routes and models) lives as long as
    the process: frozen, a full collection no longer walks it. A collection of the
    youngest generation ran every 700 container allocations, a few times per relayed
    message, each walking whatever was in flight at the time (pending commits, frames,
    futures): a backlog made every collection slower, and the slowdown grew the backlog.
    Almost everything per message is freed by reference counting, so collecting a
    hundred times less often leaves memory as it is."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


if __name__ == "__main__":
    main()
