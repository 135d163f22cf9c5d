"""The add-on registers and unregisters cleanly; its settings live on the
Scene (saved in the .blend) and its runtime state on the WindowManager (not saved)."""

import math

import bpy
import pytest
from conftest import draw_panel

PANELS = ("SPLATDIFF_PT_main", "SPLATDIFF_PT_capture", "SPLATDIFF_PT_stylize", "SPLATDIFF_PT_train",
          "SPLATDIFF_PT_runs")
OPERATORS = ("SPLATDIFF_OT_run", "SPLATDIFF_OT_continue_run", "SPLATDIFF_OT_resume_run", "SPLATDIFF_OT_cancel",
             "SPLATDIFF_OT_delete_iteration", "SPLATDIFF_OT_delete_run", "SPLATDIFF_OT_toggle_iteration",
             "SPLATDIFF_OT_open_report", "SPLATDIFF_OT_open_folder",
             "IMPORT_SCENE_OT_splatdiff_ply", "EXPORT_SCENE_OT_splatdiff_ply")


def test_registered_types(addon):
    for name in PANELS + OPERATORS:
        assert hasattr(bpy.types, name), name
    main = bpy.types.SPLATDIFF_PT_main
    assert (main.bl_space_type, main.bl_region_type, main.bl_category) == ('VIEW_3D', 'UI', "Splat Diffusion")
    for sub in PANELS[1:]:
        assert getattr(bpy.types, sub).bl_parent_id == "SPLATDIFF_PT_main"
    assert bpy.ops.splatdiff.run.idname() == "SPLATDIFF_OT_run"
    assert bpy.ops.import_scene.splatdiff_ply.idname() == "IMPORT_SCENE_OT_splatdiff_ply"
    assert addon.io_operators.menu_import in bpy.types.TOPBAR_MT_file_import.draw._draw_funcs
    assert addon.io_operators.menu_export in bpy.types.TOPBAR_MT_file_export.draw._draw_funcs
    assert addon.bl_info["blender"] >= (4, 2, 0)


def test_unregister_removes_everything_and_register_again(addon):
    addon.unregister()
    try:
        for name in PANELS + OPERATORS:
            assert not hasattr(bpy.types, name), name
        assert not hasattr(bpy.types.Scene, "splatdiff")
        assert not hasattr(bpy.types.WindowManager, "splatdiff")
        assert addon.io_operators.menu_import not in getattr(bpy.types.TOPBAR_MT_file_import.draw, "_draw_funcs", [])
    finally:
        addon.register()
    assert hasattr(bpy.types, "SPLATDIFF_PT_main")
    assert bpy.context.scene.splatdiff.bl_rna.properties["frames"].default == 36


def test_defaults(fresh_scene):
    s = fresh_scene.splatdiff
    assert s.target is None
    assert s.output_dir == "//splatdiff/"
    assert s.frames == 36
    assert s.elevations == "15"
    assert s.resolution == 512
    assert s.engine == "CYCLES"
    assert s.stylizer == "DIFFUSION"
    assert math.isclose(math.degrees(s.fov), 40.0, rel_tol=1e-5)
    assert s.isolate and s.reuse_capture
    rt = bpy.context.window_manager.splatdiff
    assert not rt.running and rt.progress == 0.0 and rt.last_error == ""


def test_engine_items_match_this_blender(fresh_scene):
    s = fresh_scene.splatdiff
    ids = [item.identifier for item in s.bl_rna.properties["engine"].enum_items]
    for engine in ids:  # every choice is an engine this Blender has
        fresh_scene.render.engine = engine
    assert ids[0] == "CYCLES" and ids[2] == "BLENDER_WORKBENCH"
    assert ids[1] in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE")


def test_target_accepts_only_meshes(fresh_scene, addon):
    s = fresh_scene.splatdiff
    s.target = bpy.data.objects["Cube"]
    assert s.target.name == "Cube"
    poll = addon.properties._poll_mesh  # what the UI offers in the target field
    assert poll(s, bpy.data.objects["Cube"])
    assert not poll(s, bpy.data.objects["Camera"])
    assert not poll(s, bpy.data.objects["Light"])


