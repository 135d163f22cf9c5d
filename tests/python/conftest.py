"""Shared fixtures for tests that drive real Blender through the ``bpy`` module."""

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"


def load_addon():
    """Imports ``addon/`` as the package ``splatdiff`` (as Blender would import the extension)."""
    if "splatdiff" in sys.modules:
        return sys.modules["splatdiff"]
    spec = importlib.util.spec_from_file_location(
        "splatdiff", ROOT / "addon" / "__init__.py", submodule_search_locations=[str(ROOT / "addon")]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["splatdiff"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def addon():
    """The add-on, registered in this Blender session."""
    module = load_addon()
    module.register()
    yield module
    module.unregister()


# --------------------------------------------------------------------- helpers

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


@pytest.fixture
def fresh_scene(addon):
    """Blender's factory startup scene (Cube, Camera, Light) with the add-on registered."""
    import bpy

    bpy.ops.wm.read_homefile(use_factory_startup=True)
    return bpy.context.scene


def native_or_skip():
    """The native module; the capture/pipeline tests need it."""
    try:
        import splatdiff_native
    except ImportError as exc:  # pragma: no cover - only before `cargo xtask setup`
        pytest.skip(f"splatdiff_native is not installed ({exc}); run `cargo xtask test`")
    return splatdiff_native


def scene_snapshot(scene):
    """What a capture must leave unchanged: camera, frame, render settings,
    object visibility and transforms, data-block counts."""
    import bpy

    render = scene.render
    img = render.image_settings
    snap = {
        "camera": scene.camera.name if scene.camera else None,
        "frame": (scene.frame_current, scene.frame_subframe),
        "render": {
            attr: getattr(render, attr)
            for attr in (
                "engine", "resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x",
                "pixel_aspect_y", "film_transparent", "filepath", "use_file_extension", "use_border",
                "use_multiview", "use_compositing", "use_sequencer",
            )
        },
        "image": {attr: getattr(img, attr) for attr in ("file_format", "color_mode", "color_depth", "compression")},
        "cycles_samples": scene.cycles.samples,
        "eevee_samples": scene.eevee.taa_render_samples,
        "objects": sorted(
            (o.name, o.hide_render, o.hide_viewport, tuple(round(v, 6) for row in o.matrix_world for v in row))
            for o in scene.objects
        ),
        "counts": {
            name: len(getattr(bpy.data, name))
            for name in ("objects", "cameras", "meshes", "images", "materials", "collections", "lights", "scenes")
        },
    }
    return snap


def load_pixels(path):
    """An image file as float32 (H, W, 4), row 0 at the top (Blender stores bottom-up)."""
    import bpy
    import numpy as np

    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"
        w, h = img.size
        pixels = np.empty(w * h * 4, dtype=np.float32)
        img.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(img)
    return pixels.reshape(h, w, 4)[::-1]


def project(transforms, frame, points):
    """Projects world points with a transforms.json camera, following
    rust/splatdiff-scene/src/camera.rs: returns pixel coordinates (N, 2) and
    depth along the view axis (N,)."""
    import numpy as np

    c2w = np.array(frame["transform_matrix"], dtype=np.float64)
    w2c = np.linalg.inv(c2w)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    u = transforms["cx"] + transforms["fl_x"] * cam[:, 0] / depth
    v = transforms["cy"] - transforms["fl_y"] * cam[:, 1] / depth
    return np.stack([u, v], axis=1), depth


# ------------------------------------------------------------ run helpers

TINY_SD15 = ROOT / "rust" / "splatdiff-diffusion" / "tests" / "fixtures" / "tiny-sd15"
TINY_CONTROLNET = ROOT / "rust" / "splatdiff-diffusion" / "tests" / "fixtures" / "tiny-controlnet-sd15"


def python_command(code, *args):
    """A stylizer command line that runs ``code`` with this Python (portable, unlike cp/sleep);
    ``args`` are appended unquoted (placeholders such as ``{in}`` are quoted by the pipeline)."""
    import shlex

    return " ".join([shlex.join([sys.executable, "-c", code]), *args])


COPY_COMMAND = python_command("import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])", "{in}", "{out}")


def tiny_run(props, target, out, stylizer="COMMAND", **overrides):
    """Settings for a run small enough for a test: 8 Workbench views of 64 px,
    2 keyframes, 30 training steps at 32 px, 2 iterations; the copy command
    as the stylizer unless told otherwise."""
    values = dict(
        target=target, output_dir=str(out), frames=8, elevations="15", resolution=64,
        engine="BLENDER_WORKBENCH", samples=1, keyframes=2, stylizer=stylizer, command=COPY_COMMAND,
        train_steps=30, train_side=32, iterations=2, strength=0.6, strength_falloff=0.5,
    )
    values.update(overrides)
    for name, value in values.items():
        setattr(props, name, value)
    return props


# ----------------------------------------------------------- panel drawing


class RecordingLayout:
    """Stands in for UILayout in background mode: records every call, returns itself."""

    def __init__(self):
        self.calls = []
        self.enabled = self.active = self.alert = True
        self.use_property_split = self.use_property_decorate = False
        self.scale_y = 1.0

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self
        return call


def draw_panel(cls, scene):
    """Runs ``cls.draw`` on a recording layout; returns the calls ``[(method, args, kwargs)]``."""
    import types

    import bpy

    from splatdiff import panels

    class Ctx:
        window_manager = bpy.context.window_manager

    Ctx.scene = scene
    layout = RecordingLayout()
    fake = types.SimpleNamespace(layout=layout, settings=cls.settings, runtime=cls.runtime)
    fake.settings_layout = types.MethodType(panels.SplatdiffPanel.settings_layout, fake)
    cls.draw(fake, Ctx)
    return layout.calls
