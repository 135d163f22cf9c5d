"""blender_scripts/run_pipeline.py as a subprocess with the venv's bpy module."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, VENV_PYTHON, native_or_skip

SCRIPT = ROOT / "blender_scripts" / "run_pipeline.py"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)


def run_script(*args, timeout=300):
    return subprocess.run(
        [PYTHON, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_demo_runs_headless(tmp_path):
    native_or_skip()
    out = tmp_path / "demo"
    small = ("--frames", "4", "--resolution", "64", "--samples", "4", "--steps", "20", "--train-side", "32")
    proc = run_script("--demo", "--out", out, *small)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "capture" / "transforms.json") as f:
        t = json.load(f)
    assert len(t["frames"]) == 4 and t["w"] == 64
    assert t["splatdiff"]["object"] == "Suzanne"
    for frame in t["frames"]:
        for key in ("file_path", "depth_file_path", "normal_file_path", "mask_file_path"):
            assert (out / "capture" / frame[key]).is_file()
    lines = proc.stdout.splitlines()
    not_built = [line for line in lines if line.startswith("stages not built yet:")]
    assert not_built, proc.stdout[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    finished = {s["name"] for s in manifest["stages"] if s["status"] == "finished"}
    assert "capture" in finished
    for name in not_built[0].split(":", 1)[1].split(","):
        name = name.strip()
        if name and name != "none":
            assert name not in finished
    assert "%" in proc.stdout  # progress lines

    # Run again, saving the scene: the capture is reused, not rendered again,
    # and the trained splats are imported.
    blend = tmp_path / "demo.blend"
    again = run_script("--demo", "--out", out, *small, "--save", blend)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(reused)" in again.stdout
    assert "splats: " in again.stdout
    check = subprocess.run(
        [PYTHON, "-c", f"import bpy, os; bpy.ops.wm.open_mainfile(filepath={str(blend)!r}); "
         "o = bpy.data.objects['splatdiff Suzanne']; "
         "print(len(o.data.vertices), o.users_collection[0].name, o.modifiers[0].type, sep='|'); os._exit(0)"],
        capture_output=True, text=True, timeout=120,
    )
    count, collection, modifier = check.stdout.strip().splitlines()[-1].split("|")
    assert int(count) > 100 and collection == "splatdiff Suzanne" and modifier == "NODES", check.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--object", "NoSuchObject"), "NoSuchObject"),
        (("--object", "Key Light"), "not a mesh"),
        (("--engine", "POVRAY"), "POVRAY"),
        (("--elevations", "up"), "elevation"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, args, message):
    proc = run_script("--demo", "--out", tmp_path / "out", "--frames", "2", "--resolution", "32", *args, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("splatdiff: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "out" / "capture").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_script("--demo", "--out", blocker / "sub", "--frames", "2", "--resolution", "32", timeout=120)
    assert proc.returncode != 0
    assert "cannot be created" in proc.stderr and str(blocker) in proc.stderr


def test_missing_blend_file(tmp_path):
    proc = run_script("--blend", tmp_path / "nope.blend", "--object", "Cube", "--out", tmp_path / "o", timeout=120)
    assert proc.returncode != 0 and "nope.blend" in proc.stderr


def test_blend_file_and_object(tmp_path):
    """--blend with a saved scene (the factory Cube) and --capture-only."""
    native_or_skip()
    blend = tmp_path / "cube.blend"
    make = subprocess.run(
        [PYTHON, "-c", f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})"],
        capture_output=True, text=True, timeout=120,
    )
    assert make.returncode == 0 and blend.is_file(), make.stderr[-2000:]
    proc = run_script("--blend", blend, "--object", "Cube", "--out", tmp_path / "run", "--frames", "2",
                      "--resolution", "32", "--samples", "2", "--engine", "WORKBENCH", "--capture-only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = json.loads((tmp_path / "run" / "capture" / "transforms.json").read_text())
    assert t["splatdiff"]["engine"] == "BLENDER_WORKBENCH" and len(t["frames"]) == 2
