"""Print the README's result tables (markdown) from the JSON files in benchmarks/results/.

    python benchmarks/readme_tables.py            # paste the output into README.md
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _eval_table(path: Path, cols: list[str]) -> str:
    r = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| route | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in r["results"].items():
        row = [f"{m[c]:.4f}" if c in m else "" for c in cols]
        lines.append(f"| {'**fused**' if name == 'fused' else name} | " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if "cold" in r:
        out += "\n\n| route | cold hr@50 | warm hr@50 | cold / warm |\n|---|---|---|---|\n"
        for name in r["cold"]:
            c, w = r["cold"][name]["hr@50"], r["warm"][name]["hr@50"]
            out += f"| {name} | {c:.4f} | {w:.4f} | {c / w if w else 0:.2f} |\n"
    if "tail_sweep" in r:
        out += "\n\n| tail quota | hr@50 | tail share@50 | coverage@50 |\n|---|---|---|---|\n"
        for row in r["tail_sweep"]:
            out += (f"| {row['tail_quota']:.1f} | {row['hr@50']:.4f} | {row['tail_share@50']:.4f} | "
                    f"{row['coverage@50']:.4f} |\n")
    if "tuning" in r:
        t = r["tuning"]
        held = ", ".join(f"{m} {v:.4f}" for m, v in t.get("held_out", {}).items())
        chosen = (f"fusion **{t['mode']}**" + (f" (held-out half of the validation users: {held})" if held else "")
                  if "mode" in t else "RRF")
        weights = f"weights {t['weights']}, " if t.get("mode", "rrf") == "rrf" else ""
        out += (f"\nTuned on the validation view ({t['n_users']} users, {t['metric']} {t['valid_score']:.4f}): "
                f"{chosen}, {weights}cold quota {t.get('cold_quota', 0)}.\n")
    return out


def quality_table(report: dict) -> str:
    """``benchmarks/results/quality.json`` (bench_quality.py): one row per protocol and system, best HR@50 first."""
    lines = ["| protocol | system | HR@20 | HR@50 | NDCG@50 | coverage@50 | cold HR@50 | warm HR@50 | cold / warm |",
             "|---|---|---|---|---|---|---|---|---|"]
    for protocol, entry in report.get("protocols", {}).items():
        for name, v in sorted(entry.get("systems", {}).items(), key=lambda kv: -kv[1]["metrics"]["hr@50"]):
            m = v["metrics"]
            cold = [f"{m[c]:.4f}" if c in m else "" for c in ("cold_hr@50", "warm_hr@50")]
            ratio = f"{m['cold_over_warm']:.2f}" if "cold_over_warm" in m else ""
            label = f"**{name}**" if name == "kgrec" else name
            lines.append(f"| {protocol} | {label} | {m['hr@20']:.4f} | {m['hr@50']:.4f} | {m['ndcg@50']:.4f} | "
                         f"{m['coverage@50']:.4f} | {cold[0]} | {cold[1]} | {ratio} |")
    return "\n".join(lines)


def itemcf_rows(report: dict) -> str:
    """``benchmarks/results/itemcf.json`` (bench_itemcf.py) as rows of the README's Performance table."""
    rows = []
    for name, r in report["results"].items():
        d, med, load = r["dataset"], r["median_seconds"], r["load_average_1m"]
        size = f"{d['items']:,} items × {d['users']:,} users, {d['nonzeros']:,} non-zeros"
        rows.append(
            f"| item-CF neighbour build vs implicit `CosineRecommender`, {name} ({size}), K={r['k']}, cosine | "
            f"kgrec {med['kgrec']:.2f} s vs implicit {med['implicit']:.2f} s: **{r['ratio_kgrec_over_implicit']:.2f}×** "
            f"(CPU {r['cpu_ratio_kgrec_over_implicit']:.2f}×; kgrec on 1 thread {med.get('kgrec_1_thread', 0):.2f} s), "
            f"same neighbours up to ties ({r['agreement']['share_in_common']:.1%} of pairs shared, "
            f"{r['agreement']['differences_not_ties_at_the_cut']} non-tie differences); load average "
            f"{load['start']:.1f}–{load['end']:.1f} | `{r.get('command', report['command'])}` → "
            "`benchmarks/results/itemcf.json` |")
    return "\n".join(rows)


