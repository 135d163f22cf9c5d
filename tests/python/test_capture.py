"""Turntable capture through the add-on's run driver: files, transforms.json,
exact passes cross-checked against Blender's own renderer, the user's scene
left exactly as it was (also on failure and cancel), a capture reused by a
later run, and bad input refused before anything changes."""

import json
import math
import os

import bpy
import numpy as np
import pytest
from conftest import COPY_COMMAND, load_pixels, native_or_skip, project, scene_snapshot, tiny_run

LOCATION = (0.7, -0.4, 0.5)
RADIUS = 0.8


@pytest.fixture
def sphere_scene(fresh_scene):
    """A smooth UV sphere away from the origin, plus the factory Cube, Camera, Light."""
    import bmesh

    mesh = bpy.data.meshes.new("Ball")
    bm = bmesh.new()
    bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=RADIUS)
    bm.to_mesh(mesh)
    bm.free()
    mesh.shade_smooth()
    ball = bpy.data.objects.new("Ball", mesh)
    ball.location = LOCATION
    ball.rotation_euler = (0.3, 0.2, 0.1)
    fresh_scene.collection.objects.link(ball)
    # Non-default settings the capture changes and must put back.
    fresh_scene.render.engine = "BLENDER_WORKBENCH"
    fresh_scene.render.resolution_percentage = 50
    fresh_scene.render.film_transparent = False
    fresh_scene.render.filepath = "/tmp/user-output-####"
    fresh_scene.render.image_settings.file_format = 'JPEG'
    fresh_scene.frame_current = 7
    bpy.context.view_layer.update()
    return fresh_scene


def settings(addon, out, reuse_capture=True, **capture):
    opts = dict(frames=4, elevations=(20.0, -30.0), resolution=96, engine="CYCLES", samples=4)
    opts.update(capture)
    return addon.run.RunSettings(
        object_name="Ball", output_dir=str(out), capture=addon.capture.CaptureOptions(**opts),
        reuse_capture=reuse_capture,
    )


def capture(addon, out, reuse_capture=True, **capture_opts):
    """A new capture-only run in ``out``; returns its RunResult."""
    settings_ = settings(addon, out, reuse_capture, **capture_opts)
    run = addon.run.Run.new(bpy.context, settings_, pipeline=False, log=None)
    return run.run_blocking(poll_interval=0.01)


def world_vertices(obj):
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    normals = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("normal", normals)
    m = np.array(obj.matrix_world)
    pos = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    nrm = normals.reshape(-1, 3) @ np.linalg.inv(m[:3, :3])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return pos, nrm


def test_turntable_files_and_transforms(addon, sphere_scene, tmp_path):
    native = native_or_skip()
    before = scene_snapshot(sphere_scene)
    result = capture(addon, tmp_path)
    assert scene_snapshot(sphere_scene) == before
    cap = result.capture_dir
    assert result.name == "run-001" and result.work_dir == str(tmp_path / "run-001")
    assert os.path.samefile(cap, native.stage_dir(result.work_dir, "capture"))
    record = addon.history.find(sphere_scene, "run-001")
    assert record.state == 'FINISHED' and len(record.iterations) == 0 and record.object_name == "Ball"
    with open(os.path.join(cap, "transforms.json")) as f:
        t = json.load(f)
    for key in ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h", "frames", "splatdiff"):
        assert key in t, key
    assert (t["w"], t["h"], t["cx"], t["cy"]) == (96, 96, 48.0, 48.0)
    assert math.isclose(t["fl_x"], 48.0 / math.tan(math.radians(20.0)), rel_tol=1e-6)
    assert t["fl_x"] == t["fl_y"] and math.isclose(t["camera_angle_x"], math.radians(40.0), rel_tol=1e-6)
    assert len(t["frames"]) == 8
    for i, frame in enumerate(t["frames"]):
        assert frame["file_path"] == f"images/r_{i:03d}.png"
        assert frame["depth_file_path"] == f"depth/r_{i:03d}.exr"
        assert frame["normal_file_path"] == f"normal/r_{i:03d}.exr"
        assert frame["mask_file_path"] == f"mask/r_{i:03d}.png"
        for key in ("file_path", "depth_file_path", "normal_file_path", "mask_file_path"):
            assert os.path.getsize(os.path.join(cap, frame[key])) > 0, frame[key]
        m = np.array(frame["transform_matrix"])
        assert m.shape == (4, 4) and np.allclose(m[3], [0, 0, 0, 1])
        assert np.allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-5)  # a rotation
        assert m[2, 0] == pytest.approx(0.0, abs=1e-6)  # camera +X horizontal: world +Z up
    meta = t["splatdiff"]
    assert meta["object"] == "Ball" and meta["engine"] == "CYCLES" and meta["samples"] == 4
    assert meta["passes"]["depth"]["channel"] == "Y" and meta["passes"]["mask"]["object"] == 255
    assert meta["passes"]["normal"]["space"] == "world"
    centre = np.array(meta["bounding_sphere"]["center"])
    assert np.allclose(centre, LOCATION, atol=1e-3)
    assert meta["bounding_sphere"]["radius"] == pytest.approx(RADIUS, rel=0.02)
    # Elevation rings: camera heights above the centre follow the angles.
    heights = [np.array(f["transform_matrix"])[2, 3] - centre[2] for f in t["frames"]]
    assert all(h > 0 for h in heights[:4]) and all(h < 0 for h in heights[4:])
    manifest = json.loads(native.manifest(result.work_dir))
    assert [s["name"] for s in manifest["stages"]] == ["capture"]


