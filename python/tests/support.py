"""What the Python tests share: the repository's root, the `fum` binary they compare with
($FUM_BIN, else target/release/fum) and h5py, each skipping the test, saying why, where missing."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fum_binary():
    path = Path(os.environ.get("FUM_BIN", ROOT / "target" / "release" / "fum"))
    if not path.is_file():
        pytest.skip(f"no fum binary at {path} (cargo build --release, or set FUM_BIN)")
    return path


def h5py(why):
    """h5py, for `why` (what the test does with it)."""
    return pytest.importorskip("h5py", reason=f"h5py {why} (pip install h5py)")
