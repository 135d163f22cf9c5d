"""The run history and the run config, without running a pipeline: the
config each stylizer produces, settings kept as JSON, run names, records
updated from results, paths relative to the .blend, the Runs panel and the
history's buttons."""

import json
import os
import shutil

import bpy
import pytest
from conftest import ROOT, draw_panel

DIFFUSION_KEYS = {"kind", "model", "prompt", "negative_prompt", "strength", "steps", "guidance_scale", "seed",
                  "scheduler", "consistency", "controlnets"}


def result_for(work, iterations, paused_at=None):
    """A pipeline result as the contract describes it, for ``iterations`` finished ones."""
    work = str(work)
    items = [
        {
            "index": i, "strength": 0.6 * 0.5 ** (i - 1), "splats": f"{work}/train-{i}/model.ply",
            "keyframes": ["r_000", "r_004"],
            "keyframes_before": f"{work}/stylize-{i}/before", "keyframes_after": f"{work}/stylize-{i}/keys",
            "keyframe_sheet": f"{work}/stylize-{i}/keyframes.png", "contact_sheet": f"{work}/render-{i}/contact.png",
            "turntable": f"{work}/render-{i}/turntable.gif",
            "metrics": {"keyframe_reprojection": 0.01 * i, "propagated_reprojection": 0.02, "splat_reprojection": 0.03,
                        "refit_psnr": 30.0 + i, "refit_ssim": 0.9, "change_psnr": 20.0, "change_ssim": 0.8},
        }
        for i in range(1, iterations + 1)
    ]
    paused = None
    if paused_at:
        paused = {"stage": f"stylize-{paused_at}", "iteration": paused_at, "folder": f"{work}/edit-{paused_at}",
                  "keyframes": ["r_000", "r_004"], "message": "edit the keyframes"}
    return {"work_dir": work, "stages": [], "paused": paused, "iterations": items,
            "report": {"html": f"{work}/report/index.html", "markdown": f"{work}/report/report.md"}}


def settings(addon, **values):
    return addon.run.RunSettings(object_name="Cube", output_dir="/tmp", **values)


# ------------------------------------------------------------------ config


def test_pipeline_config_of_each_stylizer(addon, tmp_path):
    model, controlnet = tmp_path / "model", tmp_path / "cn"
    s = settings(addon, model=str(model), keyframes=3, iterations=4, strength=0.7, strength_falloff=0.25, seed=5,
                 train_steps=99, train_side=48, diffusion_steps=2, guidance_scale=1.0, scheduler="ddim",
                 consistency="grid")
    config = s.pipeline_config()
    assert set(config) == {"keyframes", "stylize", "iterations", "strength_falloff", "propagate", "train", "resume"}
    assert config["keyframes"] == {"count": 3, "frames": []}
    assert (config["iterations"], config["strength_falloff"], config["resume"]) == (4, 0.25, False)
    assert config["train"] == {"steps": 99, "seed": 5, "max_side": 48}
    assert config["propagate"] == {}
    assert s.pipeline_config(resume=True)["resume"] is True
    stylize = config["stylize"]
    assert set(stylize) == DIFFUSION_KEYS
    assert (stylize["kind"], stylize["model"], stylize["steps"], stylize["guidance_scale"]) == (
        "diffusion", str(model), 2, 1.0)
    assert (stylize["scheduler"], stylize["consistency"], stylize["controlnets"]) == ("ddim", "grid", [])
    s.controlnet_depth = str(controlnet)
    assert s.stylize_config()["controlnets"] == [{"kind": "depth", "model": str(controlnet), "weight": 1.0}]

    s = settings(addon, stylizer="exemplar", style_image="/x/style.png", strength=0.9)
    assert s.stylize_config() == {"kind": "exemplar", "style_image": "/x/style.png", "strength": 0.9}
    s = settings(addon, stylizer="external")
    assert s.stylize_config() == {"kind": "external", "strength": 0.6}
    s = settings(addon, stylizer="command", command="tool {in} {out}", command_timeout=7, prompt="p", seed=3)
    assert s.stylize_config() == {"kind": "command", "command": "tool {in} {out}", "timeout_s": 7, "prompt": "p",
                                  "seed": 3, "strength": 0.6}


