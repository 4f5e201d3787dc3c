"""Thin wrapper: `python monitor.py ...` is `schemewatch monitor ...`."""

from schemewatch.cli import run_script

if __name__ == "__main__":
    run_script("monitor")
