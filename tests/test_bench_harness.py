"""The latency harness users run (python -m reactio.bench) works end to end: every leg it can
run here finishes, with sane statistics and ratios to the C floor.  Small counts: this checks
the machinery, not performance (performance figures come from BENCHMARKS.md runs)."""
import json
import shutil
import subprocess
import sys

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
