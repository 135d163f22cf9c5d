"""Turntable capture: cameras, ``transforms.json``, colour renders and the
mesh data for the exact geometry passes.

Everything here runs on Blender's main thread. Conventions follow
``rust/splatdiff-scene/src/camera.rs``: Blender world (+Z up); camera space
+X right, +Y up, looking down -Z (NeRF's convention), ``transform_matrix`` is
camera-to-world; pixel centres at ``(i + 0.5, j + 0.5)`` from the top-left
corner; a camera-space point ``(x, y, z)`` lands on ``u = cx + fx*x/(-z)``,
``v = cy - fy*y/(-z)``; depth is ``-z``.

The user's scene is left exactly as it was: :class:`SceneState` records what a
capture changes and puts it back, and :func:`render_turntable` is a generator
whose ``close()`` (or an exception) restores the scene and removes the
temporary camera.
"""

import contextlib
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field

import bpy
import numpy as np
from mathutils import Matrix, Vector

TRANSFORMS_NAME = "transforms.json"
CAMERA_NAME = "splatdiff_turntable"


@dataclass
class CaptureOptions:
    """What a turntable capture renders (independent of the UI)."""

    frames: int = 36
    elevations: tuple = (15.0,)
    resolution: int = 512
    engine: str = "CYCLES"
    samples: int = 32
    fov: float = math.radians(40.0)
    margin: float = 1.1
    isolate: bool = True

    def config(self):
        return {
            "frames": self.frames,
            "elevations": [float(e) for e in self.elevations],
            "resolution": self.resolution,
            "engine": self.engine,
            "samples": self.samples,
            "fov": round(float(self.fov), 7),
            "margin": self.margin,
            "isolate": self.isolate,
        }


def parse_elevations(text):
    """``"0, 30"`` -> ``(0.0, 30.0)``; raises ValueError with a clear message."""
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"elevation {part!r} is not a number (expected degrees like \"0, 30\")") from None
        if not (math.isfinite(value) and -90.0 <= value <= 90.0):
            raise ValueError(f"elevation {part} is outside -90..90 degrees")
        values.append(value)
    if not values:
        raise ValueError(f"no elevation angles in {text!r} (expected degrees like \"15\" or \"0, 30\")")
    return tuple(values)


# ------------------------------------------------------------------ geometry


@dataclass
class MeshArrays:
    """World-space triangle mesh of the evaluated object, as native buffers."""

    positions: np.ndarray  # float32 (V, 3)
    triangles: np.ndarray  # int32 (T, 3)
    corner_normals: np.ndarray  # float32 (T, 3, 3)

    def fingerprint(self):
        digest = hashlib.sha1()
        for array in (self.positions, self.triangles, self.corner_normals):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@contextlib.contextmanager
def render_resolution_modifiers(obj):
    """Makes the viewport evaluation of ``obj`` match what the renderer sees.

    Python cannot ask Blender for the render-time evaluation of an object,
    only the viewport's, which often differs in subdivision level or in
    modifiers shown only in renders. The geometry passes must match the
    rendered colour to the pixel, so for the duration the modifiers' viewport
    settings take their render values; they are restored afterwards.
    """
    saved = []

    def set_(modifier, attr, value):
        if getattr(modifier, attr) != value:
            saved.append((modifier, attr, getattr(modifier, attr)))
            setattr(modifier, attr, value)

    try:
        for modifier in obj.modifiers:
            set_(modifier, "show_viewport", modifier.show_render)
            if modifier.type in {'SUBSURF', 'MULTIRES'}:
                set_(modifier, "levels", modifier.render_levels)
        yield
    finally:
        for modifier, attr, value in reversed(saved):
            setattr(modifier, attr, value)


def mesh_arrays(obj, context):
    """The mesh of ``obj`` as rendered (modifiers at render settings), in world space."""
    with render_resolution_modifiers(obj):
        depsgraph = context.evaluated_depsgraph_get()
        depsgraph.update()
        arrays = _evaluated_mesh_arrays(obj, depsgraph)
    context.evaluated_depsgraph_get().update()
    return arrays