def encode_rows(report: dict) -> str:
    """``benchmarks/results/encode.json`` (bench_encode.py) as rows of the README's Performance table: the
    default (fastest at cosine >= 0.99) against the target, then every variant of the same run."""
    s, hr, t = report["speed"], report.get("hr_check", {}), report["target"]
    best = next(k for k, v in s.items() if v["encoder"] == t["best_at_cos_0.99"])
    b, ref = s[best], s["torch"]
    loads = [r[k] for v in s.values() for r in v["runs"] for k in ("load_before", "load_after")]
    cmd = "`python benchmarks/bench_encode.py --cache-dir /tmp/kgrec-cache` → `benchmarks/results/encode.json`"
    hr_note = (f"; text-only `ann` HR@50 {hr[best]['hr@50']:.4f} vs {hr['torch']['hr@50']:.4f} fp32 "
               f"({hr[best]['hr@50_rel_change']:+.1%})" if best in hr else "")
    rows = [
        f"| text encoding, all-MiniLM-L6-v2, {report['dataset']} item texts (engine defaults: "
        f"{b['mean_tokens']:.0f} tokens/item at max_length {b['max_length']}), {report['config']['sample']} texts "
        f"× {report['config']['rounds']} rounds | **{best}** (default): {b['items_per_s']:.0f} items/s wall "
        f"(median; best round {b['items_per_s_best']:.0f}), {b['items_per_cpu_s']:.0f} items per CPU-second "
        f"→ ≤ {t['best_items_per_s_all_cores']:.0f} items/s on {t['cores']} idle cores; "
        f"{b['ratio_vs_torch']:.1f}× fp32 PyTorch ({ref['items_per_s']:.0f} items/s) in the same run "
        f"({b['ratio_vs_torch_cpu']:.1f}× per CPU-second); mean cosine {b['cos_mean']:.3f} (min "
        f"{b['cos_min']:.3f}) to fp32{hr_note}. **Target ≥ 1,000 items/s not met**, "
        f"{1000 / t['best_items_per_s_all_cores']:.1f}× short: {t['gflop_per_item']:.2f} GFLOP per item "
        f"({b['mean_tokens']:.0f} tokens × {t['gflop_per_item'] / b['mean_tokens'] * 1000:.0f} MFLOP) needs "
        f"{t['needed_gflop_per_s'] / 1000:.1f} TFLOP/s, the int8 path does {t['achieved_gflop_per_cpu_s']:.0f} "
        f"GOP/s per core; load average {min(loads):.1f}–{max(loads):.1f} | {cmd} |"]
    for name, v in s.items():
        if name in ("torch", best):
            continue
        h = hr.get(name)
        note = f", HR@50 {h['hr@50']:.4f} ({h['hr@50_rel_change']:+.1%})" if h else ""
        note += "; below the 0.99 cosine bar" if v["cos_mean"] < 0.99 else ""
        rows.append(f"| … {name} (max_length {v['max_length']}, {v['mean_tokens']:.0f} tokens/item), same run | "
                    f"{v['items_per_s']:.0f} items/s wall, {v['items_per_cpu_s']:.0f} per CPU-second "
                    f"({v['ratio_vs_torch_cpu']:.1f}× fp32 PyTorch); mean cosine {v['cos_mean']:.3f} (min "
                    f"{v['cos_min']:.3f}) to fp32 at max_length {ref['max_length']}{note} | {cmd} |")
    return "\n".join(rows)


