"""Reads a fum run's outputs with h5py, an HDF5 reader independent of the engine's, and checks
the SONATA spike-report layout against run.json: per population a `sorting` attribute that is
an HDF5 enum as libsonata reads it (none=0, by_id=1, by_time=2) saying by_time, timestamps
sorted and round (step x dt as written in decimal), uint64 node ids; probes' node ids uint64
too. Usage: check_sonata.py RUN_DIR"""
import json
import os
import sys

import h5py
import numpy as np

run = sys.argv[1]
report = json.load(open(f"{run}/run.json"))
dt = report["dt_ms"]
with h5py.File(f"{run}/spikes.h5", "r") as f:
    spikes = f["spikes"]
    total = 0
    for name, group in spikes.items():
        sorting = group.attrs.get_id("sorting")
        members = h5py.check_enum_dtype(sorting.dtype)
        assert members == {"none": 0, "by_id": 1, "by_time": 2}, members
        assert group.attrs["sorting"] == members["by_time"], group.attrs["sorting"]
        ts, ids = group["timestamps"][:], group["node_ids"][:]
        assert ts.dtype == np.float64 and ids.dtype == np.uint64, (ts.dtype, ids.dtype)
        assert group["timestamps"].attrs["units"] in ("ms", b"ms")
        assert len(ts) == len(ids) and np.all(np.diff(ts) >= 0)
        assert len(ts) == 0 or (ts.min() >= 0 and ts.max() < report["duration_ms"])
        # Round: the shortest decimal of each time has no more digits than dt's.
        digits = len(repr(dt).split(".")[1]) if "." in repr(dt) else 0
        assert all(len(repr(float(t)).split(".")[1]) <= digits for t in ts), ts[:10]
        assert name in report["rates_hz"], name
        total += len(ts)
    assert total == report["spikes_total"], (total, report["spikes_total"])
if os.path.exists(f"{run}/probes.h5"):
    with h5py.File(f"{run}/probes.h5", "r") as f:
        for name, group in f.items():
            if "node_ids" in group:
                assert group["node_ids"].dtype == np.uint64, (name, group["node_ids"].dtype)
print(f"{run}: SONATA spikes.h5 read by h5py: {total} spikes, consistent with run.json")
