"""Results as JSON, a markdown report (tables + a check of each claim) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

WITHIN = 0.05  # "within a few points": 5 percentage points
SAFETY_TOLERANCE = 0.05  # "keeps the safety score at its pre-update level": within 5 points
LEARNED = 0.05  # a task counts as learned when its score beats the base model by 5 points


def _f(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def claims(result: dict) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) for each claim of the issue, computed from the numbers."""
    out = []
    single = result.get("single", {})
    if "lora" in single and "lori-s" in single:
        diffs = {t: single["lori-s"][t] - single["lora"][t] for t in single["lora"]}
        worst = min(diffs.values())
        text = ", ".join(f"{t} {100 * d:+.1f}" for t, d in diffs.items())
        out.append(("single-task LoRI-S within 5 points of LoRA on each task", f"LoRI-S − LoRA: {text}",
                    "holds" if worst >= -WITHIN else "does not hold"))
    ret = result.get("retention") or {}
    if ret:
        lora = {m: r["mean"] for m, r in ret.items() if m.startswith("lora") and r["mean"] is not None}
        lori = {m: r["mean"] for m, r in ret.items() if m.startswith("lori") and r["mean"] is not None}
        if lora and lori:
            best_lora = max(lora, key=lora.get)
            verdicts = [f"{m} {_f(v)} % vs best LoRA ({best_lora}) {_f(lora[best_lora])} %" for m, v in lori.items()]
            holds = all(v > lora[best_lora] for v in lori.values())
            some = any(v > lora[best_lora] for v in lori.values())
            out.append(("merged LoRI keeps more of its single-task scores than merged LoRA (mean retention)",
                        "; ".join(verdicts), "holds" if holds else ("holds for some LoRI merges" if some else "does not hold")))
    cont = result.get("continual") or {}
    if cont.get("lori-s-protected"):
        rows = cont["lori-s-protected"]
        drops = {t: r["safety"] - r["safety_before"] for t, r in rows.items()}
        text = ", ".join(f"after {t} {100 * d:+.1f}" for t, d in drops.items())
        identical = all(r.get("safety_coords_identical", False) for r in rows.values())
        learned = {t: r["score"] for t, r in rows.items()}
        base = result.get("base", {})
        learn_text = ", ".join(f"{t} {_f(s)} (base {_f(base.get(t))})" for t, s in learned.items())
        kept = min(drops.values()) >= -SAFETY_TOLERANCE
        learned_all = all(s - base.get(t, 0.0) >= LEARNED for t, s in learned.items())
        if kept and learned_all:
            verdict = "holds"
        elif kept:
            verdict = "safety kept, but the new task was not learned (not a test of the claim)"
        else:
            verdict = "does not hold"
        out.append(("protected continual updates keep safety at its pre-update level while learning the new task",
                    f"safety change {text}; new-task scores {learn_text}; safety coordinates bit-identical: {identical}",
                    verdict))
        for method in ("lora", "lori-d", "lori-s-overlap"):
            if cont.get(method):
                forget = _mean(r["safety_before"] - r["safety"] for r in cont[method].values())
                out.append((f"forgetting of {method} (unprotected)", f"mean safety drop {_f(forget)} points", "measured"))
    return out


