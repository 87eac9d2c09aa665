"""Reads a fum run's outputs with h5py, an HDF5 reader independent of the engine's, and checks
the SONATA spike-report layout against run.json. Usage: check_sonata.py RUN_DIR"""
import json
import sys

import h5py
import numpy as np

run = sys.argv[1]
report = json.load(open(f"{run}/run.json"))
with h5py.File(f"{run}/spikes.h5", "r") as f:
    spikes = f["spikes"]
    assert spikes.attrs["sorting"] in ("by_time", b"by_time"), spikes.attrs["sorting"]
    total = 0
    for name, group in spikes.items():
        ts, ids = group["timestamps"][:], group["node_ids"][:]
        assert ts.dtype == np.float64 and ids.dtype == np.uint64, (ts.dtype, ids.dtype)
        assert group["timestamps"].attrs["units"] in ("ms", b"ms")
        assert len(ts) == len(ids) and np.all(np.diff(ts) >= 0)
        assert ts.min() >= 0 and ts.max() < report["duration_ms"]
        assert name in report["rates_hz"], name
        total += len(ts)
    assert total == report["spikes_total"], (total, report["spikes_total"])
print(f"{run}: SONATA spikes.h5 read by h5py: {total} spikes, consistent with run.json")
