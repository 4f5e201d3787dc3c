"""The `schemewatch` command line: a thin layer over the package.

Each command opens the database, calls one function and turns a SchemewatchError into one line
`Error: ...` with exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import click

from schemewatch.errors import SchemewatchError
from schemewatch.settings import Settings, load_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def friendly_errors(command):
    """Turn our typed errors into one clear line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SchemewatchError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def db_option(command):
    """--db PATH|URL, defaulting to settings (SCHEMEWATCH_DB or transactions.db)."""
    return click.option(
        "--db",
        "db_path",
        type=DatabaseLocation(),
        default=None,
        help="SQLite database file or postgresql://user@host/dbname [default: transactions.db]",
    )(command)


class DatabaseLocation(click.ParamType):
    """A SQLite file path or a postgresql:// URL."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        from schemewatch.store.engine import locate

        return locate(value)


def model_dir_option(command):
    """--model-dir DIR, defaulting to settings (SCHEMEWATCH_MODEL_DIR or modeling/)."""
    return click.option(
        "--model-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of trained models [default: modeling/]",
    )(command)


def settings_for(db_path: Path | None, model_dir: Path | None = None) -> Settings:
    return load_settings(db_path=db_path, model_dir=model_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="schemewatch")
def cli():
    """Schemewatch: audit direct-benefit-transfer welfare payments."""


@cli.command()
@click.option(
    "--transactions", "-n", type=click.IntRange(min=1), default=100_000, show_default=True
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--anomaly-rate",
    type=click.FloatRange(0, 0.5),
    default=0.01,
    show_default=True,
    help="Share of transactions that are injected fraud.",
)
@click.option(
    "--end-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last day (exclusive) of the generated year [default: 2026-10-31].",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--if-empty",
    is_flag=True,
    help="Do nothing (and succeed) when the database already holds data, e.g. for `make demo`.",
)
@db_option
@friendly_errors
def generate(transactions, seed, anomaly_rate, end_date, quiet, if_empty, db_path):
    """Fill a new database with a year of synthetic scheme payments and labelled fraud."""
    from tqdm import tqdm

    from schemewatch import generator, store

    settings = settings_for(db_path)
    conn = store.open_database(settings.db_path, busy_timeout_ms=settings.busy_timeout_ms)
    end = end_date.date() if end_date else generator.DEFAULT_END_DATE
    if if_empty and not generator.is_empty(conn):
        click.echo(f"{settings.db_path} already holds data; nothing generated.")
        return
    generator.check_empty(conn)
    if not quiet:
        click.echo(f"Building beneficiaries and a year of payments (seed {seed})...", err=True)
    with tqdm(total=transactions, unit="tx", disable=quiet, desc="storing", file=sys.stderr) as bar:
        summary = generator.generate(
            conn,
            transactions=transactions,
            seed=seed,
            anomaly_rate=anomaly_rate,
            end_date=end,
            progress=bar.update,
        )
    click.echo(format_generation_summary(summary, settings.db_path))


def format_generation_summary(summary, db_path: Path) -> str:
    """Human-readable summary of a generator run."""
    lines = [
        f"Wrote {summary.transactions:,} transactions for {summary.beneficiaries:,} beneficiaries "
        f"and {summary.payout_agents:,} payout agents to {db_path} in {summary.seconds:.1f} s "
        f"({summary.transactions / max(summary.seconds, 1e-9):,.0f} rows/s).",
        f"Injected anomalies: {sum(summary.anomalies.values()):,}",
    ]
    lines += [f"  {typology:<22} {count:>8,}" for typology, count in summary.anomalies.items()]
    return "\n".join(lines)


@cli.command()
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Transactions per second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds [default: run until Ctrl-C].",
)
@click.option("--anomaly-rate", type=click.FloatRange(0, 0.5), default=0.01, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for reproducible runs.")
@click.option("--quiet", is_flag=True, help="No running counts.")
@db_option
@friendly_errors
def feed(rate, duration, anomaly_rate, seed, quiet, db_path):
    """Stream new transactions for existing beneficiaries at a steady rate (live demo)."""
    from schemewatch import live_feed

    settings = settings_for(db_path)
    report = None if quiet else (lambda line: click.echo(line, err=True))
    totals = live_feed.run(
        settings.db_path,
        rate=rate,
        duration=duration,
        anomaly_rate=anomaly_rate,
        seed=seed,
        report=report,
        busy_timeout_ms=settings.busy_timeout_ms,
    )
    click.echo(
        f"Inserted {totals.transactions:,} transactions ({totals.anomalies:,} injected anomalies)."
    )


@cli.command(name="import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Load the valid rows; write rejected rows and reasons to a side file.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where rejected rows go with --skip-invalid [default: FILE.rejected.csv].",
)
@db_option
@friendly_errors
def import_(csv_file, skip_invalid, rejects, db_path):
    """Load a transaction extract (CSV); one bad row rejects the file unless --skip-invalid."""
    from schemewatch import importer, store

    settings = settings_for(db_path)
    conn = store.open_database(settings.db_path, busy_timeout_ms=settings.busy_timeout_ms)
    rejects = rejects or csv_file.with_name(csv_file.stem + ".rejected.csv")
    result = importer.import_csv(conn, csv_file, skip_invalid=skip_invalid, rejects_path=rejects)
    click.echo(
        f"{_rows(result.already_stored)} already stored, {result.imported:,} imported "
        f"({result.new_beneficiaries:,} new beneficiaries registered) from {csv_file}."
    )
    if result.rejected:
        click.echo(f"Rejected {_rows(result.rejected)}; see {rejects}.")


def _rows(count: int) -> str:
    return f"{count:,} row" if count == 1 else f"{count:,} rows"


@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First payment day (IST), inclusive.",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last payment day (IST), inclusive.",
)
@click.option("--scheme", default=None, help="Scheme code, e.g. PM_KISAN.")
@click.option("--state", default=None, help="Beneficiary's home state, e.g. 'Bihar'.")
@click.option(
    "--with-labels",
    is_flag=True,
    help="Add the generator's ground-truth label columns (evaluation only).",
)
@click.option("--force", is_flag=True, help="Replace FILE if it already exists.")
@db_option
@friendly_errors
def export(out_path, date_from, date_to, scheme, state, with_labels, force, db_path):
    """Write filtered transactions to CSV (mode 0600), streamed; never replaces without --force."""
    from schemewatch import exporter, store

    settings = settings_for(db_path)
    conn = store.connect(settings.db_path, readonly=True)
    filters = exporter.filters_from(
        date_from.date() if date_from else None, date_to.date() if date_to else None, scheme, state
    )
    count = exporter.export_csv(conn, out_path, filters, with_labels=with_labels, replace=force)
    click.echo(f"Exported {count:,} transactions to {out_path}.")


@cli.command()
@click.option(
    "--alert-budget",
    type=click.FloatRange(0.0001, 0.5),
    default=0.01,
    show_default=True,
    help="Share of training rows above the alert threshold.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 200),
    default=None,
    help="Most training epochs (early stopping on a validation share usually stops sooner).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--sample-rows",
    type=click.IntRange(min=100),
    default=2_000_000,
    show_default=True,
    help="Most rows the autoencoder is fitted on (a seeded sample stratified by scheme and "
    "month); the threshold and normal ranges always use every row.",
)
@click.option(
    "--if-needed",
    is_flag=True,
    help="Train only if there is no current model or it was trained on other features.",
)
@db_option
@model_dir_option
@friendly_errors
def train(alert_budget, epochs, seed, sample_rows, if_needed, db_path, model_dir):
    """Train the autoencoder on every stored transaction and save it as the current model."""
    from dataclasses import replace

    from schemewatch import modeling
    from schemewatch.detector import AutoencoderConfig

    settings = settings_for(db_path, model_dir)
    if if_needed:
        reason = modeling.why_train(settings.model_dir)
        if reason is None:
            click.echo("The current model fits this Schemewatch; not retraining.")
            return
        click.echo(f"Training: {reason}.", err=True)
    config = AutoencoderConfig(seed=seed)
    config = replace(config, epochs=epochs) if epochs else config
    card = modeling.train(
        settings.db_path,
        settings.model_dir,
        alert_budget=alert_budget,
        config=config,
        sample_rows=sample_rows,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"Trained model {card['version']} on {card['rows_fitted']:,} of {card['rows']:,} "
        f"transactions in {card['training_seconds']} s; threshold {card['threshold']:.4f} "
        f"({alert_budget:.1%} of all rows above it); "
        f"final loss {card['training_loss'][-1]:.4f}."
    )


@cli.command()
@click.option("--once", is_flag=True, help="Score everything pending, then exit (backfill).")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=0.25,
    show_default=True,
    help="Seconds between checks for new transactions.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=2_000_000,
    show_default=True,
    help="Most rows scored per tick.",
)
@click.option(
    "--claim-rows",
    type=click.IntRange(min=1, max=100_000),
    default=50_000,
    show_default=True,
    help="PostgreSQL: transactions a worker claims at a time.",
)
@click.option(
    "--claim-seconds",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="PostgreSQL: a claim not done by then is taken over by another worker.",
)
@click.option("--quiet", is_flag=True)
@db_option
@model_dir_option
@friendly_errors
def monitor(once, poll, batch_size, claim_rows, claim_seconds, quiet, db_path, model_dir):
    """Score every new transaction with the current model; pick up new models as they appear.

    On PostgreSQL any number of these may run, on one machine or many: each claims ranges of
    pending transactions and every row is scored exactly once.
    """
    from schemewatch import monitor as monitoring
    from schemewatch.store.engine import is_postgres_url

    settings = settings_for(db_path, model_dir)
    report = None if quiet else (lambda line: click.echo(line, err=True))
    scored = monitoring.run(
        settings.db_path,
        settings.model_dir,
        once=once,
        poll=poll,
        batch_size=batch_size,
        report=report,
        busy_timeout_ms=settings.busy_timeout_ms,
        **(
            {"claim_rows": claim_rows, "claim_seconds": claim_seconds}
            if is_postgres_url(settings.db_path)
            else {}
        ),
    )
    click.echo(f"Scored {scored:,} transactions.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--if-needed",
    is_flag=True,
    help="Evaluate only if the current model has no saved evaluation and the database has "
    "ground truth; otherwise say why not and succeed.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@db_option
@model_dir_option
@friendly_errors
def evaluate(as_json, if_needed, quiet, db_path, model_dir):
    """Compare the autoencoder with two baselines against the generator's ground truth."""
    import json

    from schemewatch import evaluation

    settings = settings_for(db_path, model_dir)
    if if_needed:
        reason = evaluation.why_not_evaluate(settings.db_path, settings.model_dir)
        if reason is not None:
            click.echo(f"Not evaluating: {reason}.")
            return
    report = evaluation.evaluate(
        settings.db_path,
        settings.model_dir,
        progress=None if as_json or quiet else (lambda line: click.echo(line, err=True)),
    )
    click.echo(json.dumps(report, indent=2) if as_json else evaluation.format_table(report))


