"""The whole loop in real Blender through the add-on's operators: capture,
points, and per iteration stylize, propagate, train and render; every
iteration imported into its own collection and recorded in the scene's
history with its metrics and pictures. Diffusion with the tiny test models
(with and without a depth ControlNet), the external stylizer's pause and
resume, the command stylizer (working, failing, hanging), the history saved
and reopened from a moved project folder and continued, deleting iterations
and runs, cancelling, and bad input.

Runs are tiny (8 Workbench views of 64 px, 2 keyframes, 30 training steps at
32 px): they test the plumbing, not the pictures.
"""

import os
import shutil
import time

import bpy
import numpy as np
import pytest
from conftest import TINY_CONTROLNET, TINY_SD15, native_or_skip, python_command, tiny_run

STAGES = ("stylize", "propagate", "train", "render")


@pytest.fixture
def cube_scene(fresh_scene):
    """The factory scene; its Cube is the target. The native module is required."""
    native_or_skip()
    return fresh_scene


def cube():
    return bpy.data.objects["Cube"]


def record(name="run-001"):
    from splatdiff import history

    found = history.find(bpy.context.scene, name)
    assert found is not None, f"no record {name}"
    return found


def runtime():
    return bpy.context.window_manager.splatdiff


def check_iterations(addon, count, name="run-001"):
    """The record has ``count`` finished iterations, each imported into
    ``"<run> it<i>"`` inside the run's collection, with metrics and pictures;
    only the newest is visible. Returns the record."""
    h = addon.history
    rec = record(name)
    assert rec.state == 'FINISHED', (rec.state, rec.error)
    assert [item.index for item in rec.iterations] == list(range(1, count + 1))
    parent = bpy.data.collections[name]
    assert rec.collection == parent
    for item in rec.iterations:
        collection = item.collection
        assert collection is not None and collection.name == f"{name} it{item.index}"
        assert collection.name in parent.children
        objects = list(collection.objects)
        assert len(objects) == 1 and len(objects[0].data.vertices) > 10
        assert objects[0].modifiers[0].type == 'NODES'
        metrics = h.metrics(item)
        for key, _label, _fmt in h.METRICS:
            assert isinstance(metrics.get(key), (int, float)), (item.index, key, metrics)
        for path in (item.splats, item.keyframe_sheet, item.contact_sheet, item.turntable):
            assert path and not os.path.isabs(path), path
            assert os.path.isfile(h.work_path(rec, path)), path
        assert collection.hide_viewport == (item.index < count)
    for path in (rec.report_html, rec.report_markdown):
        assert path and os.path.isfile(h.work_path(rec, path)), path
    strengths = [item.strength for item in rec.iterations]
    assert strengths == pytest.approx([0.6 * 0.5 ** i for i in range(count)])
    return rec


# ----------------------------------------------------------------- diffusion


@pytest.mark.parametrize(
    "controlnet, guidance",
    [(None, 7.5), (TINY_CONTROLNET, 1.0)],
    ids=["no-controlnet", "depth-controlnet"],
)
def test_diffusion_loop_two_iterations(cube_scene, addon, tmp_path, controlnet, guidance):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path, stylizer='DIFFUSION', model_path=str(TINY_SD15),
             diffusion_steps=4, guidance_scale=guidance, consistency='CROSS_FRAME',
             controlnet_depth=str(controlnet) if controlnet else "")
    assert bpy.ops.splatdiff.run() == {'FINISHED'}
    rt = runtime()
    assert (rt.stage, rt.last_error) == ("done", "")
    assert "imported run-001 it1, run-001 it2" in rt.last_result
    rec = check_iterations(addon, 2)
    settings = addon.run.RunSettings.from_json(rec.settings)
    assert settings.controlnet_depth == (str(controlnet) if controlnet else "")
    assert (settings.diffusion_steps, settings.consistency) == (4, "cross-frame")
    assert os.path.isdir(tmp_path / "run-001" / "stylize-2")