def test_settings_from_props_and_json_round_trip(fresh_scene, addon, tmp_path):
    props = fresh_scene.splatdiff
    props.target = bpy.data.objects["Cube"]
    props.elevations = "0, 30"
    props.scheduler, props.consistency = 'EULER_A', 'CROSS_FRAME'
    props.controlnet_depth = str(tmp_path)
    props.command_timeout, props.strength_falloff, props.diffusion_steps = 9, 0.75, 3
    s = addon.run.RunSettings.from_props(props)
    assert (s.scheduler, s.consistency, s.controlnet_depth) == ("euler-a", "cross-frame", str(tmp_path))
    assert (s.command_timeout, s.strength_falloff, s.diffusion_steps) == (9, 0.75, 3)
    assert s.capture.elevations == (0.0, 30.0)
    again = addon.run.RunSettings.from_json(s.to_json())
    assert again == s
    with pytest.raises(addon.run.RunError, match="recorded settings"):
        addon.run.RunSettings.from_json('{"object_name": "Cube"}')


def test_defaults_of_the_new_settings(fresh_scene):
    s = fresh_scene.splatdiff
    assert (s.scheduler, s.consistency, s.controlnet_depth) == ('DPMPP_2M', 'CROSS_FRAME', "")
    assert (s.diffusion_steps, s.guidance_scale, s.command_timeout) == (20, 7.5, 600)
    assert s.strength_falloff == pytest.approx(0.5)
    assert len(s.runs) == 0


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(stylizer="diffusion"), "No diffusion model"),
        (dict(stylizer="diffusion", model="/no/such/model"), "/no/such/model: the diffusion model does not exist"),
        (dict(stylizer="diffusion", model=".", controlnet_depth="/no/such/cn"), "/no/such/cn"),
        (dict(stylizer="exemplar"), "No style image"),
        (dict(stylizer="exemplar", style_image="/no/style.png"), "/no/style.png"),
        (dict(stylizer="command", command="  "), "No command"),
        (dict(stylizer="command", command="x", command_timeout=0), "timeout"),
        (dict(stylizer="paint"), "Unknown stylizer"),
        (dict(stylizer="external", iterations=0), "Iterations"),
    ],
)
def test_stylizer_validation(addon, values, message):
    with pytest.raises(addon.run.RunError, match=message):
        addon.run.validate_stylizer(settings(addon, **values))


# ----------------------------------------------------------------- records


def test_run_names_are_unique(fresh_scene, addon, tmp_path):
    h = addon.history
    assert h.next_run_name(fresh_scene, str(tmp_path)) == "run-001"
    (tmp_path / "run-001").mkdir()
    h.create(fresh_scene, "run-002", str(tmp_path / "elsewhere"), "Cube", "{}")
    bpy.data.collections.new("run-003")
    assert h.next_run_name(fresh_scene, str(tmp_path)) == "run-004"


def test_record_follows_results(fresh_scene, addon, tmp_path):
    h = addon.history
    work = tmp_path / "run-001"
    record = h.create(fresh_scene, "run-001", str(work), "Cube", '{"a": 1}')
    assert (record.state, record.work_dir, fresh_scene.splatdiff.active_run) == ('RUNNING', str(work), 0)

    h.apply_result(record, result_for(work, 1, paused_at=2))
    assert record.state == 'PAUSED' and record.edit_folder == "edit-2"
    assert record.paused_message == "edit the keyframes"
    item = record.iterations[0]
    assert (item.index, item.splats, item.keyframe_sheet) == (1, "train-1/model.ply", "stylize-1/keyframes.png")
    assert (item.contact_sheet, item.turntable) == ("render-1/contact.png", "render-1/turntable.gif")
    assert record.report_html == "report/index.html" and record.report_markdown == "report/report.md"
    assert h.metrics(item)["refit_psnr"] == 31.0
    assert h.work_path(record, item.splats) == str(work / "train-1" / "model.ply")
    assert h.pending_imports(record) == [1]

    kept = bpy.data.collections.new("run-001 it1")
    item.collection = kept
    h.stop(record, 'FAILED', "zqx missing r_004.png")
    assert (record.state, record.error, record.edit_folder) == ('FAILED', "zqx missing r_004.png", "edit-2")

    h.apply_result(record, result_for(work, 2))
    assert (record.state, record.error, record.edit_folder) == ('FINISHED', "", "")
    assert [i.index for i in record.iterations] == [1, 2]
    assert record.iterations[0].collection == kept  # already imported: kept
    assert h.pending_imports(record) == [2]
    assert record.active_iteration == 1