def test_projection_matches_passes_and_blender_render(addon, sphere_scene, tmp_path):
    native_or_skip()
    result = capture(addon, tmp_path, resolution=128)
    cap = result.capture_dir
    with open(os.path.join(cap, "transforms.json")) as f:
        t = json.load(f)
    ball = bpy.data.objects["Ball"]
    positions, normals = world_vertices(ball)
    size = t["w"]
    checked = 0
    for frame in t["frames"]:
        c2w = np.array(frame["transform_matrix"])
        eye = c2w[:3, 3]
        view = eye - positions
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        front = (normals * view).sum(axis=1) > 0.3  # clearly front-facing: visible on a convex object
        px, depth = project(t, frame, positions[front])
        mask = load_pixels(os.path.join(cap, frame["mask_file_path"]))[..., 0]
        depth_map = load_pixels(os.path.join(cap, frame["depth_file_path"]))[..., 0]
        alpha = load_pixels(os.path.join(cap, frame["file_path"]))[..., 3]
        assert mask.shape == depth_map.shape == alpha.shape == (size, size)
        forward = -c2w[:3, 2]
        metres_per_pixel = depth / t["fl_x"]
        errors = []
        for (u, v), d, mpp in zip(px, depth, metres_per_pixel):
            i, j = int(math.floor(u)), int(math.floor(v))
            assert 0 <= i < size and 0 <= j < size, (u, v)
            win = (slice(max(j - 1, 0), j + 2), slice(max(i - 1, 0), i + 2))
            assert mask[win].max() > 0.99, f"vertex at pixel {(u, v)} is outside the mask"
            assert alpha[win].max() > 0.5, f"Blender rendered nothing at {(u, v)}"
            assert depth_map[j, i] > 0
            err = abs(depth_map[j, i] - d)
            assert err < 3.0 * mpp + 1e-3, (u, v, depth_map[j, i], d)
            errors.append(err / mpp)
            checked += 1
        assert np.median(errors) < 0.75
        # depth is along the view axis, not the distance to the camera
        assert np.allclose(depth, (positions[front] - eye) @ forward)
        # the whole silhouette agrees with Blender's render (cameras match Blender's)
        ours, blender = mask > 0.5, alpha > 0.5
        iou = (ours & blender).sum() / (ours | blender).sum()
        assert iou > 0.9, f"mask/alpha IoU {iou:.3f} in {frame['file_path']}"
        assert not mask[0, 0] and not alpha[0, 0] and depth_map[0, 0] == 0.0
        normal_map = load_pixels(os.path.join(cap, frame["normal_file_path"]))[..., :3]
        centre_px = normal_map[size // 2, size // 2]
        assert np.dot(centre_px, -forward) > 0.9  # the sphere faces the camera at the centre
    assert checked > 100


def test_scene_restored_when_render_raises(addon, sphere_scene, tmp_path, monkeypatch):
    native = native_or_skip()
    calls = []
    real = addon.capture._render_still

    def failing(scene, path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("render exploded")
        real(scene, path)

    monkeypatch.setattr(addon.capture, "_render_still", failing)
    before = scene_snapshot(sphere_scene)
    with pytest.raises(RuntimeError, match="render exploded"):
        capture(addon, tmp_path)
    assert scene_snapshot(sphere_scene) == before
    assert not bpy.data.objects.get(addon.capture.CAMERA_NAME)
    cfg_state = json.loads(native.manifest(str(tmp_path / "run-001")))
    assert not any(s.get("status") == "finished" for s in cfg_state.get("stages", []))
    assert len(sphere_scene.splatdiff.runs) == 0  # no stage finished: nothing recorded
    # the next run captures again (in its own folder) and finishes
    monkeypatch.setattr(addon.capture, "_render_still", real)
    result = capture(addon, tmp_path)
    assert result.name == "run-002" and not result.capture_reused
    assert os.path.isfile(os.path.join(result.capture_dir, "images", "r_007.png"))
    assert scene_snapshot(sphere_scene) == before


def test_scene_restored_when_cancelled_midway(addon, sphere_scene, tmp_path):
    native = native_or_skip()
    before = scene_snapshot(sphere_scene)
    run = addon.run.Run.new(bpy.context, settings(addon, tmp_path), pipeline=False, log=None)
    images = os.path.join(run.work_dir, ".capture.staging", "images")
    rendered = 0
    while rendered < 2:
        status = run.step()
        assert status is not None
        rendered = len(os.listdir(images)) if os.path.isdir(images) else 0
    assert bpy.context.scene.camera.name == addon.capture.CAMERA_NAME  # mid-capture
    assert bpy.data.objects["Cube"].hide_render  # isolated
    run.close()
    assert scene_snapshot(sphere_scene) == before
    assert run.step() is None
    assert not any(s.get("status") == "finished" for s in json.loads(native.manifest(run.work_dir)).get("stages", []))
    assert len(sphere_scene.splatdiff.runs) == 0


def test_reuse_and_recapture(addon, sphere_scene, tmp_path):
    """A new run takes a finished capture with the same settings from another
    run in the output folder instead of rendering it again."""
    native = native_or_skip()
    first = capture(addon, tmp_path, resolution=48, elevations=(15.0,))
    assert not first.capture_reused
    stamp = os.path.getmtime(os.path.join(first.capture_dir, "images", "r_000.png"))
    again = capture(addon, tmp_path, resolution=48, elevations=(15.0,))
    assert again.capture_reused and again.name == "run-002"
    assert os.path.getmtime(os.path.join(again.capture_dir, "images", "r_000.png")) == stamp
    for name in ("transforms.json", "depth/r_003.exr", "mask/r_003.png"):
        assert os.path.isfile(os.path.join(again.capture_dir, name)), name
    assert json.loads(native.manifest(again.work_dir))["stages"][0]["status"] == "finished"
    changed = capture(addon, tmp_path, resolution=48, elevations=(15.0,), frames=3)
    assert not changed.capture_reused
    with open(os.path.join(changed.capture_dir, "transforms.json")) as f:
        assert len(json.load(f)["frames"]) == 3
    fresh = capture(addon, tmp_path, reuse_capture=False, resolution=48, elevations=(15.0,))
    assert not fresh.capture_reused and fresh.name == "run-004"
    assert [r.name for r in sphere_scene.splatdiff.runs] == ["run-001", "run-002", "run-003", "run-004"]


def test_isolate_keeps_lights_and_hides_others(addon, sphere_scene, tmp_path, monkeypatch):
    native_or_skip()
    seen = []
    real = addon.capture._render_still

    def spy(scene, path):
        seen.append({o.name: o.hide_render for o in scene.objects})
        real(scene, path)

    monkeypatch.setattr(addon.capture, "_render_still", spy)
    capture(addon, tmp_path, frames=1, elevations=(0.0,), resolution=32)
    assert seen and seen[0]["Cube"] and not seen[0]["Light"] and not seen[0]["Ball"]
    assert not bpy.data.objects["Cube"].hide_render


@pytest.mark.parametrize(
    "case, message",
    [
        ("none", "No target object"),
        ("camera", "not a mesh"),
        ("nofaces", "has no faces"),
        ("badfolder", "cannot be created"),
        ("unsaved", "not saved"),
        ("elevations", "not a number"),
    ],
)
def test_operator_rejects_bad_input_and_changes_nothing(addon, sphere_scene, tmp_path, case, message):
    native_or_skip()
    props = sphere_scene.splatdiff
    props.target = bpy.data.objects["Ball"]
    props.output_dir = str(tmp_path / "out")
    props.stylizer, props.command = 'COMMAND', COPY_COMMAND
    if case == "none":
        props.target = None
        for obj in bpy.context.scene.objects:  # else the selected mesh would be taken as the target
            obj.select_set(False)
    elif case == "camera":
        bpy.context.scene.splatdiff["target"] = bpy.data.objects["Camera"]  # bypasses the UI poll
    elif case == "nofaces":
        mesh = bpy.data.meshes.new("Points")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0)], [(0, 1)], [])
        obj = bpy.data.objects.new("Points", mesh)
        sphere_scene.collection.objects.link(obj)
        props.target = obj
    elif case == "badfolder":
        blocker = tmp_path / "file.txt"
        blocker.write_text("x")
        props.output_dir = str(blocker / "sub")
    elif case == "unsaved":
        props.output_dir = "//splatdiff/"
    elif case == "elevations":
        props.elevations = "15, high"
    before = scene_snapshot(sphere_scene)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.splatdiff.run()
    assert message in bpy.context.window_manager.splatdiff.last_error
    assert not bpy.context.window_manager.splatdiff.running
    assert scene_snapshot(sphere_scene) == before
    assert len(sphere_scene.splatdiff.runs) == 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_operator_runs_capture_and_pipeline(addon, sphere_scene, tmp_path):
    native_or_skip()
    props = sphere_scene.splatdiff
    tiny_run(props, bpy.data.objects["Ball"], tmp_path, iterations=1)
    before = scene_snapshot(sphere_scene)
    assert bpy.ops.splatdiff.run() == {'FINISHED'}
    rt = bpy.context.window_manager.splatdiff
    assert not rt.running and rt.last_error == "" and rt.stage == "done"
    assert "run-001" in rt.last_result and "1 iteration(s) finished" in rt.last_result
    # The only change: the imported splats, in their own collection in the run's collection.
    imported = bpy.data.objects["run-001 it1"]
    assert imported.users_collection[0].name == "run-001 it1"
    assert bpy.data.collections["run-001"].children[0].name == "run-001 it1"
    assert len(imported.data.vertices) > 10
    addon.history.delete_run(sphere_scene, "run-001")
    after = scene_snapshot(sphere_scene)
    counts = ("objects", "cameras", "images", "lights", "scenes", "collections")
    assert {k: v for k, v in after.items() if k != "counts"} == {k: v for k, v in before.items() if k != "counts"}
    assert {k: after["counts"][k] for k in counts} == {k: before["counts"][k] for k in counts}
    assert (tmp_path / "run-001" / "capture" / "transforms.json").is_file()
    assert (tmp_path / "run-001" / "manifest.json").is_file()


def test_passes_use_the_render_resolution_mesh(addon, sphere_scene):
    """The renderer subdivides at render_levels; the geometry passes must too."""
    ball = bpy.data.objects["Ball"]
    subsurf = ball.modifiers.new("Subdivision", 'SUBSURF')
    subsurf.levels, subsurf.render_levels = 0, 2
    hidden = ball.modifiers.new("RenderOnly", 'SOLIDIFY')
    hidden.show_viewport, hidden.show_render = False, False
    def viewport_triangles():
        depsgraph = bpy.context.evaluated_depsgraph_get()
        depsgraph.update()
        return len(addon.capture._evaluated_mesh_arrays(ball, depsgraph).triangles)

    try:
        subsurf.levels = 2
        rendered = viewport_triangles()
        subsurf.levels = 0
        viewport = viewport_triangles()
        assert rendered > 4 * viewport
        assert len(addon.capture.mesh_arrays(ball, bpy.context).triangles) == rendered
        assert (subsurf.levels, hidden.show_viewport) == (0, False), "viewport settings restored"
        assert viewport_triangles() == viewport
    finally:
        ball.modifiers.remove(hidden)
        ball.modifiers.remove(subsurf)