@cli.command(name="copy")
@click.option("--from", "source", type=DatabaseLocation(), required=True, help="Database to copy.")
@click.option("--to", "target", type=DatabaseLocation(), required=True, help="New, empty database.")
@click.option("--quiet", is_flag=True)
@friendly_errors
def copy_command(source, target, quiet):
    """Copy a whole database, e.g. a SQLite file to PostgreSQL, and verify every table.

    Registry, transactions, ground truth, scores, cases, rules, accounts, audit log and summary
    are copied in one transaction; each table's row count and checksum are then compared, and
    the copy is written to the target's audit log.
    """
    from schemewatch import copying

    report = copying.copy_database(
        source,
        target,
        actor=_operator(),
        progress=None if quiet else (lambda line: click.echo(line, err=True)),
    )
    click.echo(
        f"Copied {report.rows:,} rows in {len(report.tables)} tables from {source} to {target} "
        f"in {report.seconds:.1f} s; row counts and checksums verified."
    )


@cli.command()
@click.option(
    "--anchor",
    default=None,
    help="A hash noted from an earlier verify; fail unless the chains still hold it.",
)
@db_option
@friendly_errors
def verify(anchor, db_path):
    """Check the audit log and case history chains and every sealed transaction batch."""
    from schemewatch import store
    from schemewatch.errors import IntegrityError

    settings = settings_for(db_path)
    conn = store.connect(settings.db_path, readonly=True)
    try:
        report = store.verify(conn, anchor=anchor)
    finally:
        conn.close()
    if not report.ok:
        raise IntegrityError("; ".join(report.problems))
    click.echo(store.summary_line(report))