def test_delete_iterations_and_run_remove_their_collections(fresh_scene, addon, tmp_path):
    h = addon.history
    record = h.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    h.apply_result(record, result_for(tmp_path, 3))
    record.collection = bpy.data.collections.new("run-001")
    fresh_scene.collection.children.link(record.collection)
    for item in record.iterations:
        collection = bpy.data.collections.new(f"run-001 it{item.index}")
        record.collection.children.link(collection)
        mesh = bpy.data.meshes.new(f"splats {item.index}")
        collection.objects.link(bpy.data.objects.new(f"run-001 it{item.index}", mesh))
        item.collection = collection
    h.delete_iterations(record, 2)
    assert [i.index for i in record.iterations] == [1]
    assert "run-001 it2" not in bpy.data.collections and "run-001 it3" not in bpy.data.objects
    assert "splats 3" not in bpy.data.meshes
    assert "run-001 it1" in bpy.data.objects and record.state == 'FINISHED'

    h.create(fresh_scene, "run-002", str(tmp_path / "two"), "Cube", "{}")
    h.delete_run(fresh_scene, "run-001")
    assert [r.name for r in h.runs(fresh_scene)] == ["run-002"]
    assert "run-001" not in bpy.data.collections and "run-001 it1" not in bpy.data.objects
    assert fresh_scene.splatdiff.active_run == 0
    assert tmp_path.is_dir()  # files stay


def test_work_folder_is_relative_to_the_blend_and_survives_a_move(fresh_scene, addon, tmp_path):
    h = addon.history
    project = tmp_path / "project"
    work = project / "runs" / "run-001"
    work.mkdir(parents=True)
    h.create(fresh_scene, "run-001", str(work), "Cube", "{}")
    assert h.find(fresh_scene, "run-001").work_dir == str(work)  # not saved yet: absolute
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "scene.blend"))
    record = h.find(bpy.context.scene, "run-001")
    assert record.work_dir == "//runs/run-001"
    # A copy saved elsewhere points at the same folder; the open file keeps its own relative path.
    (tmp_path / "other").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "other" / "copy.blend"), copy=True)
    assert h.find(bpy.context.scene, "run-001").work_dir == "//runs/run-001"
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "other" / "copy.blend"))
    assert h.work_dir(h.find(bpy.context.scene, "run-001")) == str(work)

    shutil.move(str(project), str(tmp_path / "moved"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "moved" / "scene.blend"))
    record = h.find(bpy.context.scene, "run-001")
    assert h.work_dir(record) == str(tmp_path / "moved" / "runs" / "run-001")
    assert os.path.isdir(h.work_dir(record))


# ------------------------------------------------------------ panel, buttons


def test_runs_panel_shows_the_active_run(fresh_scene, addon, tmp_path):
    from splatdiff import panels

    h = addon.history
    record = h.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    h.apply_result(record, result_for(tmp_path, 2, paused_at=3))
    calls = draw_panel(panels.SPLATDIFF_PT_runs, fresh_scene)
    operators = [c[1][0] for c in calls if c[0] == "operator"]
    labels = [c[2].get("text", "") for c in calls if c[0] == "label"]
    for op in ("splatdiff.resume_run", "splatdiff.open_folder", "splatdiff.open_report", "splatdiff.delete_run",
               "splatdiff.delete_iteration"):
        assert op in operators, op
    assert "splatdiff.continue_run" not in operators  # paused: Resume instead
    assert str(tmp_path / "edit-3") in labels
    assert "Refit PSNR" in labels and "31.00 dB" in labels and "32.00 dB" in labels  # side by side
    assert "it1" in labels and "it2" in labels
    assert any(c[0] == "template_list" and c[1][0] == "SPLATDIFF_UL_iterations" for c in calls)

    h.apply_result(record, result_for(tmp_path, 2))
    record.error = "zqx failed"
    calls = draw_panel(panels.SPLATDIFF_PT_runs, fresh_scene)
    assert "splatdiff.continue_run" in [c[1][0] for c in calls if c[0] == "operator"]
    assert any(c[0] == "label" and "zqx failed" in c[2].get("text", "") for c in calls)


def test_runs_panel_thumbnails(fresh_scene, addon, tmp_path, monkeypatch):
    from splatdiff import panels

    h = addon.history
    record = h.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    h.apply_result(record, result_for(tmp_path, 1))
    sheet = tmp_path / "stylize-1" / "keyframes.png"
    sheet.parent.mkdir()
    shutil.copyfile(ROOT / "tests" / "figures" / "panel.png", sheet)
    loaded = []

    class Previews(dict):
        def load(self, key, path, kind):
            loaded.append((path, kind))
            self[key] = type("Preview", (), {"icon_id": 42})()
            return self[key]

    monkeypatch.setattr(panels, "_previews", Previews())
    for _ in range(2):
        calls = draw_panel(panels.SPLATDIFF_PT_runs, fresh_scene)
    assert loaded == [(str(sheet), 'IMAGE')]  # loaded once
    assert any(c[0] == "template_icon" and c[2]["icon_value"] == 42 for c in calls)
    assert any(c[0] == "label" and c[2].get("text") == "(no image)" for c in calls)  # no contact sheet