def markdown(result: dict) -> str:
    lines: list[str] = []
    cfg = result.get("config", {})
    tasks = cfg.get("tasks") or sorted(next(iter(result["single"].values())).keys())
    quick = result.get("quick")
    lines.append("# LoRI quality benchmark" + (" (--quick: tiny random model, numbers meaningless)" if quick else ""))
    lines.append("")
    lines.append(f"Model `{cfg.get('model')}`; rank {cfg.get('rank')}, alpha {cfg.get('alpha')}, "
                 f"{cfg.get('steps')} steps per phase, batch {cfg.get('batch_size')}, lr {cfg.get('lr')}, "
                 f"sparsity {cfg.get('sparsity')}; {cfg.get('n_train')} train / {cfg.get('n_test')} test examples per task. "
                 f"Scores in %. Runtime {result.get('runtime_s')} s.")
    if result.get("command"):
        lines.append(f"Command: `{result['command']}`")
    lines.append("")
    single = dict(result["single"])
    cols = ["base"] + list(single)
    table = {"base": result.get("base", {}), **single}
    lines.append("## Single task")
    lines.append("")
    lines.append("| task | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(_f(table[c].get(t)) for c in cols) + " |")
    lines.append("| mean | " + " | ".join(_f(_mean(table[c].get(t) for t in tasks)) for c in cols) + " |")
    lines.append("")
    if result.get("merged"):
        merged, ret = result["merged"], result.get("retention", {})
        cols = list(merged)
        lines.append("## Merged (all tasks in one model)")
        lines.append("")
        lines.append("| task | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for t in tasks:
            lines.append(f"| {t} | " + " | ".join(_f(merged[c].get(t)) for c in cols) + " |")
        lines.append("| retention (mean merged / single) | " + " | ".join(_f(ret.get(c, {}).get("mean")) for c in cols) + " |")
        lines.append("| single-task reference | " + " | ".join(str(ret.get(c, {}).get("reference", "")) for c in cols) + " |")
        excluded = sorted({t for c in cols for t in ret.get(c, {}).get("excluded", [])})
        if excluded:
            lines.append("")
            lines.append(f"Left out of the retention mean for some method (single-task score not 5 points above base): "
                         f"{', '.join(excluded)}.")
        lines.append("")
    if result.get("continual"):
        cont = result["continual"]
        cols = list(cont)
        new_tasks = [t for t in tasks if t != "safety"]
        lines.append("## Continual (safety first, then one other task)")
        lines.append("")
        lines.append("Each cell: new-task score / safety after the update (safety before).")
        lines.append("")
        lines.append("| new task | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for t in new_tasks:
            cells = []
            for c in cols:
                r = cont[c].get(t)
                cells.append("–" if r is None else f"{_f(r['score'])} / {_f(r['safety'])} ({_f(r['safety_before'])})")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        ret_cells = []
        for c in cols:
            ratios = [r["safety"] / r["safety_before"] for r in cont[c].values() if r["safety_before"] > 0]
            ret_cells.append(_f(_mean(ratios)))
        lines.append("| safety retention (after / before) | " + " | ".join(ret_cells) + " |")
        lines.append("")
    if result.get("safety_detail"):
        lines.append("## Safety detail (refusal rate on harmful / answer rate on benign look-alikes)")
        lines.append("")
        lines.append("| model | refusal (harmful) | answered (benign) |")
        lines.append("|---|---|---|")
        for label, d in result["safety_detail"].items():
            lines.append(f"| {label} | {_f(d['refusal_harmful'])} | {_f(d['answer_benign'])} |")
        lines.append("")
    found = claims(result)
    if found:
        lines.append("## Claims, as measured")
        lines.append("")
        lines.append("| claim | measured | verdict |")
        lines.append("|---|---|---|")
        for claim, measured, verdict in found:
            lines.append(f"| {claim} | {measured} | {verdict} |")
        lines.append("")
    if result.get("trainable"):
        lines.append("## Trainable parameters per run")
        lines.append("")
        shown = {k: v for k, v in result["trainable"].items() if "/" in k and k.count("/") == 1}
        lines.append(", ".join(f"{k}: {v:,}" for k, v in shown.items()))
        lines.append("")
    if result.get("timings"):
        lines.append("Timings (s): " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()))
        lines.append("")
    return "\n".join(lines)


def make_plots(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    tasks = result.get("config", {}).get("tasks") or sorted(next(iter(result["single"].values())))

    def bars(ax, groups: dict[str, dict], keys: list[str], title: str) -> None:
        width = 0.8 / max(1, len(groups))
        for i, (label, values) in enumerate(groups.items()):
            xs = [k + i * width for k in range(len(keys))]
            ax.bar(xs, [100 * (values.get(k) or 0.0) for k in keys], width, label=label)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys)
        ax.set_ylim(0, 105)
        ax.set_ylabel("score (%)")
        ax.set_title(title)
        ax.legend(fontsize=7)

    fig, ax = plt.subplots(figsize=(8, 4))
    bars(ax, {"base": result.get("base", {}), **result["single"]}, tasks, "Single-task scores")
    paths.append(out / "single.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if result.get("merged"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        bars(ax1, result["merged"], tasks, "Merged model: per-task scores")
        ret = result.get("retention", {})
        names = list(ret)
        ax2.bar(names, [100 * (ret[m]["mean"] or 0.0) for m in names],
                color=["tab:blue" if m.startswith("lora") else "tab:orange" for m in names])
        ax2.set_ylabel("mean retention (%)")
        ax2.set_title("Merged / single-task score")
        ax2.tick_params(axis="x", rotation=30)
        paths.append(out / "merged.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if result.get("continual"):
        cont = result["continual"]
        new_tasks = [t for t in tasks if t != "safety"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        bars(ax1, {m: {t: r["score"] for t, r in per.items()} for m, per in cont.items()}, new_tasks,
             "Continual: new-task score")
        groups = {"safety before": {}, **{m: {} for m in cont}}
        for m, per in cont.items():
            for t, r in per.items():
                groups[m][t] = r["safety"]
                groups["safety before"].setdefault(t, r["safety_before"] if m == "lori-s-protected" else None)
        bars(ax2, {k: v for k, v in groups.items() if k != "safety before"}, new_tasks,
             "Continual: safety score after each update")
        paths.append(out / "continual.png")
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_all(result: dict, out: Path, plots: bool = True) -> list[Path]:
    """results.json, results.md and the PNGs under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result) + "\n", encoding="utf-8")
    if plots:
        paths += make_plots(result, out)
    return paths
