"""Ground-truth benchmark of keyframe propagation (issue: propagation).

Renders one 36-view turntable of the scanned head in ``../shared/data/lps_head``
twice, with two looks (``blender_scripts/truth_scene.py``): the scan's own
texture (the capture the propagator sees) and a different texture on the
same UVs (the "restyled" truth, known in every frame). Then runs
``bench_truth``, which gives the propagator the truth at K keyframes and
compares its output with the truth on all other frames (PSNR and SSIM inside
the mask, temporal warp error, seconds per frame), for splatdiff's geometry
method and for EbSynth's workflow (patch synthesis from the keyframes before
and after, crossfaded).

    .venv/bin/python tests/benchmarks/bench_propagation.py [--keys 4,8,12] [--baseline 8]
"""

import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "lps_head")


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "out", "truth"))
    p.add_argument("--keys", default="4,8,12")
    p.add_argument("--baseline", default="8", help="K values for the EbSynth-workflow baseline ('' for none)")
    p.add_argument("--frames", type=int, default=36)
    p.add_argument("--resolution", type=int, default=512)
    args = p.parse_args()
    if not os.path.isdir(DATA):
        print(f"skipped: {DATA} is absent (shared data not available)")
        return 0
    py = sys.executable
    for look in ("capture", "restyled"):
        blend = os.path.join(args.out, f"{look}.blend")
        run([py, "blender_scripts/truth_scene.py", "--look", look, "--save", blend, "--data", DATA])
        shutil.rmtree(os.path.join(args.out, look), ignore_errors=True)  # so that the run is run-001
        run([py, "blender_scripts/run_pipeline.py", "--blend", blend, "--object", "LeePerrySmith", "--capture-only",
             "--out", os.path.join(args.out, look), "--engine", "WORKBENCH", "--frames", str(args.frames),
             "--resolution", str(args.resolution)])
    bench = ["cargo", "run", "--release", "-p", "splatdiff-propagate", "--example", "bench_truth", "--",
             "--capture", os.path.join(args.out, "capture", "run-001", "capture"),
             "--truth", os.path.join(args.out, "restyled", "run-001", "capture"), "--keys", args.keys,
             "--save", os.path.join(args.out, "bench")]
    if args.baseline:
        bench += ["--baseline", args.baseline]
    run(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
