"""The figure's layout: one cell per block (conv_i_j), the compared models stacked inside each cell.

Channel index on x, weight on y, one line per chosen class and a black line for the all-class average.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from deploy.fileio import atomic_path

ALL_CLASSES = "all classes"
_COLUMNS = 4


@dataclass
class ModelPanel:
    """One model's curves: {block label: {series name: (C,) weights}}; series names follow the legend."""

    title: str
    curves: Dict[str, Dict[str, np.ndarray]]


def plot_attention(path, panels: Sequence[ModelPanel], series: Sequence[str], title: str = "",
                   dpi: int = 90) -> str:
    """Write the figure as a PNG (atomically) and return its path."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and boards; must precede pyplot
    import matplotlib.pyplot as plt

    labels = _block_labels(panels)
    columns = min(_COLUMNS, len(labels))
    cell_rows = math.ceil(len(labels) / columns)
    height = (1.5 * len(panels) + 0.6) * cell_rows + 0.9
    figure = plt.figure(figsize=(3.6 * columns, height))
    # The top 0.9 inch holds the title and the legend, whatever the number of rows.
    grid = figure.add_gridspec(cell_rows, columns, hspace=0.3, wspace=0.22, top=1 - 0.9 / height,
                               bottom=0.35 / height, left=0.05, right=0.98)
    colors = _colors(series)
    for index, label in enumerate(labels):
        cell = grid[index // columns, index % columns].subgridspec(len(panels), 1, hspace=0.08)
        for row, panel in enumerate(panels):
            axes = figure.add_subplot(cell[row])
            _draw(axes, panel.curves.get(label, {}), series, colors)
            if row == 0:
                axes.set_title(label, fontsize=9)
            if row < len(panels) - 1:
                axes.tick_params(labelbottom=False)
            if index % columns == 0:
                axes.set_ylabel(panel.title, fontsize=7)
    handles = [plt.Line2D([], [], color=colors[name], lw=1.6 if name == ALL_CLASSES else 0.9) for name in series]
    figure.legend(handles, list(series), loc="upper center", ncol=min(len(series), 6), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, 1 - 0.35 / height))
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.1 / height)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: matplotlib would pick the format from the .part name
            figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return str(path)


def _block_labels(panels: Sequence[ModelPanel]) -> List[str]:
    labels: List[str] = []
    for panel in panels:
        labels.extend(label for label in panel.curves if label not in labels)
    return labels


def _colors(series: Sequence[str]) -> Dict[str, str]:
    palette = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan", "tab:gray"]
    colors, used = {}, 0
    for name in series:
        if name == ALL_CLASSES:
            colors[name] = "black"
        else:
            colors[name] = palette[used % len(palette)]
            used += 1
    return colors


def _draw(axes, curves: Dict[str, np.ndarray], series: Sequence[str], colors: Dict[str, str]) -> None:
    if not curves:
        axes.text(0.5, 0.5, "no block", ha="center", va="center", fontsize=7, transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    for name in series:
        if name in curves:
            values = np.asarray(curves[name])
            average = name == ALL_CLASSES
            axes.plot(np.arange(len(values)), values, color=colors[name], lw=_line_width(len(values), average),
                      alpha=1.0 if average else 0.85, zorder=3 if average else 2)
            axes.set_xlim(0, max(len(values) - 1, 1))
    axes.set_ylim(0.0, 1.0)
    axes.set_yticks([0.0, 0.5, 1.0])
    axes.tick_params(labelsize=6, length=2)
    axes.grid(True, axis="y", lw=0.3, alpha=0.5)


def _line_width(channels: int, average: bool) -> float:
    """Thinner lines for wide blocks, so 2048 channels do not merge into one band."""
    scale = 1.0 if channels <= 256 else 0.5
    return (1.3 if average else 0.7) * scale
