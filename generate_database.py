"""Thin wrapper: `python generate_database.py ...` is `schemewatch generate ...`."""

from schemewatch.cli import run_script

if __name__ == "__main__":
    run_script("generate")
