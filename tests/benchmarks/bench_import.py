"""Benchmark: importing a 1,000,000-splat SH-degree-3 PLY into Blender.

Run with the development venv (Blender as the ``bpy`` module)::

    .venv/bin/python tests/benchmarks/bench_import.py [--count 1000000] [--repeat 3]

Writes a standard-layout 3DGS PLY (x y z nx ny nz f_dc_0..2 f_rest_0..44
opacity scale_0..2 rot_0..3, all float) to a temporary folder, then times,
each in a fresh Python process (so that the peak RSS figures are separate):

* ``blender``: Blender's own PLY importer, ``bpy.ops.wm.ply_import``;
* ``ours``: ``splat_io.import_splats`` until the object is ready to display
  (mesh, every attribute, display attributes, GN modifier and material),
  with a breakdown (native read vs. Blender side) of the best run.

Each reports the best of ``--repeat`` runs after one warm-up run, and the
process's peak RSS. Not a test: it prints figures and exits 0.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_standard_ply(path, count, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    names = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(45)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {count}\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n"
    ).encode("ascii")
    body = rng.standard_normal((count, len(names)), dtype=np.float32)
    body[:, 3:6] = 0.0
    body[:, names.index("scale_0"):names.index("scale_0") + 3] -= 4.0
    with open(path, "wb") as f:
        f.write(header)
        f.write(body.tobytes())
    return path


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _clear_imported(bpy, before_objects, before_meshes):
    for obj in set(bpy.data.objects) - before_objects:
        bpy.data.objects.remove(obj)
    for mesh in set(bpy.data.meshes) - before_meshes:
        bpy.data.meshes.remove(mesh)


def _splat_io():
    if "splatdiff" not in sys.modules:
        package = types.ModuleType("splatdiff")  # the add-on's modules, without registering it
        package.__path__ = [str(ROOT / "addon")]
        sys.modules["splatdiff"] = package
    import splatdiff.splat_io

    return splatdiff.splat_io


def worker(which, path, repeat):
    import bpy

    rss_after_bpy = _peak_rss_mib()
    before_objects, before_meshes = set(bpy.data.objects), set(bpy.data.meshes)
    splat_io = _splat_io() if which == "ours" else None
    times, read_times = [], []
    breakdown = None
    if splat_io is not None:  # time the native read inside each import
        native = splat_io.native.load()
        read_ply = native.read_ply

        def timed_read_ply(*args, **kwargs):
            start = time.perf_counter()
            try:
                return read_ply(*args, **kwargs)
            finally:
                read_times.append(time.perf_counter() - start)

        native.read_ply = timed_read_ply
    for run in range(repeat + 1):
        if which == "blender":
            start = time.perf_counter()
            result = bpy.ops.wm.ply_import(filepath=path)
            elapsed = time.perf_counter() - start
            assert result == {'FINISHED'}, result
            obj = bpy.context.view_layer.objects.active
        else:
            start = time.perf_counter()
            obj = splat_io.import_splats(bpy.context, path)
            elapsed = time.perf_counter() - start
        count = len(obj.data.vertices)
        n_attributes = len([a for a in obj.data.attributes if not a.name.startswith(".")])
        if run:
            times.append(elapsed)
        _clear_imported(bpy, before_objects, before_meshes)

    if which == "ours":
        native.read_ply = read_ply
        best = times.index(min(times))
        read_s = read_times[1:][best]
        breakdown = {"native_read_ply_s": read_s, "blender_side_s": times[best] - read_s}
    return {
        "which": which,
        "count": count,
        "attributes": n_attributes,
        "best_s": min(times),
        "times_s": times,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_import_bpy_mib": rss_after_bpy,
        "breakdown": breakdown,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("blender", "ours"))
    parser.add_argument("--ply", help="use this PLY instead of writing one")
    parser.add_argument("--worker", choices=("blender", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, args.ply, args.repeat)))
        return 0

    with tempfile.TemporaryDirectory(prefix="splatdiff-bench-") as tmp:
        path = args.ply or os.path.join(tmp, f"splats_{args.count}.ply")
        if not args.ply:
            start = time.perf_counter()
            write_standard_ply(path, args.count)
            print(f"wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB) in {time.perf_counter() - start:.2f} s")
        results = {}
        for which in ("blender", "ours"):
            if args.only and which != args.only:
                continue
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", which, "--ply", path, "--repeat", str(args.repeat)],
                capture_output=True, text=True,
            )
            lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
            if proc.returncode or not lines:
                print(f"{which}: failed (exit {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                continue
            results[which] = json.loads(lines[-1])

    labels = {"blender": "Blender bpy.ops.wm.ply_import", "ours": "splatdiff import_splats"}
    for which, r in results.items():
        runs = ", ".join(f"{t:.3f}" for t in r["times_s"])
        print(
            f"{labels[which]:32s} best {r['best_s']:.3f} s (runs {runs}); {r['count']:,} points, "
            f"{r['attributes']} attributes; peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"(after importing bpy {r['rss_after_import_bpy_mib']:.0f} MiB)"
        )
        if r["breakdown"]:
            b = r["breakdown"]
            print(f"{'':32s} native read_ply {b['native_read_ply_s']:.3f} s + Blender side {b['blender_side_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
