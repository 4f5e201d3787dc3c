"""Child process for large reads: runs one read-only query through ADBC, writes Arrow IPC.

Run as `python -m schemewatch.arrow_reader DB_PATH` with {"sql": ..., "params": [...]} as JSON on
standard input. It lives in its own process because the ADBC driver links a private copy of
SQLite, and two copies in one process break each other's file locks.

It uses ADBC's low-level API: the DB-API layer imports pandas and pyarrow.dataset, which took
0.6 s of CPU in every child (a backfill starts one per chunk) against 0.2 s for this.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import adbc_driver_manager
    import adbc_driver_sqlite
    import pyarrow as pa

    request = json.load(sys.stdin)
    params = list(request["params"])
    with (
        adbc_driver_sqlite.connect(f"file:{sys.argv[1]}?mode=ro") as database,
        adbc_driver_manager.AdbcConnection(database) as conn,
    ):
        with adbc_driver_manager.AdbcStatement(conn) as statement:
            statement.set_sql_query("PRAGMA busy_timeout=10000")
            statement.execute_update()
        with adbc_driver_manager.AdbcStatement(conn) as statement:
            statement.set_sql_query(request["sql"])
            if params:
                names = [f"p{index}" for index in range(len(params))]
                statement.bind(pa.record_batch([[p] for p in params], names=names))
            stream, _ = statement.execute_query()
            table = pa.RecordBatchReader._import_from_c(stream.address).read_all()
    with pa.ipc.new_stream(sys.stdout.buffer, table.schema) as writer:
        writer.write_table(table)


def run() -> int:
    """main(), with a failure told as one line (the parent shows the last line it reads)."""
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - any failure becomes the parent's one clear error
        reason = " ".join(str(exc).split("\n", 1)[0].split())
        print(f"{type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
