"""Thin wrapper: `python live_feed_simulator.py ...` is `schemewatch feed ...`."""

from schemewatch.cli import run_script

if __name__ == "__main__":
    run_script("feed")
