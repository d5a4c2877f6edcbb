#!/usr/bin/env python3
"""bench/report.py RESULTS OUT.md: charts of one `make bench` run.

RESULTS is the tab-separated file the benches append their side-by-side
comparisons to ($BENCH_RESULTS: bench, metric, unit, crd's value, the peer's name
and value, which is better, the budget on the ratio crd / peer). Writes OUT.md
with one SVG bar chart per comparison beside it (OUT's directory, charts/NAME.svg):
crd's bar and the peer's, their values, the ratio and its budget, and the date
and machine of the run; then bench/notes.md, the measurement notes written by
hand. Plain SVG text, no plotting library.
"""

import datetime
import os
import platform
import re
import sys
from xml.sax.saxutils import escape


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def verdict(ratio, budget):
    m = re.match(r"\s*(<=|>=)\s*([0-9.]+)", budget)
    if not m:
        return ""
    limit = float(m.group(2))
    ok = ratio <= limit if m.group(1) == "<=" else ratio >= limit
    return "met" if ok else "NOT met"


def number(v, unit):
    return f"{v:,.1f} {unit}" if v < 100 else f"{v:,.0f} {unit}"


def chart(c, when, where):
    """One comparison as an SVG document (a string)."""
    width, left, bar_h, top = 720, 250, 28, 58
    ratio = c["crd"] / c["peer_value"] if c["peer_value"] else float("inf")
    v = verdict(ratio, c["budget"])
    scale = (width - left - 150) / max(c["crd"], c["peer_value"], 1e-9)
    bars = [("crd", c["crd"], "#d9534f"), (c["peer"], c["peer_value"], "#5b7fa6")]
    better = "lower is better" if c["better"] == "lower" else "higher is better"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + 2 * (bar_h + 12) + 44}" '
        f'font-family="sans-serif" font-size="13">',
        f'<rect width="100%" height="100%" fill="#fff"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(c["metric"])}</text>',
        f'<text x="10" y="42">crd / {escape(c["peer"])} = {ratio:.2f} (budget {escape(c["budget"])}: {v}; {better})</text>',
    ]
    for i, (name, value, colour) in enumerate(bars):
        y = top + i * (bar_h + 12)
        w = max(1, value * scale)
        out.append(f'<text x="{left - 8}" y="{y + bar_h * 0.65:.0f}" text-anchor="end">{escape(name[:34])}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.65:.0f}">{escape(number(value, c["unit"]))}</text>')
    y = top + 2 * (bar_h + 12) + 24
    out.append(f'<text x="10" y="{y}" font-size="11" fill="#555">{escape(when)}; {escape(where)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n", ratio, v


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench/report.py RESULTS OUT.md")
    results, out_md = sys.argv[1], sys.argv[2]
    rows = []
    with open(results) as f:
        for n, line in enumerate(f, 1):
            p = line.rstrip("\n").split("\t")
            if len(p) != 8:
                sys.exit(f"{results}:{n}: want 8 tab-separated fields, got {len(p)}")
            rows.append({
                "bench": p[0], "metric": p[1], "unit": p[2], "crd": float(p[3]),
                "peer": p[4], "peer_value": float(p[5]), "better": p[6], "budget": p[7],
            })
    when = datetime.datetime.fromtimestamp(os.path.getmtime(results), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    base = os.path.dirname(os.path.abspath(out_md))
    os.makedirs(os.path.join(base, "charts"), exist_ok=True)
    md = [
        "# crd benchmark report",
        "",
        f"Written by `make bench` (bench/report.py) from the numbers of one run: {when}, {where}."
        + "".join(f" {k}={os.environ[k]}." for k in ("BENCH_SECONDS", "BENCH_ROUNDS", "RSS_SECONDS") if k in os.environ),
        "Each chart sets crd beside another tool doing the same work in the same run; the",
        "latest tables of every bench, with their budgets, are in docs/benchmarks.md.",
        "",
        "| bench | metric | crd | peer | ratio | budget |",
        "|---|---|---|---|---|---|",
    ]
    charts = []
    for i, c in enumerate(rows):
        svg, ratio, v = chart(c, when, where)
        name = f"{i + 1:02d}-{c['bench']}.svg"
        with open(os.path.join(base, "charts", name), "w") as f:
            f.write(svg)
        cell = lambda t: t.replace("|", "\\|")  # a pipe in a command would end the cell
        md.append(
            f"| {c['bench']} | {cell(c['metric'])} | {number(c['crd'], c['unit'])} | {cell(c['peer'])}: "
            f"{number(c['peer_value'], c['unit'])} | {ratio:.2f} | {c['budget']} {v} |"
        )
        charts.append(f"![{c['metric']}](charts/{name})")
    md += [""] + [x + "\n" for x in charts]
    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            md.append(f.read())
    with open(out_md, "w") as f:
        f.write("\n".join(md))
    print(f"{out_md}: {len(rows)} charts")


if __name__ == "__main__":
    main()
