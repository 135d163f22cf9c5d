"""blender_scripts/run_pipeline.py as a subprocess with the venv's bpy module."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import ROOT, VENV_PYTHON, native_or_skip

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = ROOT / "blender_scripts" / "run_pipeline.py"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)


def run_script(*args, timeout=300):
    return subprocess.run(
        [PYTHON, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


SMALL = ("--frames", "4", "--resolution", "64", "--engine", "WORKBENCH", "--keyframes", "2", "--steps", "20",
         "--train-side", "32")


def blend_query(blend, expression):
    """Evaluates ``expression`` in a fresh Blender with the add-on registered
    and ``blend`` open; returns its printed value."""
    code = (f"import bpy, os, sys; sys.path.insert(0, {str(HERE)!r}); import conftest; "
            f"conftest.load_addon().register(); bpy.ops.wm.open_mainfile(filepath={str(blend)!r}); "
            f"print('RESULT', repr({expression})); os._exit(0)")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return eval(lines[-1][len("RESULT "):])


def test_demo_runs_headless_and_continues(tmp_path):
    """The demo with the exemplar stylizer and its procedural style image;
    then --run continues the saved run by one iteration, reusing the first."""
    native_or_skip()
    out = tmp_path / "demo"
    blend = tmp_path / "demo.blend"
    proc = run_script("--demo", "--stylizer", "exemplar", "--out", out, *SMALL, "--iterations", "1", "--save", blend)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "demo_style.png").is_file()
    work = out / "run-001"
    with open(work / "capture" / "transforms.json") as f:
        t = json.load(f)
    assert len(t["frames"]) == 4 and t["w"] == 64
    assert t["splatdiff"]["object"] == "Suzanne"
    for frame in t["frames"]:
        for key in ("file_path", "depth_file_path", "normal_file_path", "mask_file_path"):
            assert (work / "capture" / frame[key]).is_file()
    assert "%" in proc.stdout  # progress lines
    assert f"run: run-001 in {work}" in proc.stdout
    metrics = [line for line in proc.stdout.splitlines() if line.startswith("iteration 1: strength 0.600")]
    assert metrics and "refit_psnr" in metrics[0] and "change_psnr" in metrics[0], proc.stdout[-3000:]
    report = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("report: ")]
    assert report and os.path.isfile(report[0])
    assert blend_query(blend, "[(r.name, r.state, len(r.iterations)) for r in bpy.context.scene.splatdiff.runs]") == [
        ("run-001", "FINISHED", 1)]
    assert blend_query(blend, "len(bpy.data.objects['run-001 it1'].data.vertices) > 10") is True

    again = run_script("--blend", blend, "--run", "run-001", "--save", blend)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(reused)" in again.stdout
    for stage in ("points", "stylize-1", "propagate-1", "train-1", "render-1"):
        assert f"stage {stage}: reused" in again.stdout, stage
    assert "stage train-2: done" in again.stdout
    assert "iteration 2: strength 0.300" in again.stdout
    assert blend_query(blend, "sorted(o.name for o in bpy.data.objects if o.name.startswith('run-001'))") == [
        "run-001 it1", "run-001 it2"]


def test_external_stylizer_pauses_and_resumes_headless(tmp_path):
    native_or_skip()
    out = tmp_path / "out"
    blend = tmp_path / "external.blend"
    proc = run_script("--demo", "--stylizer", "external", "--out", out, *SMALL, "--iterations", "1", "--save", blend)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    folders = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("edit folder: ")]
    assert folders == [str(out / "run-001" / "edit-1")]
    assert sorted(os.listdir(folders[0]))  # the keyframes to edit
    assert "--run run-001 --resume" in proc.stdout
    assert blend_query(blend, "bpy.context.scene.splatdiff.runs['run-001'].state") == "PAUSED"

    resumed = run_script("--blend", blend, "--run", "run-001", "--resume", "--save", blend)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "iteration 1: strength" in resumed.stdout
    assert blend_query(blend, "bpy.context.scene.splatdiff.runs['run-001'].state") == "FINISHED"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--demo", "--out", "o", "--resume"), "--resume needs --run"),
        (("--run", "run-001"), "--run needs the --blend"),
        (("--demo",), "--out"),
    ],
)
def test_bad_arguments_exit_2(args, message):
    proc = run_script(*args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_unknown_run_names_the_recorded_ones(tmp_path):
    blend = tmp_path / "empty.blend"
    make = subprocess.run([PYTHON, "-c", f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})"],
                          capture_output=True, text=True, timeout=120)
    assert make.returncode == 0, make.stderr[-2000:]
    proc = run_script("--blend", blend, "--run", "run-007", timeout=120)
    assert proc.returncode == 1
    assert "No run named 'run-007'" in proc.stderr and "runs: none" in proc.stderr, proc.stderr[-2000:]


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
    assert not (tmp_path / "out" / "run-001").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_script("--demo", "--out", blocker / "sub", "--frames", "2", "--resolution", "32",
                      "--stylizer", "command", "--command", "tool {in} {out}", timeout=120)
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
    t = json.loads((tmp_path / "run" / "run-001" / "capture" / "transforms.json").read_text())
    assert t["splatdiff"]["engine"] == "BLENDER_WORKBENCH" and len(t["frames"]) == 2