@cli.group()
def users():
    """Manage dashboard accounts, kept in the database (bcrypt hashes, roles, lockouts)."""


def credentials_option(command):
    return click.option(
        "--credentials",
        "credentials_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="An old credentials file to move into the database once "
        "[default: credentials.yaml or $SCHEMEWATCH_CREDENTIALS]",
    )(command)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _operator() -> str:
    """Who ran an account command, for the audit log (the OS user)."""
    import getpass

    return f"cli:{getpass.getuser()}"


@contextlib.contextmanager
def _accounts(db_path: Path | None, credentials_path: Path | None):
    """The existing database (never created here), with any old credentials file moved in."""
    from schemewatch import users as accounts

    settings = load_settings(db_path=db_path, credentials_path=credentials_path)
    conn = accounts.open_accounts(settings.db_path)
    try:
        moved = accounts.import_credentials_file(conn, settings.credentials_path, actor=_operator())
        if moved is not None:
            click.echo(
                f"Moved {moved} accounts from {settings.credentials_path} into "
                f"{settings.db_path}. That file is no longer used; delete it.",
                err=True,
            )
        yield conn
    finally:
        conn.close()


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["auditor", "supervisor", "admin"]), required=True)
@click.option("--name", default=None, help="Display name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--random-password",
    is_flag=True,
    help="Make up a strong password and print it once (for demo accounts).",
)
@credentials_option
@db_option
@friendly_errors
def users_add(username, role, name, password_stdin, random_password, credentials_path, db_path):
    """Create an account."""
    from schemewatch import users as accounts

    with _accounts(db_path, credentials_path) as conn:
        password = accounts.random_password() if random_password else _read_password(password_stdin)
        accounts.add_user(conn, username, role, password, name, actor=_operator())
    click.echo(f"Added {role} '{username}'.")
    if random_password:
        click.echo(f"Password (shown only now): {password}")