def test_settings_survive_save_and_reload(fresh_scene, tmp_path):
    s = fresh_scene.splatdiff
    s.target = bpy.data.objects["Cube"]
    s.output_dir = "//runs/cube/"
    s.frames = 12
    s.elevations = "0, 30"
    s.resolution = 256
    s.engine = "BLENDER_WORKBENCH"
    s.samples = 7
    s.keyframes = 5
    s.prompt = "a marble statue zqxprompt"
    s.negative_prompt = "blurry"
    s.stylizer = "COMMAND"
    s.command = "mytool {input} {output}"
    s.strength = 0.25
    s.seed = 1234
    s.train_steps = 500
    s.iterations = 3
    s.isolate = False
    rt = bpy.context.window_manager.splatdiff
    rt.last_error = "zqxruntime must not be saved"
    rt.message = "zqxruntime message"
    path = tmp_path / "settings.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=False)
    rt.last_error = ""
    rt.message = ""

    raw = path.read_bytes()
    assert b"zqxprompt" in raw
    assert b"zqxruntime" not in raw

    bpy.ops.wm.read_homefile(use_factory_startup=True)
    assert bpy.context.scene.splatdiff.bl_rna.properties["frames"].default == 36
    bpy.ops.wm.open_mainfile(filepath=str(path))
    s = bpy.context.scene.splatdiff
    assert s.target is not None and s.target.name == "Cube"
    assert (s.output_dir, s.frames, s.elevations, s.resolution) == ("//runs/cube/", 12, "0, 30", 256)
    assert (s.engine, s.samples, s.keyframes) == ("BLENDER_WORKBENCH", 7, 5)
    assert (s.prompt, s.negative_prompt, s.stylizer) == ("a marble statue zqxprompt", "blurry", "COMMAND")
    assert s.command == "mytool {input} {output}"
    assert math.isclose(s.strength, 0.25, rel_tol=1e-6)
    assert (s.seed, s.train_steps, s.iterations, s.isolate) == (1234, 500, 3, False)
    assert bpy.context.window_manager.splatdiff.last_error == ""


def test_panel_draws_in_every_state(fresh_scene):
    """Drawing runs the panel code paths (idle, running, failed) without errors."""
    rt = bpy.context.window_manager.splatdiff
    from splatdiff import panels

    calls = draw_panel(panels.SPLATDIFF_PT_main, fresh_scene)
    assert any(c[0] == "operator" and c[1][0] == "splatdiff.run" for c in calls)
    assert any(c[0] == "operator" and c[1][0] == "import_scene.splatdiff_ply" for c in calls)
    rt.running, rt.stage, rt.progress, rt.message = True, "capture", 0.5, "Rendered view 2/4"
    try:
        calls = draw_panel(panels.SPLATDIFF_PT_main, fresh_scene)
        assert any(c[0] == "operator" and c[1][0] == "splatdiff.cancel" for c in calls)
        assert any(c[0] == "progress" and abs(c[2]["factor"] - 0.5) < 1e-6 for c in calls)
        assert any(c[0] == "label" and "Rendered view 2/4" in c[2].get("text", "") for c in calls)
    finally:
        rt.running = False
    rt.last_error = "something failed"
    try:
        calls = draw_panel(panels.SPLATDIFF_PT_main, fresh_scene)
        assert any(c[0] == "label" and "something failed" in c[2].get("text", "") for c in calls)
    finally:
        rt.last_error = ""
    for cls in (panels.SPLATDIFF_PT_capture, panels.SPLATDIFF_PT_stylize, panels.SPLATDIFF_PT_train):
        assert any(c[0] == "prop" for c in draw_panel(cls, fresh_scene))
    fresh_scene.splatdiff.stylizer = 'DIFFUSION'
    props = [c[1][1] for c in draw_panel(panels.SPLATDIFF_PT_stylize, fresh_scene) if c[0] == "prop"]
    for name in ("model_path", "diffusion_steps", "guidance_scale", "scheduler", "consistency", "controlnet_depth",
                 "strength_falloff"):
        assert name in props, name
    calls = draw_panel(panels.SPLATDIFF_PT_runs, fresh_scene)
    assert any(c[0] == "template_list" and c[1][0] == "SPLATDIFF_UL_runs" for c in calls)
    assert any(c[0] == "label" and "No runs yet" in c[2].get("text", "") for c in calls)


def test_manifest_passes_blenders_validation():
    """Blender's own extension tool accepts addon/blender_manifest.toml."""
    import pathlib
    import subprocess
    import sys

    from conftest import ROOT

    tools = list(pathlib.Path(bpy.utils.system_resource('SCRIPTS')).glob("addons_core/bl_pkg/cli/blender_ext.py"))
    if not tools:
        pytest.skip("Blender's extension command line tool is not in this bpy build")
    proc = subprocess.run([sys.executable, str(tools[0]), "validate", str(ROOT / "addon")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
    text = (ROOT / "addon" / "blender_manifest.toml").read_text()
    assert "wheels" not in text
    for line in ('id = "splatdiff"', 'version = "0.1.0"', 'type = "add-on"', 'blender_version_min = "4.2.0"',
                 '"SPDX:GPL-3.0-or-later"', "[permissions]"):
        assert line in text, line
