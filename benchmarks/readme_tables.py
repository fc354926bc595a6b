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


def main() -> None:
    cols = ["hr@20", "ndcg@20", "hr@50", "ndcg@50", "coverage@50", "tail_share@50", "gini@50", "brand_gini@50"]
    for name in ("leave-last-out", "item-cold"):
        path = RESULTS / f"eval_scientific_{name}.json"
        if path.exists():
            print(f"### Scientific, {name}\n")
            print(_eval_table(path, cols))
            print()


if __name__ == "__main__":
    main()