def test_history_buttons(fresh_scene, addon, tmp_path, monkeypatch):
    h = addon.history
    record = h.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    h.apply_result(record, result_for(tmp_path, 2))
    with pytest.raises(RuntimeError, match="report of run-001 does not exist"):
        bpy.ops.splatdiff.open_report()
    with pytest.raises(RuntimeError, match="not paused"):
        bpy.ops.splatdiff.open_folder(folder='EDIT')
    with pytest.raises(RuntimeError, match="not in the scene"):
        bpy.ops.splatdiff.toggle_iteration(index=1)
    with pytest.raises(RuntimeError, match="no iteration 7"):
        bpy.ops.splatdiff.toggle_iteration(index=7)
    with pytest.raises(RuntimeError, match="No run named 'nope'"):
        bpy.ops.splatdiff.continue_run(run_name="nope")
    with pytest.raises(RuntimeError, match="not paused"):
        bpy.ops.splatdiff.resume_run()

    opened = []
    monkeypatch.setattr(addon.operators, "open_path", opened.append)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    assert bpy.ops.splatdiff.open_report(run_name="run-001") == {'FINISHED'}
    assert bpy.ops.splatdiff.open_folder() == {'FINISHED'}
    assert opened == [str(tmp_path / "report" / "index.html"), str(tmp_path)]

    item = h.iteration(h.find(fresh_scene, "run-001"), 1)
    item.collection = bpy.data.collections.new("run-001 it1")
    bpy.ops.splatdiff.toggle_iteration(index=1)
    assert item.collection.hide_viewport and item.collection.hide_render
    bpy.ops.splatdiff.toggle_iteration(index=1)
    assert not item.collection.hide_viewport and not item.collection.hide_render

    assert bpy.ops.splatdiff.delete_run() == {'FINISHED'}
    assert len(h.runs(fresh_scene)) == 0 and "run-001 it1" not in bpy.data.collections
    assert (tmp_path / "report" / "index.html").is_file()
    assert not bpy.ops.splatdiff.delete_run.poll()  # no runs left


def test_delete_run_message_says_files_stay(fresh_scene, addon, tmp_path):
    record = addon.history.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    message = addon.operators.SPLATDIFF_OT_delete_run.apply(None, bpy.context, record)
    assert message == f"Deleted run-001 from the scene; its files stay in {tmp_path}"
    assert len(addon.history.runs(fresh_scene)) == 0


def test_metrics_json_is_robust(addon, fresh_scene, tmp_path):
    h = addon.history
    record = h.create(fresh_scene, "run-001", str(tmp_path), "Cube", "{}")
    item = record.iterations.add()
    item.metrics = "not json"
    assert h.metrics(item) == {}
    item.metrics = json.dumps({"refit_psnr": 12.5})
    assert h.format_metric(h.metrics(item).get("refit_psnr"), "{:.2f} dB") == "12.50 dB"
    assert h.format_metric(None, "{:.2f}") == "-"


def test_picked_keyframes_and_the_selection_as_target(addon, fresh_scene):
    import bpy

    props = fresh_scene.splatdiff
    props.output_dir = "/tmp/splatdiff-picked"
    props.keyframe_frames = "18, 0,9; 9"
    cube = fresh_scene.objects["Cube"]
    for obj in fresh_scene.objects:
        obj.select_set(obj is cube)
    s = addon.run.RunSettings.from_props(props, cube)
    assert s.object_name == "Cube", "no Target: the selected active mesh is used"
    assert s.pipeline_config()["keyframes"] == {"count": props.keyframes, "frames": [0, 9, 18]}
    assert addon.run.RunSettings.from_json(s.to_json()).pipeline_config()["keyframes"]["frames"] == [0, 9, 18]
    cube.select_set(False)
    assert addon.run.RunSettings.from_props(props, cube).object_name == "", "an unselected object is not taken"
    camera = fresh_scene.objects["Camera"]
    camera.select_set(True)
    assert addon.run.RunSettings.from_props(props, camera).object_name == "", "not a mesh"
    props.keyframe_frames = "0, ten"
    with pytest.raises(addon.run.RunError, match="'ten' is not a frame number"):
        addon.run.RunSettings.from_props(props, cube)
    bpy.ops.wm.read_homefile(use_factory_startup=True)
