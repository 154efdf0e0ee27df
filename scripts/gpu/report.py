"""The GPU check's report: every figure in one JSON, a markdown section for docs/PERFORMANCE.md, a summary table.

    python scripts/gpu/report.py --work DIR --out OUT [--seconds S]   # scripts/gpu_check.sh calls this last
    python scripts/gpu/report.py --into docs/PERFORMANCE.md --from OUT/gpu_check.md   # drop a run's section in

--work holds what the stages wrote (run.json, stages.jsonl, install.json, records.jsonl, floor.json,
projection.json, step-zero*.json, extensions.txt); a stage that failed or ran out of time leaves its file
out and the report says so. Exit status 0 only when every stage ran and every test passed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"
STAGES = ("install", "tests", "floor", "projection", "step")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def collect(work: Path, seconds: int | None) -> dict:
    """Everything the stages left in `work`, as one dictionary (the JSON the report writes)."""
    records = read_lines(work / "records.jsonl")
    outcomes = [r for r in records if "outcome" in r]
    measured = [r for r in records if "outcome" not in r]
    counts = {k: sum(r["outcome"] == k for r in outcomes) for k in ("passed", "failed", "skipped", "error")}
    steps = {}
    for path in sorted(work.glob("step-zero*.json")):
        data = read_json(path)
        if data:
            steps[path.stem.removeprefix("step-")] = data
    extensions = (work / "extensions.txt").read_text().split() if (work / "extensions.txt").exists() else None
    return {
        "run": {**(read_json(work / "run.json") or {}), "seconds": seconds, "versions": versions()},
        "stages": read_lines(work / "stages.jsonl"),
        "install": read_json(work / "install.json"),
        "tests": {
            "counts": counts,
            "failures": [r for r in outcomes if r["outcome"] in ("failed", "error")],
            "measured": measured,
            "outcomes": outcomes,
        },
        "floor": read_json(work / "floor.json"),
        "projection": read_json(work / "projection.json"),
        "step": steps,
        "deepspeed_jit_ops": extensions,
    }


def versions() -> dict:
    """Versions of what ran (package metadata: nothing is imported)."""
    import importlib.metadata as metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "deepspeed", "transformers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def stage_status(report: dict, name: str) -> dict:
    """The stage's entries merged (the step stage runs once per ZeRO stage): worst status, summed seconds."""
    mine = [s for s in report["stages"] if s["stage"].split("-")[0] == name]
    if not mine:
        return {"status": "not run", "seconds": 0, "budget": 0}
    order = ["ok", "skipped", "failed", "timeout"]
    worst = max(mine, key=lambda s: order.index(s["status"]) if s["status"] in order else len(order))
    return {
        "status": worst["status"],
        "seconds": sum(s.get("seconds", 0) for s in mine),
        "budget": sum(s.get("budget", 0) for s in mine),
        "why": worst.get("why", ""),
    }


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (abs(x) >= 1e4 or (x != 0 and abs(x) < 10**-digits)):
        return f"{x:.1e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def headline(report: dict, name: str) -> str:
    """One line per stage for the summary table."""
    if name == "install":
        inst = report["install"] or {}
        v = inst.get("versions", {})
        return (
            (
                f"torch {v.get('torch')} (CUDA {inst.get('cuda')}, available {inst.get('cuda_available')}), "
                f"deepspeed {v.get('deepspeed')}, {len(inst.get('problems', []))} problem(s)"
            )
            if inst
            else "-"
        )
    if name == "tests":
        c = report["tests"]["counts"]
        return f"{c['passed']} passed, {c['failed'] + c['error']} failed, {c['skipped']} skipped"
    if name == "floor" and report["floor"]:
        rows = report["floor"]["rows"]
        ratios = [r["overhead"] / r["floor"] for r in rows]
        bandwidth = statistics.median(r["bandwidth"] for r in rows)
        return f"overhead/floor {min(ratios):.2f}-{max(ratios):.2f} over {len(rows)} cells; copy {bandwidth:.0f} GB/s"
    if name == "projection" and report["projection"]:
        cells = [
            f"k={r['k']}: {r['reference_ms'] / r['engine_ms']:.3g}x (engine), "
            f"{r['reference_ms'] / r['exact_ms']:.3g}x (project)"
            for r in report["projection"]["rows"]
            if r.get("reference_ms")
        ]
        return "reference / ours " + "; ".join(cells) if cells else "-"
    if name == "step" and report["step"]:
        parts = []
        for zero, data in report["step"].items():
            rows = data["tables"][0]["rows"]
            if "naive" in rows and "gem-both" in rows:
                gem = rows["gem-both"]
                parts.append(
                    f"{zero}: GEM/naive {gem['step'] / rows['naive']['step']:.2f} (k+1 = {gem['k'] + 1}), "
                    f"overhead/floor {fmt(gem['ratio'])}"
                )
        return "; ".join(parts) or "-"
    return "-"


