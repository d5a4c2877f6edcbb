#!/usr/bin/env python3
"""make bench: measures the core daemon's budgets and prints a table.

1. Daemon CPU per check run, 50 modules at 1 s: crd (x86_64 musl release, built as
   a router is: cross/build.sh x86_64 edge) and
   monit 5.33 (`check program ... if status == 0 then exec ...`) on the same check
   scripts, one after the other in this run; the ratio crd/monit.
2. crd's peak RSS (VmHWM) at 50 modules, and VmRSS early vs late in the run.
3. p99 start lateness (from `crd status`) at 200 modules at 1 s.

The 50-module phases alternate, crd then monit, BENCH_ROUNDS times (default 3): the
per-run CPU of each tool is the median of its rounds, the ratio is of the medians, and
the table shows each tool's range (one 30 s phase on a shared VM varies by +-15%).
CPU is the daemon's own on-CPU time from /proc/PID/task/*/schedstat, all its threads (children excluded for
both tools; crd runs with its default max_parallel); runs are counted by the check scripts themselves (one line each), so
both tools are charged for exactly the runs they made. BENCH_SECONDS sets the length
of each phase (default 60). CRD_BASE_BIN (a crd built from another commit with
`cross/build.sh x86_64 edge`) runs a third phase each round, after monit, and adds
rows comparing this tree's crd with it in the same run: CPU per check run and peak
RSS, no worse than the base (the redesign's budget).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("BENCH_SECONDS", "60"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def build():
    # The edge's budgets, on x86_64 built as a router is (no collector, opt-level z).
    subprocess.run([os.path.join(ROOT, "cross", "build.sh"), "x86_64", "edge"], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, "dist", "x86_64-edge", "crd")


def cpu_seconds(pid):
    # The scheduler's exact on-CPU time of the process itself, in ns (the first field
    # of schedstat); /proc/PID/stat's utime+stime are sampled at clock ticks, too
    # coarse for short bursts. Summed over all of the process's threads (monit has
    # several; /proc/PID/schedstat alone is the main thread's).
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def modules(dirname, n, counter):
    os.makedirs(dirname, mode=0o755)
    for i in range(n):
        d = os.path.join(dirname, f"M{i:03}")
        os.makedirs(d, mode=0o755)
        path = os.path.join(d, "check")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\necho x >> {counter}\nexit 1\n")
        os.chmod(path, 0o755)
        path = os.path.join(d, "response")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)


def record(bench, metric, unit, crd_value, peer, peer_value, better, budget):
    """Appends one comparison to $BENCH_RESULTS (if set) for bench/report.py, as
    benches/common/mod.rs does."""
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(f"{bench}\t{metric}\t{unit}\t{crd_value}\t{peer}\t{peer_value}\t{better}\t{budget}\n")


def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def crd_status(crd, conf):
    out = subprocess.run([crd, "-c", conf, "status"], capture_output=True, text=True, check=True).stdout
    stats = {}
    for line in out.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            stats[k] = v
    return stats


def per_run_us(res):
    return res["cpu"] / max(res["runs"], 1) * 1e6


def run_crd(crd, tmp, n, extra=""):
    counter = os.path.join(tmp, "runs")
    modules(os.path.join(tmp, "modules"), n, counter)
    conf = os.path.join(tmp, "crd.conf")
    with open(conf, "w") as f:
        f.write(
            f"interval = 1\nmodules_dir = {tmp}/modules\ncontrol_socket = {tmp}/crd.sock\n"
            f"spool_dir = {tmp}/spool\nlog_level = warn\n{extra}"
        )
    p = subprocess.Popen([crd, "-c", conf], stderr=subprocess.DEVNULL)
    try:
        time.sleep(min(10, SECONDS / 3))
        rss_early = status_kib(p.pid, "VmRSS")
        cpu0, runs0 = cpu_seconds(p.pid), lines(counter)
        time.sleep(SECONDS)
        cpu1, runs1 = cpu_seconds(p.pid), lines(counter)
        st = crd_status(crd, conf)
        res = {
            "cpu": cpu1 - cpu0,
            "runs": runs1 - runs0,
            "hwm": status_kib(p.pid, "VmHWM"),
            "rss_early": rss_early,
            "rss_late": status_kib(p.pid, "VmRSS"),
            "status": st,
        }
    finally:
        p.terminate()
        p.wait(timeout=10)
    return res


def run_monit(tmp, n):
    counter = os.path.join(tmp, "runs")
    modules(os.path.join(tmp, "modules"), n, counter)
    rc = os.path.join(tmp, "monitrc")
    with open(rc, "w") as f:
        f.write(
            f"set daemon 1\nset logfile {tmp}/monit.log\nset pidfile {tmp}/monit.pid\n"
            f"set idfile {tmp}/monit.id\nset statefile {tmp}/monit.state\n"
        )
        for i in range(n):
            d = f"{tmp}/modules/M{i:03}"
            f.write(f'check program M{i:03} with path "{d}/check" every 1 cycles\n')
            f.write(f'    if status == 0 then exec "{d}/response"\n')
    os.chmod(rc, 0o600)
    p = subprocess.Popen(["monit", "-I", "-c", rc], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(min(10, SECONDS / 3))
        cpu0, runs0 = cpu_seconds(p.pid), lines(counter)
        time.sleep(SECONDS)
        cpu1, runs1 = cpu_seconds(p.pid), lines(counter)
    finally:
        p.terminate()
        p.wait(timeout=10)
    return {"cpu": cpu1 - cpu0, "runs": runs1 - runs0}


def soak(seconds):
    """`make soak`: crd with 50 modules at 1 s for `seconds`, VmRSS every 5 minutes."""
    crd = build()
    with tempfile.TemporaryDirectory(prefix="crd-soak-") as tmp:
        counter = os.path.join(tmp, "runs")
        modules(os.path.join(tmp, "modules"), 50, counter)
        conf = os.path.join(tmp, "crd.conf")
        with open(conf, "w") as f:
            f.write(
                f"interval = 1\nmodules_dir = {tmp}/modules\ncontrol_socket = {tmp}/crd.sock\n"
                f"spool_dir = {tmp}/spool\nlog_level = warn\n"
            )
        p = subprocess.Popen([crd, "-c", conf], stderr=subprocess.DEVNULL)
        try:
            start = time.monotonic()
            print(f"{'elapsed_s':>9}  {'runs':>8}  {'VmRSS_KiB':>9}  {'VmHWM_KiB':>9}", flush=True)
            samples = []
            while True:
                elapsed = time.monotonic() - start
                if p.poll() is not None:
                    sys.exit(f"soak: crd exited with {p.returncode} after {elapsed:.0f} s")
                rss = status_kib(p.pid, "VmRSS")
                samples.append(rss)
                print(f"{elapsed:9.0f}  {lines(counter):8}  {rss:9}  {status_kib(p.pid, 'VmHWM'):9}", flush=True)
                if elapsed >= seconds:
                    break
                time.sleep(min(300, seconds - elapsed))
        finally:
            p.terminate()
            p.wait(timeout=10)
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    print(f"VmRSS after the first sample: {first} KiB, at the end: {last} KiB: {'no growth' if last <= first else 'GREW'}")
    sys.exit(0 if last <= first else 1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "soak":
        soak(int(os.environ.get("SOAK_SECONDS", "3600")))
    if not shutil.which("monit"):
        sys.exit("bench: monit is not installed (apt-get install monit)")
    crd = build()
    print(
        f"bench: {SECONDS} s per phase, {ROUNDS} rounds, crd {os.path.getsize(crd)} bytes (x86_64 musl, built as a router: no collector, opt-level z)",
        flush=True,
    )
    base = os.environ.get("CRD_BASE_BIN")
    crds, monits, bases = [], [], []
    with tempfile.TemporaryDirectory(prefix="crd-bench-") as tmp:
        for r in range(ROUNDS):
            crds.append(run_crd(crd, os.path.join(tmp, f"crd50-{r}"), 50))
            monits.append(run_monit(os.path.join(tmp, f"monit50-{r}"), 50))
            also = ""
            if base:
                bases.append(run_crd(base, os.path.join(tmp, f"base50-{r}"), 50))
                also = f", base {per_run_us(bases[-1]):.0f} us"
            print(f"round {r + 1}: crd {per_run_us(crds[-1]):.0f} us, monit {per_run_us(monits[-1]):.0f} us per run{also}", flush=True)
        c = run_crd(crd, os.path.join(tmp, "crd200"), 200)
    crd_runs = sorted(per_run_us(x) for x in crds)
    monit_runs = sorted(per_run_us(x) for x in monits)
    crd_us, monit_us = crd_runs[len(crd_runs) // 2], monit_runs[len(monit_runs) // 2]
    ratio = crd_us / monit_us if monit_us else float("inf")
    # The round whose CPU is the median, for the counts shown.
    a = next(x for x in crds if per_run_us(x) == crd_us)
    m = next(x for x in monits if per_run_us(x) == monit_us)
    hwm = max(x["hwm"] for x in crds)
    p99 = int(c["status"]["lateness_p99_us"])
    rows = [
        ("check runs in the median phase (50 modules)", f"{a['runs']}", f"{m['runs']}", "", "", ""),
        ("daemon CPU in the median phase, s", f"{a['cpu']:.2f}", f"{m['cpu']:.2f}", "", "", ""),
        ("daemon CPU per check run (median), us", f"{crd_us:.0f}", f"{monit_us:.0f}", f"{ratio:.3f}", "<= 0.20", "ok" if ratio <= 0.20 else "OVER"),
        ("  range over the rounds, us", f"{crd_runs[0]:.0f}-{crd_runs[-1]:.0f}", f"{monit_runs[0]:.0f}-{monit_runs[-1]:.0f}", "", "", ""),
        ("peak RSS (VmHWM) at 50 modules, KiB", f"{hwm}", "", "", "<= 768", "ok" if hwm <= 768 else "OVER"),
        # A phase of seconds is too short to call growth (a page of code run
        # first late in it counts): `make soak` measures growth over an hour.
        ("VmRSS early -> late, KiB (growth: make soak)", f"{a['rss_early']} -> {a['rss_late']}", "", "", "", ""),
        ("starts at 200 modules", c["status"]["starts"], "", "", "", ""),
        ("p99 start lateness at 200 modules, us", f"<= {p99}", "", "", "< 10000", "ok" if p99 < 10000 else "OVER"),
        ("max start lateness at 200 modules, us", c["status"]["lateness_max_us"], "", "", "", ""),
    ]
    if bases:
        base_runs = sorted(per_run_us(x) for x in bases)
        base_us = base_runs[len(base_runs) // 2]
        vs = crd_us / base_us if base_us else float("inf")
        base_hwm = max(x["hwm"] for x in bases)
        rows += [
            ("CPU per check run vs CRD_BASE_BIN (median), us", f"{crd_us:.0f}", f"{base_us:.0f}", f"{vs:.3f}", "<= 1.00",
             "ok" if vs <= 1.0 else "OVER"),
            ("  base's range over the rounds, us", "", f"{base_runs[0]:.0f}-{base_runs[-1]:.0f}", "", "", ""),
            ("peak RSS vs CRD_BASE_BIN, KiB", f"{hwm}", f"{base_hwm}", f"{hwm / base_hwm:.3f}", "<= 1.00",
             "ok" if hwm <= base_hwm else "OVER"),
        ]
    record("core", "daemon CPU per check run, 50 modules x 1 s (median)", "us", crd_us,
           "monit 5.33", monit_us, "lower", "<= 0.20")
    w = max(len(r[0]) for r in rows)
    print(f"{'metric':<{w}}  {'crd':>16}  {'monit/base':>10}  {'ratio':>7}  {'budget':>10}  verdict")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>16}  {r[2]:>10}  {r[3]:>7}  {r[4]:>10}  {r[5]}")
    bad = [r for r in rows if r[5] not in ("", "ok")]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