# ------------------------------------------------------------------ external


def edit_png(path, change):
    """Rewrites the PNG at ``path`` with ``change(pixels)`` applied ((h, w, 4) float array)."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = image.size
        pixels = np.empty(w * h * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        image.pixels.foreach_set(change(pixels.reshape(h, w, 4)).ravel())
        image.filepath_raw = str(path)
        image.file_format = 'PNG'
        image.save()
    finally:
        bpy.data.images.remove(image)


def write_png(path, width, height, color):
    image = bpy.data.images.new("test png", width, height, alpha=True)
    try:
        image.pixels.foreach_set(np.tile(np.asarray(color, np.float32), width * height))
        image.filepath_raw = str(path)
        image.file_format = 'PNG'
        image.save()
    finally:
        bpy.data.images.remove(image)


def test_external_stylizer_pauses_and_resumes(cube_scene, addon, tmp_path):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path, stylizer='EXTERNAL', iterations=1)
    assert bpy.ops.splatdiff.run() == {'FINISHED'}  # a pause is no error
    rec = record()
    assert rec.state == 'PAUSED' and runtime().stage == "paused"
    edit = tmp_path / "run-001" / "edit-1"
    assert addon.history.work_path(rec, rec.edit_folder) == str(edit)
    keyframes = sorted(p for p in edit.iterdir() if p.suffix == ".png")
    assert len(keyframes) == 2
    assert len(rec.iterations) == 0 and "run-001" not in bpy.data.collections

    # Resume without every image: the error names the missing one; Resume stays possible.
    aside = tmp_path / keyframes[0].name
    shutil.move(keyframes[0], aside)
    with pytest.raises(RuntimeError, match=f"missing: {keyframes[0].stem}"):
        bpy.ops.splatdiff.resume_run()
    rec = record()
    assert rec.state == 'FAILED' and keyframes[0].stem in rec.error and rec.edit_folder
    shutil.move(aside, keyframes[0])

    # A resized image: the error names it.
    original = keyframes[1].read_bytes()
    write_png(keyframes[1], 40, 24, (1.0, 0.0, 0.0, 1.0))
    with pytest.raises(RuntimeError, match=keyframes[1].name):
        bpy.ops.splatdiff.resume_run()
    keyframes[1].write_bytes(original)

    # Edited keyframes of the same size: Resume finishes and imports.
    for path in keyframes:
        edit_png(path, lambda px: np.concatenate([px[..., 2::-1], px[..., 3:]], axis=2))  # RGB -> BGR
    assert bpy.ops.splatdiff.resume_run() == {'FINISHED'}
    rec = check_iterations(addon, 1)
    assert rec.edit_folder == "" and runtime().stage == "done"


# ------------------------------------------------------------------- command


def test_command_stylizer_copies(cube_scene, addon, tmp_path):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path, stylizer='COMMAND')
    assert bpy.ops.splatdiff.run() == {'FINISHED'}
    check_iterations(addon, 2)


@pytest.mark.parametrize(
    "code, message",
    [
        ("import sys; sys.stderr.write('zqx the tool broke'); sys.exit(3)", "zqx the tool broke"),
        ("import time; time.sleep(60)", "timed out"),
    ],
    ids=["fails", "hangs"],
)
def test_command_stylizer_errors(cube_scene, addon, tmp_path, code, message):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path, stylizer='COMMAND', command=python_command(code, "{in}", "{out}"),
             command_timeout=2, iterations=1)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.splatdiff.run()
    assert time.monotonic() - start < 60
    assert message in runtime().last_error
    rec = record()
    assert rec.state == 'FAILED' and message in rec.error and len(rec.iterations) == 0


# ------------------------------------------------------------------- history


def test_history_survives_save_move_reopen_and_continues(cube_scene, addon, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "scene.blend"))
    tiny_run(bpy.context.scene.splatdiff, cube(), "//runs")
    assert bpy.ops.splatdiff.run() == {'FINISHED'}
    assert record().work_dir == "//runs/run-001"
    bpy.ops.wm.save_mainfile()

    moved = tmp_path / "moved"
    shutil.move(str(project), str(moved))
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    bpy.ops.wm.open_mainfile(filepath=str(moved / "scene.blend"))
    rec = check_iterations(addon, 2)
    assert addon.history.work_dir(rec) == str(moved / "runs" / "run-001")

    result = addon.run.Run.proceed(bpy.context, "run-001", log=None).run_blocking(poll_interval=0.05)
    statuses = dict(result.stages)
    assert result.capture_reused and statuses["points"] == "reused"
    for i in (1, 2):
        for stage in STAGES:
            assert statuses[f"{stage}-{i}"] == "reused", (stage, i, statuses)
    for stage in STAGES:
        assert statuses[f"{stage}-3"] == "done", statuses
    check_iterations(addon, 3)
    assert [obj.name for obj in result.imported] == ["run-001 it3"]
    assert sorted(o.name for o in bpy.data.objects if o.name.startswith("run-001")) == [
        "run-001 it1", "run-001 it2", "run-001 it3"]


def test_delete_iteration_continue_and_delete_run(cube_scene, addon, tmp_path):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path)
    assert bpy.ops.splatdiff.run() == {'FINISHED'}
    work = tmp_path / "run-001"
    assert bpy.ops.splatdiff.delete_iteration(index=2) == {'FINISHED'}
    rec = record()
    assert [item.index for item in rec.iterations] == [1]
    assert "run-001 it2" not in bpy.data.collections and "run-001 it2" not in bpy.data.objects
    assert not (work / "stylize-2").exists() and not (work / "train-2").exists()
    assert (work / "train-1").is_dir()

    assert bpy.ops.splatdiff.continue_run() == {'FINISHED'}
    check_iterations(addon, 2)

    assert bpy.ops.splatdiff.delete_run() == {'FINISHED'}
    assert len(cube_scene.splatdiff.runs) == 0
    assert not any(c.name.startswith("run-001") for c in bpy.data.collections)
    assert not any(o.name.startswith("run-001") for o in bpy.data.objects)
    assert (work / "train-2" / "model.ply").is_file()  # files stay on disk


def test_cancel_keeps_finished_stages_and_continue_finishes(cube_scene, addon, tmp_path):
    tiny_run(cube_scene.splatdiff, cube(), tmp_path, iterations=1)
    settings = addon.run.RunSettings.from_props(cube_scene.splatdiff)
    run = addon.run.Run.new(bpy.context, settings, log=None)
    while not (run.result.capture_dir and run.job is not None):  # until the pipeline's native job runs
        assert run.step() is not None
    run.close()
    rec = record()
    assert rec.state == 'CANCELLED' and len(rec.iterations) == 0
    assert bpy.ops.splatdiff.continue_run() == {'FINISHED'}
    check_iterations(addon, 1)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "case, message",
    [("none", "No target object"), ("nofaces", "has no faces"), ("model", "does not exist")],
)
def test_bad_input_writes_no_history(cube_scene, addon, tmp_path, case, message):
    props = tiny_run(cube_scene.splatdiff, cube(), tmp_path / "out", stylizer='DIFFUSION', model_path=str(TINY_SD15))
    if case == "none":
        props.target = None
        for obj in cube_scene.objects:
            obj.select_set(False)
    elif case == "nofaces":
        mesh = bpy.data.meshes.new("Edges")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
        obj = bpy.data.objects.new("Edges", mesh)
        cube_scene.collection.objects.link(obj)
        props.target = obj
    else:
        props.model_path = str(tmp_path / "no-such-model")
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.splatdiff.run()
    assert message in runtime().last_error and not runtime().running
    assert len(cube_scene.splatdiff.runs) == 0
    assert not any(c.name.startswith("run-") for c in bpy.data.collections)
    assert not (tmp_path / "out").exists()