def markdown(report: dict) -> str:
    run = report["run"]
    inst = report["install"] or {}
    versions = run.get("versions", {})
    device = run.get("gpu") or "no GPU (a CPU rehearsal)"
    lines = [
        f"### GPU check: {device}, {run.get('started', '?')[:10]}",
        "",
        f"`{run.get('command', 'bash scripts/gpu_check.sh')}` at commit {run.get('git', '?')}, "
        f"{run.get('mode', '?')} mode, {run.get('seconds', '?')} s in all; Python {versions.get('python', '?')}, "
        f"torch {versions.get('torch', '?')} (CUDA {inst.get('cuda', '-')}), deepspeed "
        f"{versions.get('deepspeed', '?')}, transformers {versions.get('transformers', '?')}, "
        f"{run.get('host_cpus', '?')} CPUs. Written by scripts/gpu/report.py.",
        "",
        "| stage | status | seconds | budget | result |",
        "|---|---|---|---|---|",
    ]
    for name in STAGES:
        s = stage_status(report, name)
        result = headline(report, name) if s["status"] != "skipped" else s.get("why", "")
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {s['budget']} | {result} |")
    if report["deepspeed_jit_ops"] is not None:
        ops = report["deepspeed_jit_ops"]
        lines += [
            "",
            f"DeepSpeed JIT-built ops during the run: {', '.join(ops) if ops else 'none'} "
            "(the CPU reference runs build DeepSpeed's CPU communication op; nothing may be built for CUDA).",
        ]
    lines += _tests_md(report), _floor_md(report), _projection_md(report), _step_md(report)
    return "\n".join(line for line in _flatten(lines)) + "\n"


def _flatten(lines):
    for line in lines:
        if isinstance(line, list):
            yield from line
        else:
            yield line


def _tests_md(report: dict) -> list[str]:
    tests = report["tests"]
    if not tests["outcomes"]:
        return []
    c = tests["counts"]
    out = [
        "",
        f"#### Correctness (`pytest -m gpu`): {c['passed']} passed, {c['failed'] + c['error']} failed, "
        f"{c['skipped']} skipped",
    ]
    for failure in tests["failures"][:20]:
        out.append(f"- FAILED `{failure['test']}`: {failure.get('message', '')[:300]}")
    if tests["measured"]:
        out += [
            "",
            "Measured against the tolerances the tests hold (worst over the run):",
            "",
            "| test | measured |",
            "|---|---|",
        ]
        for m in tests["measured"]:
            values = ", ".join(
                f"{k} {fmt(v, 3) if isinstance(v, float) else v}" for k, v in m.items() if k not in ("test", "seed")
            )
            out.append(f"| `{m['test'].split('::')[-1]}` | {values} |")
    return out


