"""nginx as the floor of what relaying costs: one process in front of the fake upstream, for the
benches that measure quartchat against it (gateway_bench.py, peers_bench.py)."""

from __future__ import annotations

from pathlib import Path

from relay_bench import HOST


def nginx_conf(prefix: Path, port: int, uport: int, connections: int) -> str:
    """One nginx process in front of the fake upstream, as lean as a relay can be: no access
    log, unbuffered responses (each chunk goes on as it comes), keep-alive to the upstream."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_rlimit_nofile {4 * connections + 1024};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections {2 * connections + 512}; }}
http {{
    access_log off;
{temp}
    upstream fake {{ server {HOST}:{uport}; keepalive 1024; }}
    server {{
        listen {HOST}:{port} backlog=4096;
        # The load generator keeps its connections for the whole phase; nginx would close each
        # after 1000 requests (the harness does not reconnect).
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_argv(binary: str, prefix: Path, port: int, uport: int, connections: int) -> list[str]:
    """Write nginx_conf() into `prefix` (an empty directory of its own) and return how to start
    nginx with it, in the foreground, on HOST:port in front of the upstream on HOST:uport."""
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, uport, connections))
    return [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