def _evaluated_mesh_arrays(obj, depsgraph):
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        nv = len(mesh.vertices)
        nt = len(mesh.loop_triangles)
        co = np.empty(nv * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tris = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
        loops = np.empty(nt * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("loops", loops)
        if hasattr(mesh, "corner_normals"):  # Blender 4.1+
            normals = np.empty(len(mesh.corner_normals) * 3, dtype=np.float32)
            mesh.corner_normals.foreach_get("vector", normals)
        else:  # pragma: no cover - older Blender
            mesh.calc_normals_split()
            normals = np.empty(len(mesh.loops) * 3, dtype=np.float32)
            mesh.loops.foreach_get("normal", normals)
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    finally:
        evaluated.to_mesh_clear()

    linear = matrix[:3, :3]
    positions = co.reshape(-1, 3).astype(np.float64) @ linear.T + matrix[:3, 3]
    normal_matrix = np.linalg.inv(linear).T if abs(np.linalg.det(linear)) > 1e-20 else linear
    corner = normals.reshape(-1, 3)[loops].astype(np.float64) @ normal_matrix.T
    length = np.linalg.norm(corner, axis=1, keepdims=True)
    corner = np.divide(corner, length, out=np.zeros_like(corner), where=length > 1e-20)
    return MeshArrays(
        positions=np.ascontiguousarray(positions, dtype=np.float32),
        triangles=tris.reshape(-1, 3),
        corner_normals=np.ascontiguousarray(corner.reshape(-1, 3, 3), dtype=np.float32),
    )


def bounding_sphere(positions):
    """Centre (Vector) and radius of a sphere holding every point (AABB centre)."""
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return Vector((0.0, 0.0, 0.0)), 0.0
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    radius = float(np.sqrt(((points - centre) ** 2).sum(axis=1).max()))
    return Vector(centre.tolist()), radius


# ------------------------------------------------------------------- cameras


def look_at(eye, target):
    """Camera-to-world matrix at ``eye`` looking at ``target``, world +Z up
    (``Camera::look_at`` in camera.rs)."""
    eye = Vector(eye)
    forward = (Vector(target) - eye).normalized()
    right = forward.cross(Vector((0.0, 0.0, 1.0)))
    if right.length_squared < 1e-12:
        right = Vector((1.0, 0.0, 0.0))
    right.normalize()
    up = right.cross(forward)
    back = -forward
    return Matrix((
        (right.x, up.x, back.x, eye.x),
        (right.y, up.y, back.y, eye.y),
        (right.z, up.z, back.z, eye.z),
        (0.0, 0.0, 0.0, 1.0),
    ))


def intrinsics(width, height, fov):
    """Pinhole intrinsics with horizontal field of view ``fov`` (radians)."""
    focal = 0.5 * width / math.tan(0.5 * fov)
    return {
        "fl_x": focal,
        "fl_y": focal,
        "cx": 0.5 * width,
        "cy": 0.5 * height,
        "w": width,
        "h": height,
        "camera_angle_x": fov,
        "camera_angle_y": 2.0 * math.atan(0.5 * height / focal),
    }


@dataclass
class View:
    index: int
    name: str
    azimuth: float  # degrees
    elevation: float  # degrees
    cam_to_world: Matrix


@dataclass
class Plan:
    """Cameras of a turntable around a bounding sphere."""

    centre: Vector
    radius: float
    distance: float
    options: CaptureOptions
    views: list = field(default_factory=list)

    @property
    def intrinsics(self):
        r = self.options.resolution
        return intrinsics(r, r, self.options.fov)


def plan_turntable(centre, radius, options):
    """Orbit cameras: ``options.frames`` views over 360 degrees per elevation
    ring, looking at ``centre`` from a distance at which the sphere fits in
    the (square) image with ``options.margin``."""
    radius = max(float(radius), 1e-4)
    half = 0.5 * options.fov
    distance = radius * options.margin / math.sin(half)
    count = options.frames * len(options.elevations)
    digits = max(3, len(str(count - 1)))
    plan = Plan(centre=Vector(centre), radius=radius, distance=distance, options=options)
    for ring, elevation in enumerate(options.elevations):
        el = math.radians(elevation)
        for k in range(options.frames):
            az_deg = 360.0 * k / options.frames
            az = math.radians(az_deg)
            offset = Vector((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
            eye = plan.centre + distance * offset
            index = ring * options.frames + k
            plan.views.append(View(index, f"r_{index:0{digits}d}", az_deg, elevation, look_at(eye, plan.centre)))
    return plan


def transforms_dict(plan, obj_name, scene):
    """The ``transforms.json`` content (NeRF / instant-ngp superset)."""
    data = dict(plan.intrinsics)
    opts = plan.options
    view = scene.view_settings
    data["frames"] = [
        {
            "file_path": f"images/{v.name}.png",
            "transform_matrix": [list(map(float, row)) for row in v.cam_to_world],
            "depth_file_path": f"depth/{v.name}.exr",
            "normal_file_path": f"normal/{v.name}.exr",
            "mask_file_path": f"mask/{v.name}.png",
            "azimuth_deg": v.azimuth,
            "elevation_deg": v.elevation,
        }
        for v in plan.views
    ]
    data["splatdiff"] = {
        "version": 1,
        "object": obj_name,
        "bounding_sphere": {"center": list(map(float, plan.centre)), "radius": plan.radius},
        "camera_distance": plan.distance,
        "frames_per_ring": opts.frames,
        "elevations_deg": [float(e) for e in opts.elevations],
        "engine": opts.engine,
        "samples": opts.samples,
        "up": [0.0, 0.0, 1.0],
        "camera_convention": "Blender/OpenGL: +X right, +Y up, looking down -Z; transform_matrix is camera-to-world",
        "passes": {
            "color": {
                "format": "8-bit RGBA PNG, transparent background (film_transparent)",
                "view_transform": view.view_transform,
                "look": view.look,
                "display_device": scene.display_settings.display_device,
            },
            "depth": {
                "format": "float32 EXR",
                "channel": "Y",
                "units": "metres along the view axis (-z in camera space)",
                "background": 0.0,
            },
            "normal": {"format": "float32 EXR", "channels": "RGB", "space": "world", "background": 0.0},
            "mask": {"format": "8-bit PNG", "object": 255, "background": 0},
        },
    }
    return data


def write_json_atomic(path, data):
    """Writes JSON through a temporary file in the same folder and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -------------------------------------------------------------- scene state


class SceneState:
    """Records what a capture changes in a scene and restores it on exit."""

    RENDER_ATTRS = (
        "engine", "resolution_x", "resolution_y", "resolution_percentage",
        "pixel_aspect_x", "pixel_aspect_y", "film_transparent", "filepath",
        "use_file_extension", "use_border", "use_crop_to_border", "use_multiview",
        "use_compositing", "use_sequencer",
    )
    IMAGE_ATTRS = ("file_format", "color_mode", "color_depth", "compression", "color_management")

    def __init__(self, scene):
        self.scene = scene
        self._saved = []
        self._hide_render = []
        self._render_result_existed = any(img.type == 'RENDER_RESULT' for img in bpy.data.images)

    def _record(self, owner, attrs):
        for attr in attrs:
            if hasattr(owner, attr):
                self._saved.append((owner, attr, getattr(owner, attr)))

    def __enter__(self):
        scene = self.scene
        self._saved.append((scene, "camera", scene.camera))
        self._saved.append((scene, "frame_current", scene.frame_current))
        self._saved.append((scene, "frame_subframe", scene.frame_subframe))
        self._record(scene.render, self.RENDER_ATTRS)
        self._record(scene.render.image_settings, self.IMAGE_ATTRS)
        if hasattr(scene, "cycles"):
            self._record(scene.cycles, ("samples",))
        self._record(scene.eevee, ("taa_render_samples",))
        return self

    def set(self, owner, attr, value):
        """Sets ``owner.attr`` now and restores its value on exit."""
        self._saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def hide_from_render(self, obj):
        if not obj.hide_render:
            self._hide_render.append(obj)
            obj.hide_render = True

    def restore(self):
        errors = []
        for obj in reversed(self._hide_render):
            try:
                obj.hide_render = False
            except ReferenceError:
                pass
        self._hide_render.clear()
        for owner, attr, value in reversed(self._saved):
            try:
                if getattr(owner, attr) != value:
                    setattr(owner, attr, value)
            except (ReferenceError, AttributeError, TypeError, ValueError) as exc:
                errors.append(f"{attr}: {exc}")
        self._saved.clear()
        if not self._render_result_existed:
            for img in list(bpy.data.images):
                if img.type == 'RENDER_RESULT':
                    bpy.data.images.remove(img)
        return errors

    def __exit__(self, *exc):
        self.restore()
        return False


@contextlib.contextmanager
def temporary_camera(scene, name=CAMERA_NAME):
    """A camera object linked to ``scene`` for the duration; removed with its data afterwards."""
    data = bpy.data.cameras.new(name)
    obj = None
    try:
        obj = bpy.data.objects.new(name, data)
        scene.collection.objects.link(obj)
        yield obj
    finally:
        if obj is not None:
            bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.cameras.remove(data, do_unlink=True)


def setup_camera(cam_obj, plan):
    """Lens so that ``fl_x = fl_y = 0.5*W/tan(fov/2)``, principal point at the centre."""
    cam = cam_obj.data
    cam.type = 'PERSP'
    cam.sensor_fit = 'HORIZONTAL'  # the fov spans the image width (square images: both)
    cam.lens_unit = 'FOV'
    cam.angle = plan.options.fov
    cam.shift_x = 0.0
    cam.shift_y = 0.0
    cam.clip_start = max(1e-4, 0.01 * (plan.distance - plan.radius), 1e-3 * plan.distance)
    cam.clip_end = 2.0 * (plan.distance + plan.radius)
    if hasattr(cam, "dof"):
        cam.dof.use_dof = False


def setup_render(scene, options):
    render = scene.render
    render.engine = options.engine
    render.resolution_x = options.resolution
    render.resolution_y = options.resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x = 1.0
    render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.use_file_extension = True
    render.use_border = False
    render.use_multiview = False
    render.use_compositing = False
    render.use_sequencer = False
    img = render.image_settings
    img.file_format = 'PNG'
    img.color_mode = 'RGBA'
    img.color_depth = '8'
    if hasattr(img, "color_management"):
        img.color_management = 'FOLLOW_SCENE'
    if options.engine == "CYCLES" and hasattr(scene, "cycles"):
        scene.cycles.samples = options.samples
    elif options.engine.startswith("BLENDER_EEVEE"):
        scene.eevee.taa_render_samples = options.samples


def _render_still(scene, path):
    """Renders the scene's active camera to ``path`` (patched in tests)."""
    scene.render.filepath = path
    result = bpy.ops.render.render(write_still=True, scene=scene.name)
    if 'FINISHED' not in result:
        raise RuntimeError(f"{path}: Blender's render did not finish ({', '.join(result)})")


def render_turntable(scene, obj, folder, plan):
    """Generator rendering one colour image of ``plan`` per ``next()`` into
    ``folder/images``; yields ``(done, total)``. The scene is restored when
    it finishes, raises or is closed."""
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    total = len(plan.views)
    state = SceneState(scene)
    with state, temporary_camera(scene) as cam_obj:
        setup_camera(cam_obj, plan)
        setup_render(scene, plan.options)
        scene.camera = cam_obj
        if obj.hide_render:
            state.set(obj, "hide_render", False)
        if plan.options.isolate:
            for other in scene.objects:
                if other != obj and other != cam_obj and other.type != 'LIGHT':
                    state.hide_from_render(other)
        for view in plan.views:
            cam_obj.matrix_world = view.cam_to_world
            path = os.path.join(images, view.name + ".png")
            _render_still(scene, path)
            if not os.path.isfile(path):
                raise RuntimeError(f"{path}: Blender rendered the view but wrote no file")
            yield view.index + 1, total
