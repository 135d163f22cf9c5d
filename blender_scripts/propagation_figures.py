"""Makes the README's propagation pictures. Run first::

    .venv/bin/python tests/benchmarks/bench_propagation.py --keys 4,8,12 --baseline 8
    E=../shared/data/ebsynth_examples
    splatdiff exemplar --style $E/facestyle/source_painting.png \\
        --guide $E/facestyle/source_Gapp.png $E/facestyle/target_Gapp.png 0.5 \\
        --guide $E/facestyle/source_Gseg.png $E/facestyle/target_Gseg.png 1.5 \\
        --guide $E/facestyle/source_Gpos.png $E/facestyle/target_Gpos.png 1.5 --out out/exemplar/facestyle.png
    splatdiff exemplar --style $E/stylit/source_style.png \\
        --guide $E/stylit/source_fullgi.png $E/stylit/target_fullgi.png 0.66 \\
        --guide $E/stylit/source_dirdif.png $E/stylit/target_dirdif.png 0.66 \\
        --guide $E/stylit/source_indirb.png $E/stylit/target_indirb.png 0.66 --out out/exemplar/stylit.png
    .venv/bin/python blender_scripts/propagation_figures.py

* ``propagation_truth.png``: three non-key frames (K = 8): capture, truth,
  splatdiff, the EbSynth workflow, and splatdiff's error x4;
* ``exemplar.png``: EbSynth's facestyle and stylit examples through
  splatdiff's guided synthesis.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from readme_figures import load_pixels, save_pixels  # noqa: E402

BACKGROUND = np.array([0.16, 0.16, 0.17, 1.0], np.float32)


def over(p):
    return p * p[..., 3:] + BACKGROUND * (1.0 - p[..., 3:])


def half(p):
    h, w = p.shape[0] // 2 * 2, p.shape[1] // 2 * 2
    p = p[:h, :w]
    return 0.25 * (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2])


def to_height(p, height):
    """Nearest-neighbour resize to ``height`` rows (keeps the aspect)."""
    h, w = p.shape[:2]
    width = max(1, round(w * height / h))
    ys = (np.arange(height) * h / height).astype(int)
    xs = (np.arange(width) * w / width).astype(int)
    return p[ys][:, xs]


def gap(height, width=6):
    return np.ones((height, width, 4), np.float32)


def truth_sheet(truth_dir, out_path, frames=("r_002", "r_011", "r_024")):
    rows = []
    for name in frames:
        capture = load_pixels(os.path.join(truth_dir, "capture", "capture", "images", name + ".png"))
        truth = load_pixels(os.path.join(truth_dir, "restyled", "capture", "images", name + ".png"))
        ours = load_pixels(os.path.join(truth_dir, "bench", "geometry_k8", name + ".png"))
        ebsynth = load_pixels(os.path.join(truth_dir, "bench", "patch_k8", name + ".png"))
        err = np.abs(ours - truth)
        err[..., :3] = np.clip(4.0 * err[..., :3], 0.0, 1.0)
        err[..., 3] = truth[..., 3]
        cells = [half(over(c)) for c in (capture, truth, ours, ebsynth, err)]
        h = cells[0].shape[0]
        row = []
        for c in cells:
            row += [c, gap(h)]
        rows += [np.concatenate(row[:-1], axis=1), np.ones((6, sum(c.shape[1] for c in cells) + 6 * 4, 4), np.float32)]
    save_pixels(np.concatenate(rows[:-1], axis=0), out_path)


def exemplar_sheet(examples, results, out_path, height=300):
    rows = []
    for name, style, guide in (("facestyle", "source_painting.png", "target_Gapp.png"),
                               ("stylit", "source_style.png", "target_fullgi.png")):
        cells = [load_pixels(os.path.join(examples, name, style)), load_pixels(os.path.join(examples, name, guide)),
                 load_pixels(os.path.join(results, name + ".png"))]
        cells = [to_height(c, height) for c in cells]
        row = []
        for c in cells:
            row += [c, gap(height)]
        rows.append(np.concatenate(row[:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.concatenate([r, np.ones((height, width - r.shape[1], 4), np.float32)], axis=1) for r in rows]
    save_pixels(np.concatenate([rows[0], gap(6, width), rows[1]], axis=0), out_path)


def main():
    figures = os.path.join(ROOT, "tests", "figures")
    truth_sheet(os.path.join(ROOT, "out", "truth"), os.path.join(figures, "propagation_truth.png"))
    examples = os.path.join(os.path.dirname(ROOT), "shared", "data", "ebsynth_examples")
    exemplar_sheet(examples, os.path.join(ROOT, "out", "exemplar"), os.path.join(figures, "exemplar.png"))


if __name__ == "__main__":
    main()
