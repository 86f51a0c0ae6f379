"""Benchmark: a valid, signed and verified SBOM, and the secret scan, against the tools' own CLIs.

In one run, each measured as a fresh process (as CI and an operator run them):
- ORCH: generate the CycloneDX 1.6 SBOM in-process, validate it against the schema, make a short-lived
  RSA key, sign, verify (one process; the child reports its phases);
- baseline: ``cyclonedx-py environment`` with its own schema validation (and without, to show the split);
- secret scan over the repository's files: ORCH's scanner (detect-secrets' plugins plus ORCH's rules)
  against ``detect-secrets scan`` given the same files.
Writes ``bench_results/bench_supply_chain.{json,md}``. ``--runs N`` (default 3; the baseline runs
``--baseline-runs``, default 2, since it takes ~10 s or more each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import BenchError, clean_environ, machine_info, spread

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results"
BIN = Path(sys.executable).parent
GOAL_SECONDS = 2.0

ORCH_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from orch.supply_chain.sbom import write_sbom
from orch.supply_chain.signing import generate_keys, load_private_key, load_public_key, sign_detached, verify_detached
out = Path(sys.argv[1])
t1 = time.perf_counter(); write_sbom(Path(sys.argv[2]), out / "sbom.json")
t2 = time.perf_counter(); generate_keys(out / "keys")
t3 = time.perf_counter(); sign_detached(out / "sbom.json", out / "sbom.sig", load_private_key(out / "keys"))
t4 = time.perf_counter(); verify_detached(out / "sbom.json", out / "sbom.sig", load_public_key(out / "keys"))
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "generate_validate": t2 - t1, "keygen": t3 - t2, "sign": t4 - t3,
                  "verify": t5 - t4}))
"""

