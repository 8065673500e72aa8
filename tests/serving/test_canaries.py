"""One canary per private name of a server library that quartchat reads
(quartchat/serving/adapters/): each fails, naming the name and the adapter module to fix, on the
upgrade that moves it."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from hypercorn.asyncio import run as hypercorn_run
from hypercorn.asyncio.tcp_server import TCPServer


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
