"""One canary per private name of a server library that quartchat reads
(quartchat/serving/adapters/): each fails, naming the name and the adapter module to fix, on the
upgrade that moves it."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import uvicorn
from hypercorn.asyncio import run as hypercorn_run
from hypercorn.asyncio.tcp_server import TCPServer
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


def moved(distribution: str, name: str, adapter: str) -> str:
    return (
        f"{distribution} {version(distribution)} moved {name}: "
        f"see quartchat/serving/adapters/{adapter}.py"
    )


def is_coroutine_function(cls: type, name: str) -> bool:
    return inspect.iscoroutinefunction(getattr(cls, name, None))


# hypercorn (quartchat/serving/adapters/hypercorn.py)


def test_hypercorn_worker_serve_builds_tcp_server_by_its_module_name() -> None:
    serve = inspect.getsource(hypercorn_run.worker_serve)
    ok = getattr(hypercorn_run, "TCPServer", None) is TCPServer
    ok = ok and "TCPServer(app, loop, config, context, lifespan_state, reader, writer)" in serve
    ok = ok and list(inspect.signature(TCPServer.__init__).parameters) == [
        *("self", "app", "loop", "config", "context", "state", "reader", "writer")
    ]
    assert ok, moved("hypercorn", "hypercorn.asyncio.run.TCPServer", "hypercorn")


def test_hypercorn_tcp_server_read_data() -> None:
    run = inspect.getsource(TCPServer.run)
    ok = is_coroutine_function(TCPServer, "_read_data") and "await self._read_data()" in run
    assert ok, moved("hypercorn", "TCPServer._read_data", "hypercorn")


def test_hypercorn_tcp_server_idle_timeout_and_idle_task() -> None:
    run = inspect.getsource(TCPServer.run)
    restart = "self.idle_task.restart(task_group, self._idle_timeout)"
    ok = is_coroutine_function(TCPServer, "_idle_timeout") and restart in run
    ok = ok and run.index(restart) < run.index("await self._read_data()")
    ok = ok and "self.idle_task = " in inspect.getsource(TCPServer.__init__)
    ok = ok and "self.config.keep_alive_timeout" in inspect.getsource(TCPServer._idle_timeout)
    assert ok, moved("hypercorn", "TCPServer._idle_timeout / idle_task", "hypercorn")


def test_hypercorn_tcp_server_initiate_server_close() -> None:
    ok = is_coroutine_function(TCPServer, "_initiate_server_close")
    assert ok, moved("hypercorn", "TCPServer._initiate_server_close", "hypercorn")


def test_hypercorn_tcp_server_run_and_protocol_send() -> None:
    ok = is_coroutine_function(TCPServer, "run") and is_coroutine_function(
        TCPServer, "protocol_send"
    )
    init = inspect.getsource(TCPServer.__init__)
    ok = ok and all(f"self.{name} = {name}" in init for name in ("config", "context", "writer"))
    assert ok, moved(
        "hypercorn", "TCPServer.run / protocol_send / config, context, writer", "hypercorn"
    )


# uvicorn (quartchat/serving/adapters/uvicorn.py)


def test_uvicorn_builds_its_http_protocol_from_the_configured_class() -> None:
    startup = inspect.getsource(uvicorn.Server.startup)
    ok = "config.http_protocol_class(" in startup
    ok = ok and all(f"{name}=" in startup for name in ("config", "server_state", "app_state"))
    ok = ok and list(inspect.signature(HttpToolsProtocol.__init__).parameters) == [
        *("self", "config", "server_state", "app_state", "_loop")
    ]
    assert ok, moved("uvicorn", "Server.startup's config.http_protocol_class(...)", "uvicorn")


def test_uvicorn_protocol_registers_its_connections_and_sets_transport() -> None:
    made = inspect.getsource(HttpToolsProtocol.connection_made)
    lost = inspect.getsource(HttpToolsProtocol.connection_lost)
    shutdown = inspect.getsource(uvicorn.Server.shutdown)
    ok = "self.connections.add(self)" in made and "self.transport = transport" in made
    ok = ok and "self.connections.discard(self)" in lost
    ok = ok and "self.server_state.connections" in shutdown
    assert ok, moved("uvicorn", "HttpToolsProtocol.connection_made/lost, transport", "uvicorn")


def test_uvicorn_protocol_starts_a_request_in_on_headers_complete() -> None:
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    ok = "self._start_asgi_task(" in source and "self.cycle = RequestResponseCycle(" in source
    assert ok, moved("uvicorn", "HttpToolsProtocol.on_headers_complete", "uvicorn")


def test_uvicorn_protocol_on_response_complete_and_cycle() -> None:
    source = inspect.getsource(HttpToolsProtocol.on_response_complete)
    ok = "if self.transport.is_closing():" in source and "self.pipeline.pop()" in source
    ok = ok and "self.on_response()" in inspect.getsource(RequestResponseCycle.send)
    ok = ok and "self.response_complete = " in inspect.getsource(RequestResponseCycle)
    assert ok, moved("uvicorn", "HttpToolsProtocol.on_response_complete / cycle", "uvicorn")


def test_uvicorn_protocol_closes_when_its_client_does() -> None:
    ok = inspect.getsource(HttpToolsProtocol.eof_received).rstrip().endswith("pass")
    assert ok, moved("uvicorn", "HttpToolsProtocol.eof_received (returns None)", "uvicorn")


def test_uvicorn_server_installs_its_signal_handlers_in_capture_signals() -> None:
    serve = inspect.getsource(uvicorn.Server.serve)
    capture = inspect.getsource(uvicorn.Server.capture_signals)
    ok = "with self.capture_signals():" in serve and "signal.signal(" in capture
    ok = ok and "signal.raise_signal(" in capture  # why it must not run: exit by the signal
    assert ok, moved("uvicorn", "Server.capture_signals", "uvicorn")


def test_uvicorn_server_stops_on_should_exit_without_force_exit() -> None:
    ok = "if self.should_exit:" in inspect.getsource(uvicorn.Server.on_tick)
    shutdown = inspect.getsource(uvicorn.Server.shutdown)
    ok = ok and "if not self.force_exit:" in shutdown and "timeout_graceful_shutdown" in shutdown
    ok = ok and "self.force_exit = True" not in inspect.getsource(uvicorn.Server._serve)
    assert ok, moved("uvicorn", "Server.should_exit", "uvicorn")
