import csv, io, re, sys, collections
text = open(sys.argv[1]).read()
text = text[text.index('"ID"'):]
stat = collections.defaultdict(lambda: collections.defaultdict(float))
cnt = collections.Counter()
for row in csv.DictReader(io.StringIO(text)):
    base = re.sub(r"\(.*", "", row["Kernel Name"])
    m = re.search(r"(\w+)(<.*>)?$", base)
    name = (m.group(1) if m else base)[:40] + " " + row.get("Grid Size", "")
    v = float(row["Metric Value"].replace(",", "") or 0)
    u = row["Metric Unit"]
    metric = row["Metric Name"]
    if metric == "gpu__time_duration.sum":
        v *= {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[u]; cnt[name] += 1
    elif "bytes" in metric:
        v *= {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}.get(u, 1.0)
    stat[name][metric] += v
for k, d in sorted(stat.items(), key=lambda kv: -kv[1]["gpu__time_duration.sum"])[:12]:
    c = cnt[k] or 1
    print(f"{k:60s} n {c:4d} us {d['gpu__time_duration.sum']/c:8.2f} rdMB {d['dram__bytes_read.sum']/c:8.2f} wrMB {d['dram__bytes_write.sum']/c:7.3f} L2hit {d['lts__t_sector_hit_rate.pct']/c:6.1f}")
