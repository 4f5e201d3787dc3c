"""Thin wrapper: `python train.py ...` is `schemewatch train ...`."""

from schemewatch.cli import run_script

if __name__ == "__main__":
    run_script("train")