SCAN_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from orch.supply_chain.secrets_scan import scan
files = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
t1 = time.perf_counter(); result = scan(files, Path(sys.argv[2]))
print(json.dumps({"import": t1 - t0, "scan": time.perf_counter() - t1, "findings": len(result.new)}))
"""


def timed(command: list[str], cwd: Path, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean_environ())
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command[:3])} … exited {done.returncode}", done.stderr.splitlines()[-8:])
    return elapsed, done


def bench_orch(runs: int, work: Path) -> dict[str, object]:
    totals, phases = [], []
    for n in range(runs):
        out = work / f"orch-{n}"
        elapsed, done = timed([sys.executable, "-c", ORCH_CHILD, str(out), str(ROOT / "pyproject.toml")], work)
        totals.append(elapsed)
        phases.append(json.loads(done.stdout))
    sequence = []  # the CI sequence: three scripts, three processes (generate, sign with a new key, verify)
    for n in range(runs):
        out = work / f"ci-{n}"
        start = time.perf_counter()
        timed([sys.executable, str(ROOT / "scripts/sbom/generate_sbom.py"), "--out", str(out / "sbom.json"),
               "--pyproject", str(ROOT / "pyproject.toml")], work)
        timed([sys.executable, str(ROOT / "scripts/sbom/sign_sbom.py"), "--sbom", str(out / "sbom.json"), "--out",
               str(out / "sbom.sig"), "--keys-dir", str(out / "keys")], work)
        timed([sys.executable, str(ROOT / "scripts/sbom/verify_sbom.py"), "--sbom", str(out / "sbom.json"), "--sig",
               str(out / "sbom.sig"), "--keys-dir", str(out / "keys")], work)
        sequence.append(time.perf_counter() - start)
    components = len(json.loads((work / "orch-0" / "sbom.json").read_text())["components"])
    return {"total_s": spread(totals), "phases_s": {k: spread([p[k] for p in phases], 3) for k in phases[0]},
            "ci_sequence_s": spread(sequence), "components": components,
            "reproducible": len({(work / f"orch-{n}" / "sbom.json").read_bytes() for n in range(runs)}) == 1}


def bench_baseline(runs: int, work: Path) -> dict[str, object]:
    cli = str(BIN / "cyclonedx-py")
    validated, unvalidated = [], []
    for n in range(runs):
        out = work / f"baseline-{n}.json"
        validated.append(timed([cli, "environment", "--spec-version", "1.6", "--output-format", "JSON",
                                "-o", str(out), sys.executable], work)[0])
        unvalidated.append(timed([cli, "environment", "--spec-version", "1.6", "--output-format", "JSON",
                                  "--no-validate", "-o", str(work / f"nv-{n}.json"), sys.executable], work)[0])
    components = len(json.loads((work / "baseline-0.json").read_text())["components"])
    return {"with_validation_s": spread(validated), "without_validation_s": spread(unvalidated),
            "components": components}


def bench_secret_scan(runs: int, work: Path) -> dict[str, object]:
    from orch.supply_chain.secrets_scan import repository_files

    files = [f for f in repository_files(ROOT) if f.name != ".secrets.baseline"]
    listing = work / "files.txt"
    listing.write_text("\n".join(str(f) for f in files))
    size_mb = sum(f.stat().st_size for f in files) / 1024**2
    orch, cli = [], []
    for _ in range(runs):
        orch.append(timed([sys.executable, "-c", SCAN_CHILD, str(listing), str(ROOT)], ROOT)[0])
        cli.append(timed([str(BIN / "detect-secrets"), "scan", *(str(f.relative_to(ROOT)) for f in files)], ROOT)[0])
    return {"files": len(files), "size_mb": round(size_mb, 2), "orch_s": spread(orch),
            "detect_secrets_cli_s": spread(cli), "orch_files_per_s": round(len(files) / min(orch), 1),
            "cli_files_per_s": round(len(files) / min(cli), 1)}


def markdown(result: dict) -> str:
    o, b, s, m = result["orch"], result["baseline"], result["secret_scan"], result["machine"]
    p = o["phases_s"]
    fmt = lambda d: f"{d['median']} ({d['min']}–{d['max']})"  # noqa: E731 - a table cell
    lines = [
        f"{m['cpu_count']} CPUs, Python {m['python']}, {m['timestamp']}, load average at start {m['load_avg_1m']}. "
        "Cells: median (min–max) seconds, each a fresh process.", "",
        "| SBOM: generate + validate + sign + verify | ORCH (one process) | `cyclonedx-py environment` |",
        "|---|---|---|",
        f"| valid SBOM, wall time | {fmt(o['total_s'])} (incl. a new 3072-bit key) | {fmt(b['with_validation_s'])} |",
        f"| without validation | – | {fmt(b['without_validation_s'])} |",
        f"| components | {o['components']} | {b['components']} |",
        f"| reproducible bytes across runs | {'yes' if o['reproducible'] else 'NO'} | no (random serial, timestamp) |",
        "", f"ORCH phases (median s): imports {p['import']['median']}, generate + validate "
        f"{p['generate_validate']['median']}, key generation {p['keygen']['median']}, sign {p['sign']['median']}, "
        f"verify {p['verify']['median']}. The CI sequence as three scripts (three processes): "
        f"{fmt(o['ci_sequence_s'])} s.", "",
        "| secret scan over the repository | ORCH scanner | `detect-secrets scan` (same files) |", "|---|---|---|",
        f"| wall time ({s['files']} files, {s['size_mb']} MB) | {fmt(s['orch_s'])} "
        f"| {fmt(s['detect_secrets_cli_s'])} |",
        f"| files/s (best run) | {s['orch_files_per_s']} | {s['cli_files_per_s']} |", "",
        f"Goal: a valid, signed and verified SBOM in under {GOAL_SECONDS:.0f} s: "
        + ("PASS" if o["total_s"]["median"] < GOAL_SECONDS else "FAIL")
        + f" (median {o['total_s']['median']} s against {b['with_validation_s']['median']} s for the baseline, "
        f"{b['with_validation_s']['median'] / o['total_s']['median']:.1f}× faster)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-runs", type=int, default=2)
    args = parser.parse_args()
    result: dict[str, object] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="bench-supply-chain-") as tmp:
        work = Path(tmp)
        try:
            result["orch"] = bench_orch(args.runs, work)
            result["baseline"] = bench_baseline(args.baseline_runs, work)
            result["secret_scan"] = bench_secret_scan(args.runs, work)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_supply_chain.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (RESULTS / "bench_supply_chain.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
