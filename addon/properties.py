"""Settings of splatdiff.

* :class:`SplatdiffSettings` lives on the Scene (``scene.splatdiff``) and is
  saved in the .blend file.
* :class:`SplatdiffRuntime` lives on the WindowManager
  (``window_manager.splatdiff``): the state of the running job, which must not
  be saved.
"""

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup


def eevee_engine_id():
    """'BLENDER_EEVEE_NEXT' in Blender 4.2-4.5, 'BLENDER_EEVEE' in 5.x."""
    items = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in items else "BLENDER_EEVEE"


# Explicit numbers: enum values are stored as integers in the .blend, so the
# Eevee item keeps its value whichever identifier the running Blender uses.
ENGINE_ITEMS = (
    ("CYCLES", "Cycles", "Path-traced renders (slow, best quality)", 0),
    (eevee_engine_id(), "Eevee", "Rasterized renders (needs a GPU)", 1),
    ("BLENDER_WORKBENCH", "Workbench", "Solid viewport shading (fast previews)", 2),
)

ENGINE_ALIASES = {
    "CYCLES": "CYCLES",
    "EEVEE": ENGINE_ITEMS[1][0],
    "BLENDER_EEVEE": ENGINE_ITEMS[1][0],
    "BLENDER_EEVEE_NEXT": ENGINE_ITEMS[1][0],
    "WORKBENCH": "BLENDER_WORKBENCH",
    "BLENDER_WORKBENCH": "BLENDER_WORKBENCH",
}

STYLIZER_ITEMS = (
    ("DIFFUSION", "Diffusion", "Restyle keyframes with the diffusion model from the text prompt", 0),
    ("EXEMPLAR", "Exemplar", "Transfer the look of a style image (example-based)", 1),
    ("EXTERNAL", "External", "Use keyframes restyled outside Blender (images placed in the run folder)", 2),
    ("COMMAND", "Command", "Run a shell command to restyle each keyframe", 3),
)


# Blender 4.5 warns about "//" paths unless the property says it supports them.
_PATH_OPTIONS = {'PATH_SUPPORTS_BLEND_RELATIVE'} if bpy.app.version >= (4, 5, 0) else set()


def _poll_mesh(_self, obj):
    return obj.type == 'MESH'


class SplatdiffSettings(PropertyGroup):
    # ---------------------------------------------------------------- capture
    target: PointerProperty(
        name="Target",
        type=bpy.types.Object,
        poll=_poll_mesh,
        description="Mesh object to restyle",
    )
    output_dir: StringProperty(
        name="Output Folder",
        subtype='DIR_PATH',
        default="//splatdiff/",
        options=_PATH_OPTIONS,
        description="Folder of the run: renders, passes, stylized images and splats",
    )
    frames: IntProperty(
        name="Frames", default=36, min=1, soft_max=360, max=4096,
        description="Turntable views per elevation ring",
    )
    elevations: StringProperty(
        name="Elevations", default="15",
        description="Elevation angles of the camera rings in degrees, comma separated (e.g. \"0, 30\")",
    )
    resolution: IntProperty(
        name="Resolution", default=512, min=16, soft_max=2048, max=8192, subtype='PIXEL',
        description="Width and height of the square turntable images",
    )
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default=0, description="Render engine for the turntable")
    samples: IntProperty(
        name="Samples", default=32, min=1, soft_max=1024, max=65536,
        description="Render samples per pixel (Cycles, Eevee)",
    )
    fov: FloatProperty(
        name="Field of View", default=0.6981317, min=0.0174533, max=3.0, subtype='ANGLE',
        description="Field of view of the turntable cameras",
    )
    isolate: BoolProperty(
        name="Isolate Object", default=True,
        description="Hide other objects (except lights) from the render during capture",
    )
    reuse_capture: BoolProperty(
        name="Reuse Capture", default=True,
        description="Keep a finished capture made with the same settings instead of rendering it again",
    )
    # ---------------------------------------------------------------- stylize
    keyframes: IntProperty(
        name="Keyframes", default=8, min=1, soft_max=64, max=4096,
        description="Views restyled directly; the others are propagated from them",
    )
    prompt: StringProperty(name="Prompt", default="", description="What the restyled object should look like")
    negative_prompt: StringProperty(name="Negative Prompt", default="", description="What to avoid")
    stylizer: EnumProperty(name="Stylizer", items=STYLIZER_ITEMS, default=0, description="How keyframes are restyled")
    style_image: StringProperty(name="Style Image", subtype='FILE_PATH', default="", options=_PATH_OPTIONS, description="Example image of the style (exemplar stylizer)")
    command: StringProperty(
        name="Command", default="",
        description="Shell command that restyles one image; {input}, {output} and {prompt} are replaced",
    )
    model_path: StringProperty(name="Model", subtype='FILE_PATH', default="", options=_PATH_OPTIONS, description="Diffusion model file or folder")
    strength: FloatProperty(
        name="Strength", default=0.6, min=0.0, max=1.0, subtype='FACTOR',
        description="How far the restyled images may depart from the renders",
    )
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed (same seed, same result)")
    # ------------------------------------------------------------------ train
    train_steps: IntProperty(
        name="Training Steps", default=3000, min=1, soft_max=30000, max=1000000,
        description="Optimisation steps of the Gaussian splats",
    )
    train_side: IntProperty(
        name="Training Resolution", default=256, min=16, soft_max=1024, max=8192, subtype='PIXEL',
        description="Longer side of the images the splats are trained on (the renders are downscaled to it)",
    )
    iterations: IntProperty(
        name="Iterations", default=2, min=1, soft_max=10, max=100,
        description="Rounds of restyling the splats' renders and training on them again",
    )


class SplatdiffRuntime(PropertyGroup):
    """State of the running job (on the WindowManager: never saved)."""

    running: BoolProperty(name="Running", default=False)
    cancel_requested: BoolProperty(name="Cancel Requested", default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype='FACTOR')
    stage: StringProperty(name="Stage", default="")
    message: StringProperty(name="Message", default="")
    last_error: StringProperty(name="Last Error", default="")
    last_result: StringProperty(name="Last Result", default="", description="Summary of the last finished run")


classes = (SplatdiffSettings, SplatdiffRuntime)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.splatdiff = PointerProperty(type=SplatdiffSettings)
    bpy.types.WindowManager.splatdiff = PointerProperty(type=SplatdiffRuntime)


def unregister():
    del bpy.types.WindowManager.splatdiff
    del bpy.types.Scene.splatdiff
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
