"""One canary per private name of another library that quartchat reads (quartchat/adapters/):
each fails, naming the name and the adapter module to fix, on the upgrade that moves it."""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from typing import Any

import aiohttp
import aiosqlite
from aiohttp.client_proto import ResponseHandler
from prometheus_client import CollectorRegistry, Counter
from prometheus_client import values as prometheus_values
from quart.wrappers.request import Body
from sqlalchemy import JSON, Column, MetaData, String, Table, bindparam, select
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection, AsyncAdapt_dbapi_cursor
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from quartchat.adapters.sqlalchemy import PrefetchedCursor


def moved(distribution: str, name: str, adapter: str) -> str:
    return (
        f"{distribution} {version(distribution)} moved {name}: see quartchat/adapters/{adapter}.py"
    )


def slots(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in vars(klass).get("__slots__", ())}


def is_coroutine_function(cls: type, name: str) -> bool:
    return inspect.iscoroutinefunction(getattr(cls, name, None))


# SQLAlchemy (quartchat/adapters/sqlalchemy.py)

TABLE = Table("t", MetaData(), Column("k", String), Column("doc", JSON))


def compiled() -> SQLCompiler:
    statement = select(TABLE.c.k, TABLE.c.doc).where(TABLE.c.doc == bindparam("doc", type_=JSON))
    made = statement.compile(dialect=sqlite.dialect())
    assert isinstance(made, SQLCompiler)
    return made


def test_sqlalchemy_compiler_bind_processors() -> None:
    processors = getattr(compiled(), "_bind_processors", None)
    ok = isinstance(processors, dict) and callable(processors.get("doc"))
    assert ok, moved("sqlalchemy", "SQLCompiler._bind_processors", "sqlalchemy")


def test_sqlalchemy_compiler_result_columns() -> None:
    columns: Any = getattr(compiled(), "_result_columns", None)
    ok = isinstance(columns, list) and [(c.keyname, type(c.type)) for c in columns] == [
        ("k", String),
        ("doc", JSON),
    ]
    assert ok, moved("sqlalchemy", "SQLCompiler._result_columns", "sqlalchemy")


def test_sqlalchemy_type_cached_result_processor() -> None:
    method = getattr(TypeEngine, "_cached_result_processor", None)
    ok = callable(method) and list(inspect.signature(method).parameters) == [
        *("self", "dialect", "coltype")
    ]
    ok = ok and callable(JSON()._cached_result_processor(sqlite.dialect(), None))
    assert ok, moved("sqlalchemy", "TypeEngine._cached_result_processor", "sqlalchemy")


def test_sqlalchemy_asyncpg_adapter_transaction() -> None:
    ok = "_transaction" in slots(AsyncAdapt_asyncpg_connection)
    ok = ok and "if self._transaction is None" in inspect.getsource(AsyncAdapt_asyncpg_connection)
    assert ok, moved("sqlalchemy", "AsyncAdapt_asyncpg_connection._transaction", "sqlalchemy")


def test_sqlalchemy_asyncpg_adapter_start_transaction() -> None:
    ok = is_coroutine_function(AsyncAdapt_asyncpg_connection, "_start_transaction")
    assert ok, moved(
        "sqlalchemy", "AsyncAdapt_asyncpg_connection._start_transaction()", "sqlalchemy"
    )


def test_sqlalchemy_adapter_driver_connection() -> None:
    source = inspect.getsource(AsyncAdapt_dbapi_connection.__init__)
    ok = "_connection" in slots(AsyncAdapt_dbapi_connection) or (
        "self._connection = connection" in source
    )
    assert ok, moved("sqlalchemy", "AsyncAdapt_dbapi_connection._connection", "sqlalchemy")


def test_sqlalchemy_adapter_handle_exception() -> None:
    method = getattr(AsyncAdapt_dbapi_connection, "_handle_exception", None)
    ok = callable(method) and list(inspect.signature(method).parameters) == ["self", "error"]
    assert ok, moved("sqlalchemy", "AsyncAdapt_dbapi_connection._handle_exception", "sqlalchemy")


