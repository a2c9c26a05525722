"""Plot file size, export and import time per format (log scales) for the main benchmark case."""

from __future__ import annotations

from pathlib import Path

import report


def plot(raw: dict, path: Path) -> Path:
    """Write a PNG with size and time bars per format of the tsfull case (or the first case)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import peers

    agg = report.aggregate(raw["rows"])
    case = "tsfull" if "tsfull" in raw["cases"] else next(iter(raw["cases"]))
    formats = peers.all_formats()
    names = [n for n in formats if agg.get((case, n), {}).get("export_status") == "ok"]
    labels = [formats[n].label for n in names]
    sizes = [agg[(case, n)]["bytes"] / report.MB for n in names]
    exports = [agg[(case, n)].get("export_s") or 0 for n in names]
    imports = [agg[(case, n)].get("import_s") or 0 for n in names]
    palette = {"ours-node": "tab:green", "ours-numpy": "tab:green", "floor": "tab:gray"}
    colors = [palette.get(formats[n].family, "tab:blue") for n in names]

    fig, axes = plt.subplots(1, 3, figsize=(15, 0.38 * len(names) + 1.6), sharey=True)
    y = range(len(names))
    for ax, values, title, unit in (
        (axes[0], sizes, "File size", "MB"),
        (axes[1], exports, "Export time", "s"),
        (axes[2], imports, "Import time", "s"),
    ):
        ax.barh(list(y), values, color=colors)
        ax.set_xscale("log")
        ax.set_title(f"{title} ({unit}, log scale)")
        ax.grid(axis="x", which="both", alpha=0.3)
        for yi, value in zip(y, values):
            if value > 0:
                ax.text(value, yi, f" {value:.3g}", va="center", fontsize=7)
    axes[0].set_yticks(list(y))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    summary = raw["cases"][case]
    fig.suptitle(f"{case}: {summary['segments']} segments, {'x'.join(map(str, summary['shape'][::-1]))} "
                 f"- {raw['machine']['date']}, {raw['machine']['cores']} cores (green: this project, "
                 f"blue: peers, gray: codec alone)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_scaling(raw: dict, path: Path) -> Path | None:
    """Export/import seconds of ours and highdicom against label voxels, segment count and layer count."""
    import cases
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = report.aggregate(raw["rows"])
    summaries = raw["cases"]
    studies = [(study, [n for n in names if n in summaries]) for study, names in cases.SCALING.items()]
    studies = [(study, names) for study, names in studies if len(names) >= 2]
    if not studies:
        return None
    fig, axes = plt.subplots(1, len(studies), figsize=(5 * len(studies), 3.6), squeeze=False)
    for ax, (study, names) in zip(axes[0], studies):
        def x_of(name: str, study: str = study) -> float:
            summary = summaries[name]
            if study == "voxels":
                return summary["label_bytes"] / summary["layers"] / (2 if summary["dtype"] == "uint16" else 1) / 1e6
            return summary["segments"] if study == "segments" else summary["layers"]

        xs = [x_of(n) for n in names]
        for fmt, color, label in ((report.PRIMARY, "tab:green", "ours"), (report.HIGHDICOM, "tab:blue", "highdicom")):
            for op, style in (("export", "-o"), ("import", "--s")):
                ys = [agg.get((n, fmt), {}).get(f"{op}_s") for n in names]
                points = [(x, y) for x, y in zip(xs, ys) if y is not None]
                if points:
                    ax.plot(*zip(*points), style, color=color, label=f"{label} {op}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel({"voxels": "voxels (millions)", "segments": "segments", "layers": "layers"}[study])
        ax.set_ylabel("seconds")
        ax.grid(which="both", alpha=0.3)
        ax.set_title(f"scaling with {study}")
        ax.legend(fontsize=7)
    fig.suptitle(f"JPEG-LS LABELMAP, node <-> files - {raw['machine']['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
