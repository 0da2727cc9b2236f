"""What `evalctl evaluate` (and robustness, gate) print: the metric table, weak slices, gate lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.evaluation.run import EvalResult


def print_summary(result: EvalResult) -> None:
    from rich.table import Table

    from cluster.stats.metrics import metric_names
    from jobs.entry import console
    from jobs.registry_cli import cell

    m = result.metrics
    table = Table(
        "metric",
        "value",
        "95% CI",
        title=f"{cell(m['model']['id'])} on {m['n']} rows "
        f"({m['precision_mode']}, {m['timings']['rows_per_s']:.0f} rows/s)",
    )
    for key in metric_names(headline=True):
        if key in m:
            ci = m["ci95"].get(key)
            value = "undefined" if m[key] is None else f"{m[key]:.4f}"
            table.add_row(key, value, f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    console.print(where_it_ran(m))
    if "auto_slices" in m:
        print_weak_slices(m["auto_slices"])
    bad = m.get("bad_rows") or {}
    if bad.get("count"):
        rows = ", ".join(str(b["row"]) for b in bad["first_rows"][:10])
        more = ", ..." if bad["count"] > 10 else ""
        what = "bad row(s)" if m.get("task") == "translation" else "bad image row(s)"
        console.print(f"skipped {bad['count']} {what}: rows {rows}{more}; see metrics.json")
    console.print(f"run {result.run_id}; artifacts in {result.out}")
    if "gate" in m:
        print_gate(m["gate"])


def where_it_ran(m: dict) -> str:
    """One line: model actors, nodes, and any recovery (restarted actors, a resumed run)."""
    workers = m.get("workers") or []
    actors = len({w["actor"] for w in workers})
    line = f"{actors} model actor(s) on {len({w['node'] for w in workers})} node(s)"
    recovery = m.get("recovery") or {}
    lost = {
        a["actor"] for a in (recovery.get("lost_actors") or []) + (recovery.get("restarted_actors") or [])
    }
    if lost:
        line += (
            f"; {len(lost)} actor(s) lost with their node, restarted by Ray or replaced on another node: "
            "their unfinished blocks ran again, each row counted once"
        )
    if recovery.get("resumed_rows"):
        line += f"; resumed: {recovery['resumed_rows']} row(s) kept from before, not computed again"
    return line


def print_weak_slices(auto: dict) -> None:
    from jobs.entry import console
    from jobs.registry_cli import cell

    weak = auto["weak"]
    console.print(
        f"weak slices ({auto['metric']}, overall {auto['overall']:.4f}; {auto['correction']}): "
        + (", ".join(f"{cell(w['slice'])} {w[auto['metric']]:.3f} (n={w['n']})" for w in weak[:5]) or "none")
        + (f", ... ({len(weak) - 5} more)" if len(weak) > 5 else "")
    )


def print_gate(gate: dict) -> None:
    from cluster.stats.gates import summary_line
    from jobs.entry import console

    for row in gate["conditions"]:  # one line each, never wrapped (CI logs grep them)
        console.print(row["line"], markup=False, soft_wrap=True)
    console.print(summary_line(gate), markup=False, soft_wrap=True)