def test_sqlalchemy_adapter_cursor_cls() -> None:
    ok = isinstance(getattr(AsyncAdapt_aiosqlite_connection, "_cursor_cls", None), type)
    ok = ok and "self._cursor_cls(self)" in inspect.getsource(AsyncAdapt_dbapi_connection.cursor)
    assert ok, moved("sqlalchemy", "AsyncAdapt_dbapi_connection._cursor_cls", "sqlalchemy")


def test_sqlalchemy_cursor_slots_the_prefetched_cursor_sets() -> None:
    source = inspect.getsource(AsyncAdapt_dbapi_cursor.fetchall)
    ok = {"_adapt_connection", "_connection", "_rows"} <= slots(AsyncAdapt_dbapi_cursor)
    ok = ok and "self._rows" in source and issubclass(PrefetchedCursor, AsyncAdapt_dbapi_cursor)
    assert ok, moved(
        "sqlalchemy", "AsyncAdapt_dbapi_cursor._adapt_connection/_connection/_rows", "sqlalchemy"
    )


def test_sqlalchemy_cursor_async_soft_close() -> None:
    ok = is_coroutine_function(AsyncAdapt_dbapi_cursor, "_async_soft_close")
    assert ok, moved("sqlalchemy", "AsyncAdapt_dbapi_cursor._async_soft_close()", "sqlalchemy")


# aiosqlite (quartchat/adapters/aiosqlite.py)


def test_aiosqlite_connection_conn() -> None:
    ok = isinstance(inspect.getattr_static(aiosqlite.Connection, "_conn", None), property)
    assert ok, moved("aiosqlite", "Connection._conn", "aiosqlite")


def test_aiosqlite_connection_execute() -> None:
    method = getattr(aiosqlite.Connection, "_execute", None)
    ok = inspect.iscoroutinefunction(method) and list(inspect.signature(method).parameters) == [
        *("self", "fn", "args", "kwargs")
    ]
    assert ok, moved("aiosqlite", "Connection._execute", "aiosqlite")


# Quart (quartchat/adapters/quart.py)


def test_quart_body_complete() -> None:
    ok = isinstance(getattr(Body(None, None), "_complete", None), asyncio.Event)
    assert ok, moved("quart", "Body._complete", "quart")


# aiohttp (quartchat/adapters/aiohttp.py)


def test_aiohttp_response_connection_protocol() -> None:
    response_connection = inspect.getattr_static(aiohttp.ClientResponse, "connection", None)
    protocol = inspect.getattr_static(aiohttp.connector.Connection, "protocol", None)
    ok = isinstance(response_connection, property) and isinstance(protocol, property)
    assert ok, moved("aiohttp", "ClientResponse.connection.protocol", "aiohttp")


def test_aiohttp_response_handler_read_timeout() -> None:
    read_timeout = inspect.getattr_static(ResponseHandler, "read_timeout", None)
    ok = isinstance(read_timeout, property) and read_timeout.fset is not None
    assert ok, moved("aiohttp", "ResponseHandler.read_timeout", "aiohttp")


def test_aiohttp_response_handler_start_timeout() -> None:
    method = getattr(ResponseHandler, "start_timeout", None)
    ok = callable(method) and list(inspect.signature(method).parameters) == ["self"]
    ok = ok and "read_timeout" in inspect.getsource(ResponseHandler._reschedule_timeout)
    assert ok, moved("aiohttp", "ResponseHandler.start_timeout()", "aiohttp")


# prometheus_client (quartchat/adapters/prometheus.py)


def test_prometheus_client_metrics_make_their_values_with_values_value_class() -> None:
    made: list[str] = []

    class Counted(prometheus_values.MutexValue):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(args[2])  # the sample's name
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    before = prometheus_values.ValueClass
    prometheus_values.ValueClass = Counted
    try:
        Counter("canary", "A canary.", registry=CollectorRegistry())
    finally:
        prometheus_values.ValueClass = before
    ok = made == ["canary_total"] and callable(getattr(prometheus_values, "MultiProcessValue", 0))
    assert ok, moved("prometheus-client", "values.ValueClass / MultiProcessValue", "prometheus")