@users.command("list")
@credentials_option
@db_option
@friendly_errors
def users_list(credentials_path, db_path):
    """List accounts and their roles."""
    from schemewatch import users as accounts

    with _accounts(db_path, credentials_path) as conn:
        listed = accounts.list_users(conn)
    if not listed:
        click.echo("No accounts yet; add one with `schemewatch users add`.", err=True)
    for username, role, name in listed:
        click.echo(f"{username:<24} {role:<12} {name}")


@users.command("remove")
@click.argument("username")
@credentials_option
@db_option
@friendly_errors
def users_remove(username, credentials_path, db_path):
    """Remove an account; its open dashboard sessions end at their next page load."""
    from schemewatch import users as accounts

    with _accounts(db_path, credentials_path) as conn:
        accounts.remove_user(conn, username, actor=_operator())
    click.echo(f"Removed '{username}'.")


@users.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@credentials_option
@db_option
@friendly_errors
def users_reset_password(username, password_stdin, credentials_path, db_path):
    """Give an account a new password; unlocks it and ends its open sessions."""
    from schemewatch import users as accounts

    with _accounts(db_path, credentials_path) as conn:
        accounts.reset_password(conn, username, _read_password(password_stdin), actor=_operator())
    click.echo(f"Password of '{username}' reset.")


@users.command("set-role")
@click.argument("username")
@click.option("--role", type=click.Choice(["auditor", "supervisor", "admin"]), required=True)
@credentials_option
@db_option
@friendly_errors
def users_set_role(username, role, credentials_path, db_path):
    """Give an account another role; its open sessions end."""
    from schemewatch import users as accounts

    with _accounts(db_path, credentials_path) as conn:
        accounts.change_role(conn, username, role, actor=_operator())
    click.echo(f"'{username}' is now {role}.")


# The `rules` group lives in its own module, which reuses the options above (so it is imported
# here, after them).
from schemewatch.cli_rules import rules  # noqa: E402

cli.add_command(rules)


def main(argv: list[str] | None = None) -> None:
    """Entry point for `schemewatch` and `python -m schemewatch`."""
    cli.main(args=argv, prog_name="schemewatch")


def run_script(command: str) -> None:
    """Entry point for the top-level scripts: `python generate_database.py ARGS`."""
    cli.main(args=[command, *sys.argv[1:]], prog_name=Path(sys.argv[0]).name)
