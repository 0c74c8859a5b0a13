#!/usr/bin/env python3
"""Where a decode step's GPU time goes, kernel by kernel: Nsight Compute's
duration of every kernel of a few steps (each kernel measured alone, so
launch gaps and PDL overlap are not in it), summed by kernel name and grid.
`bash dev/cuda/gpu.sh kernels` runs it:
  ncu --csv --metrics gpu__time_duration.sum --cache-control none --clock-control none \
      --launch-skip N --launch-count M kinfer bench decode ... --no-graphs > ncu.csv
  python3 dev/cuda/step_trace.py ncu.csv --steps 2
With graphs a step can take less than this sum (2026-11-30, 0.6B B32: 2.90 ms
against ~3.1 ms): PDL and graph launch overlap each kernel's start with the
previous one's end.
"""
import argparse, csv, collections, io, re

ap = argparse.ArgumentParser()
ap.add_argument("csv")
ap.add_argument("--steps", type=float, default=1.0, help="decode steps the profiled kernels cover")
a = ap.parse_args()
text = open(a.csv).read()
text = text[text.index('"ID"'):]  # skip the profiler's own lines
stat = collections.defaultdict(lambda: [0, 0.0])
extra = collections.defaultdict(lambda: collections.defaultdict(float))  # other metrics (--metrics a,b): sums per kernel
units = {}
for row in csv.DictReader(io.StringIO(text)):
    base = re.sub(r"\(.*", "", row["Kernel Name"])  # no argument list
    m = re.search(r"(\w+)(<.*>)?$", base)  # the function's own name, template arguments elided
    name = (m.group(1) + ("<>" if m.group(2) else "") if m else base)[:60] + " " + row.get("Grid Size", "")
    metric = row.get("Metric Name")
    value = float(row["Metric Value"].replace(",", ""))
    if metric != "gpu__time_duration.sum":
        unit = row["Metric Unit"]
        mb = {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}.get(unit)  # ncu picks a unit per row
        extra[name][metric] += value * mb if mb else value
        units[metric] = "MB" if mb else unit
        continue
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[row["Metric Unit"]]
    stat[name][0] += 1
    stat[name][1] += value * scale
total = sum(v[1] for v in stat.values())
print(f"{sum(v[0] for v in stat.values())} kernels, {total:.1f} us = {total / a.steps:.1f} us per step")
cols = sorted(units)
print(f"{'kernel grid':80s} {'calls':>6s} {'mean us':>8s} {'us/step':>8s}" +
      "".join(f" {c[:28] + ' (' + units[c] + '/step)':>40s}" for c in cols))
for k, (c, us) in sorted(stat.items(), key=lambda kv: -kv[1][1]):
    print(f"{k:80s} {c:6d} {us / c:8.2f} {us / a.steps:8.1f}" +
          "".join(f" {extra[k][m] / a.steps:40.4g}" for m in cols))
