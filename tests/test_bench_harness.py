"""The latency harness users run (python -m reactio.bench) works end to end: every leg it can
run here finishes, with sane statistics and ratios to the C floor.  Small counts: this checks
the machinery, not performance (performance figures come from BENCHMARKS.md runs)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(sys.platform == "win32", reason="the harness is Linux-only"),
              pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the floor")]


def run_bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "reactio.bench", *args, "--quiet",
                           "--json", str(out)], capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_pingpong_compare_legs(tmp_path):
    data, text = run_bench(tmp_path, "pingpong", "--legs", "c,reactio-py,reactio-cy,asyncio",
                           "--count", "400", "--warmup", "50", "--rounds", "2", "--size", "64",
                           "--pin", "none")
    assert data["floor"] == "c"
    legs = {leg["leg"]: leg for leg in data["runs"][0]["results"][0]["legs"]}
    assert legs["c"]["status"] == "ok" and legs["reactio-py"]["status"] == "ok"
    for name, leg in legs.items():
        if leg["status"] != "ok":
            assert name == "reactio-cy", leg         # only the optional Cython leg may skip
            continue
        lat = leg["latency_us"]
        assert lat["n"] == 400
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
        assert leg["round_trips_per_s"] > 0
        assert leg["ratio_p50"] == pytest.approx(lat["p50"] / legs["c"]["latency_us"]["p50"])
    assert "reactio-py" in text and "p50/C" in text


def test_scale_small(tmp_path):
    data, text = run_bench(tmp_path, "scale", "--conns", "1,10", "--duration", "0.5",
                           "--legs", "c,reactio-py")
    results = data["runs"][0]["results"]
    assert [r["conns"] for r in results] == [1, 10]
    for r in results:
        legs = {leg["leg"]: leg for leg in r["legs"]}
        assert set(legs) == {"c", "reactio-py"}
        for leg in legs.values():
            assert leg["status"] == "ok", leg
            assert leg["messages"] > 0 and leg["messages_per_s"] > 0
            assert leg["latency_us"]["n"] == leg["messages"]
            assert leg["server_cpu_us_per_msg"] > 0
        assert legs["c"]["ratio_messages_per_s"] == 1.0


def _procs_mentioning(text):
    """Pids of the processes whose command line contains ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.mark.timeout(120)
def test_sighup_unwinds_like_sigterm(tmp_path):
    """Issue 16 item 9: a hang-up (closed terminal, ssh session gone) stops the children and
    removes the run's temp dir (reactio-bench-*, with the children's .stderr files), as
    SIGINT and SIGTERM do."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "reactio.bench", "pingpong", "--legs", "c",
                             "--count", "100000000", "--rounds", "1", "--pin", "none",
                             "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    workdir = None
    try:
        deadline = time.monotonic() + 60
        while workdir is None and time.monotonic() < deadline and proc.poll() is None:
            # the run is under way once the client's stderr file exists in the temp dir
            found = list(tmp_path.glob("reactio-bench-*/c client.stderr"))
            workdir = found[0].parent if found else None
            time.sleep(0.05)
        assert workdir is not None, "the harness never started its client"
        assert _procs_mentioning(str(workdir)), "the client should be running"
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGHUP, (proc.returncode, err[-2000:])
        assert not list(tmp_path.glob("reactio-bench-*")), "the temp dir was left behind"
        assert not _procs_mentioning(str(workdir)), "a child outlived the harness"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _procs_mentioning(str(tmp_path)):  # children a failed run left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sighup_ignored_under_nohup():
    """The fix must not undo nohup: a harness started with SIGHUP ignored keeps it ignored."""
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
            "from reactio.bench import cli\n"
            "cli.main(['info'])\n"
            "sys.exit(0 if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else 1)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:]
