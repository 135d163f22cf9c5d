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