def _floor_md(report: dict) -> list[str]:
    floor = report["floor"]
    if not floor:
        return []
    out = [
        "",
        f"#### GEM's overhead against its floor (`bench/floor.py`; {floor['environment']})",
        "",
        "| P | N | p = P/N | k | capture ms | Gram ms | QP ms | update ms | overhead ms | floor ms "
        "| overhead / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in floor["rows"]:
        out.append(
            f"| {r['P'] / 1e6:.3g}M | {r['N']} | {r['p'] / 1e6:.2f}M | {r['k']} | {fmt(r['capture'])} | "
            f"{fmt(r['gram'])} | {fmt(r['qp'])} | {fmt(r['update'])} | {fmt(r['overhead'])} | "
            f"{fmt(r['floor'])} | {r['overhead'] / r['floor']:.2f} |"
        )
    bandwidth = [r["bandwidth"] for r in floor["rows"]]
    out.append(
        f"\nCopy bandwidth (read + write, measured between the terms): median {statistics.median(bandwidth):.0f} GB/s."
    )
    return out


def _projection_md(report: dict) -> list[str]:
    proj = report["projection"]
    if not proj:
        return []
    out = [
        "",
        f"#### Projection against the original GEM path (`bench/projection.py`; {proj['environment']})",
        "",
        "| P | k | GEM reference ms | ours `project` exact ms | ours qpth ms | engine path ms | reference / engine "
        "| reference / exact | max rel diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in proj["rows"]:
        ref = r.get("reference_ms")
        out.append(
            f"| {r['P']:.3g} | {r['k']} | {fmt(ref, 1)} | {fmt(r['exact_ms'])} | {fmt(r['qpth_ms'])} | "
            f"{fmt(r['engine_ms'])} | {fmt(ref / r['engine_ms'], 1) if ref else '-'} | "
            f"{fmt(ref / r['exact_ms'], 1) if ref else '-'} | "
            f"{fmt(max(r.get('reference_rel_diff') or 0, r['engine_rel_diff']), 1)} |"
        )
    if proj.get("qp"):
        out += [
            "",
            "The QP alone (ms per call): "
            + "; ".join(
                f"k={q['k']} batch {q['batch']}: exact {fmt(q['exact_ms'])}, qpth {fmt(q['qpth_ms'])}, "
                f"quadprog loop {fmt(q['quadprog_loop_ms'])}"
                for q in proj["qp"]
            ),
        ]
    return out


def _step_md(report: dict) -> list[str]:
    if not report["step"]:
        return []
    out = []
    for zero, data in report["step"].items():
        table = data["tables"][0]
        rows = table["rows"]
        naive = rows.get("naive", {}).get("step")
        out += [
            "",
            f"#### Step cost, {zero.replace('zero', 'ZeRO ')} (`bench/step.py --encoder {data.get('encoder')}`; "
            f"{table['environment']}; {table['steps']} interleaved steps, copy {table['bandwidth_gbs']:.0f} GB/s)",
            "",
            "| method | k | p | step ms | / naive | k+1 | fwd-bwd ms/pass | GEM's terms ms | floor ms | terms / floor "
            "| optimizer ms | GPU resident MB | GPU step peak over it MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            out.append(
                f"| {name} | {r['k']} | {r['p'] / 1e6:.1f}M | {r['step']:.1f} | "
                f"{r['step'] / naive:.2f} | {r['k'] + 1} | {r['fb_per_pass']:.1f} | "
                f"{fmt(r['overhead']) if r['floor'] is not None else '-'} | {fmt(r['floor'])} | {fmt(r['ratio'])} | "
                f"{r['optimizer']:.1f} | {fmt(r.get('resident_mb'), 0)} | {fmt(r.get('transient_mb'), 0)} |"
                if naive
                else f"| {name} | ... |"
            )
    return out


def summary(report: dict) -> str:
    rows = [("stage", "status", "s / budget", "result")]
    for name in STAGES:
        s = stage_status(report, name)
        rows.append(
            (
                name,
                s["status"],
                f"{s['seconds']} / {s['budget']}",
                headline(report, name) if s["status"] != "skipped" else s.get("why", ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    text = [" | ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3]]) for r in rows]
    text.insert(1, "-" * min(120, max(len(t) for t in text)))
    return "\n".join(text)


def ok(report: dict) -> bool:
    statuses = [stage_status(report, name)["status"] for name in STAGES]
    install_skipped = statuses[0] == "skipped"  # a rehearsal without wheels/
    c = report["tests"]["counts"]
    return (
        all(s == "ok" for s in statuses[1:])
        and (statuses[0] == "ok" or install_skipped)
        and c["failed"] + c["error"] == 0
        and c["passed"] > 0
    )


def into(doc: Path, section: Path) -> int:
    """Replace the text between the GPU markers of `doc` with `section`."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        print(f"{doc}: no '{BEGIN}' ... '{END}' block to fill", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{section.read_text().strip()}\n{END}{tail}")
    print(f"{doc}: GPU section replaced by {section}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work")
    parser.add_argument("--out")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--into", help="a markdown file with the GPU markers (docs/PERFORMANCE.md)")
    parser.add_argument("--from", dest="section", help="the gpu_check.md to put there")
    args = parser.parse_args()
    if args.into:
        if not args.section:
            parser.error("--into needs --from")
        return into(Path(args.into), Path(args.section))
    if not (args.work and args.out):
        parser.error("--work and --out are needed (or --into and --from)")
    report = collect(Path(args.work), args.seconds)
    out = Path(args.out)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"\nGPU check ({report['run'].get('mode')}): {out}/gpu_check.json, {out}/gpu_check.md and the stage logs")
    print(summary(report))
    return 0 if ok(report) else 1


if __name__ == "__main__":
    raise SystemExit(main())
