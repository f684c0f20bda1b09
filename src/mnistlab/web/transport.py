"""How the app is served: uvicorn behind two guards it lacks (a request head must arrive in time;
past a cap of open connections the oldest idle one is dropped), the open-file limit raised as
servers do, the port bound before saying where."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import MnistlabError
from .app import create_app

HEAD_TIMEOUT = 10.0  # seconds for a connection to send a request's head
MAX_CONNECTIONS = 512  # open connections before the oldest idle one is dropped for a new one
BACKLOG = 128  # pending connections; asyncio accepts up to this many at once, before any is seen


def _guarded_protocol(max_connections: int = MAX_CONNECTIONS, head_timeout: float = HEAD_TIMEOUT):
    """uvicorn's h11 protocol with the two limits it lacks: a request head must arrive within
    `head_timeout` seconds of connecting (or of the previous answer), else the connection is closed; and
    past MAX_CONNECTIONS open connections, the oldest idle one is closed for each new one. So
    half-sent requests can neither pile up nor run the process out of file descriptors."""
    import time

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._idle_since = time.monotonic()
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            self._head_timer = self.loop.call_later(head_timeout, self._head_timeout)

        def _head_timeout(self) -> None:
            if not self._busy() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > max_connections:
                idle = [c for c in self.connections if c is not self and not c._busy() and not c.transport.is_closing()]
                if idle:
                    min(idle, key=lambda c: c._idle_since).transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self._busy() and getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def on_response_complete(self) -> None:
            self._arm()
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def _connection_cap() -> int:
    """Raise the soft limit on open files to the hard one, as servers do, and keep the open
    connections far enough below it that a burst of BACKLOG accepts never runs out."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            soft = hard if hard != resource.RLIM_INFINITY else 65536
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, ValueError, OSError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - BACKLOG - 128))


def serve(
    run_dirs: list[Path] | None, host: str = "127.0.0.1", port: int = 8000, head_timeout: float = HEAD_TIMEOUT
) -> None:
    import socket

    import uvicorn

    if not 0 <= port <= 65535:
        raise MnistlabError(f"--port {port}: must be in 0..65535 (0: any free port)")
    if not (math.isfinite(head_timeout) and 1 <= head_timeout <= 300):
        raise MnistlabError(f"--head-timeout {head_timeout:g}: must be in 1..300 seconds")
    local = host in ("127.0.0.1", "localhost", "::1")
    hosts = None if local else ["*"] if host in ("0.0.0.0", "::") else [host, "localhost", "127.0.0.1"]
    app = create_app(run_dirs, allowed_hosts=hosts)
    names = ", ".join(app.state.served.runs)
    cap = _connection_cap()
    # Bound here, before saying where: a port in use is one line, and port 0 is said as the
    # port the system gave.
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as e:
        raise MnistlabError(f"cannot serve at {host}:{port} ({e.strerror or e})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"mnistlab: serving {names} at http://{shown}:{bound}/ (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(
        app, log_level="warning", http=_guarded_protocol(cap, head_timeout), backlog=BACKLOG, timeout_keep_alive=5
    )
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["serve"]