def recall_rows(report: dict, out: str = "benchmarks/results/recall.json") -> str:
    """``benchmarks/results/recall.json`` (bench_recall.py) as rows of the README's Performance table: per-user
    fused recall latency and batch throughput against issue 6's targets, and HNSW search on the ann vectors."""
    t = report["targets"]
    made = report.get("sections_from", {})  # a report merged from runs of some sections (bench_recall --merge-into)

    def command(section: str) -> str:
        return f"`{made.get(section, report['command']).replace('python3', 'python')}` → `{out}`"

    rows = []
    for name in ("synthetic", "scientific"):
        sec = report.get(name)
        if not sec:
            continue
        cmd = command(name)
        if name == "synthetic":
            d = sec["dataset"]
            what = (f"synthetic {d['n_items']:,} items / {d['n_users']:,} users / {d['n_interactions']:,} "
                    f"interactions, routes {' + '.join(sec['routes'])}")
            if sec.get("ann_vectors"):
                v = sec["ann_vectors"]
                what += f" (`ann` over {v['dim']}-d {v['kind']} stand-in item vectors, {v['index'].upper()} index)"
        else:
            c = sec["dataset"]["counts"]
            what = f"amazon-scientific ({c['Item']:,} items), routes {' + '.join(sec['routes'])}"
        lat, th = sec["latency"], sec["throughput"]
        off, on = lat["ms"]["recall_explain_false"], lat["ms"]["recall_explain_true"]
        st = lat["stages_ms"]
        stages = ", ".join(f"{k.removeprefix('route:')} {v['cpu']['p50']:.2f}" for k, v in st.items()
                           if k.startswith("route:") or k == "fuse")
        load = f"load average {sec['load_average_1m_at_start']:.1f}–{sec['load_average_1m_at_end']:.1f}"
        p50, p99 = off["wall"]["p50"], off["wall"]["p99"]
        verdict = ("targets met" if p50 <= t["fused_recall_p50_ms"] and p99 <= t["fused_recall_p99_ms"] else
                   f"**target p50 ≤ {t['fused_recall_p50_ms']:g} ms / p99 ≤ {t['fused_recall_p99_ms']:g} ms not met** "
                   f"(p50 {p50 / t['fused_recall_p50_ms']:.1f}×, p99 {p99 / t['fused_recall_p99_ms']:.1f}× the target)")
        rows.append(
            f"| fused recall, k={lat['k']}, one user at a time on 1 thread, {what} | p50 **{p50:.2f} ms**, p99 "
            f"**{p99:.2f} ms** wall (CPU p50 {off['cpu']['p50']:.2f} / p99 {off['cpu']['p99']:.2f} ms) without "
            f"evidence; with evidence (`explain=True`, the default) p50 {on['wall']['p50']:.2f} / p99 "
            f"{on['wall']['p99']:.2f} ms; per stage CPU p50 (ms): {stages}; {lat['users']} users; {verdict}; "
            f"{load} | {cmd} |")
        best = th["best_users_per_s"]
        b2 = best.get("threads_2", 0)
        verdict = (f"target ≥ {t['batch_users_per_s_2_threads']:,} users/s met" if b2 >= t["batch_users_per_s_2_threads"]
                   else f"**target ≥ {t['batch_users_per_s_2_threads']:,} users/s on 2 cores not met** "
                        f"({t['batch_users_per_s_2_threads'] / b2:.1f}× short)")
        before = th.get("per_user_path")
        before = (f"; the per-user path it replaced: {before['users_per_s']:,.0f} users/s on 1 thread "
                  f"({before['users_per_cpu_s']:,.0f} per CPU-second against "
                  f"{max(r['users_per_cpu_s'] for r in th['runs']['threads_1']):,.0f} batched)") if before else ""
        rows.append(
            f"| batch recall (`recall_ids`, k={th['k']}), {what}, {th['users']:,} users in chunks of 256 | "
            f"{best['threads_1']:,.0f} users/s on 1 thread, **{b2:,.0f}** on a pool of 2 "
            f"({th.get('speedup_2_vs_1', 0):.2f}×){before}; {verdict}; {load} | {cmd} |")
    cmd = command("ann")
    for kind, sec in report.get("ann", {}).items():
        s = sec["search_ms"]["VectorIndex.search_exclude_10"]
        d, k = sec["dataset"], sec["k"]
        recall = sec[f"recall_at_{k}_vs_exact"]
        rows.append(
            f"| HNSW search (`VectorIndex.search`, k={k}, 10 items excluded, 1 thread), {d['n']:,} × "
            f"{d['dim']} {kind} vectors (M={sec['index']['M']}, ef {sec['index']['ef_effective']}) | p50 "
            f"{s['wall']['p50']:.2f} / p99 {s['wall']['p99']:.2f} ms wall (CPU p50 {s['cpu']['p50']:.2f}); "
            f"recall@{k} vs exact {recall:.3f}; built in "
            f"{sec['build_seconds']:.0f} s on {sec['build_threads']} threads{_ef_sweep(sec, k)} | {cmd} |")
    return "\n".join(rows)


def _ef_sweep(sec: dict, k: int) -> str:
    """The efSearch sweep of an ann section (``--ann-ef``), as ``; efSearch 450 / 600: recall … at … ms CPU``."""
    sweep = [e for e in sec.get("ef_sweep", []) if e["ef_search"] > k]
    if not sweep:
        return ""
    efs = " / ".join(str(e["ef_search"]) for e in sweep)
    recalls = " / ".join(f"{e[f'recall_at_{k}_vs_exact']:.3f}" for e in sweep)
    times = " / ".join(f"{e['search_cpu_ms']['p50']:.2f}" for e in sweep)
    return f"; efSearch {efs}: recall {recalls} at p50 {times} ms CPU"


def _build_table(report: dict) -> str:
    from bench_build import table  # this folder is on sys.path when run as a script

    return table(report)


def main() -> None:
    cols = ["hr@20", "ndcg@20", "hr@50", "ndcg@50", "coverage@50", "tail_share@50", "gini@50", "brand_gini@50"]
    for name in ("leave-last-out", "item-cold"):
        path = RESULTS / f"eval_scientific_{name}.json"
        if path.exists():
            print(f"### Scientific, {name}\n")
            print(_eval_table(path, cols))
            print()
    sections = [("quality.json", "Quality next to peers", quality_table),
                ("itemcf.json", "Performance rows: item-CF vs implicit", itemcf_rows),
                *((name, f"Performance rows: recall latency and throughput ({name})",
                   lambda report, name=name: recall_rows(report, f"benchmarks/results/{name}"))
                  for name in ("recall.json", "recall-1m-no-ann.json", "recall-quick.json")),
                ("encode.json", "Performance rows: text encoding", encode_rows),
                ("build.json", "Build by stage and scaling (bench_build.py)", _build_table)]
    for name, title, render in sections:
        if (RESULTS / name).exists():
            print(f"### {title}\n")
            print(render(json.loads((RESULTS / name).read_text(encoding="utf-8"))))
            print()


if __name__ == "__main__":
    main()
