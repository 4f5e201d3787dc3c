"""Child process for large reads: runs one read-only query through ADBC, writes Arrow IPC.

Run as `python -m schemewatch.arrow_reader DB_PATH` with {"sql": ..., "params": [...]} as JSON on
standard input. It lives in its own process because the ADBC driver links a private copy of
SQLite, and two copies in one process break each other's file locks.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa

    request = json.load(sys.stdin)
    with adbc.connect(f"file:{sys.argv[1]}?mode=ro") as conn, conn.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute(request["sql"], tuple(request["params"]))
        table = cursor.fetch_arrow_table()
    with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as writer:
        writer.write_table(table)


if __name__ == "__main__":
    main()
