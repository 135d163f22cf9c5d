"""Settings of splatdiff.

* :class:`SplatdiffSettings` lives on the Scene (``scene.splatdiff``) and is
  saved in the .blend file, with the scene's run history
  (``scene.splatdiff.runs``: one :class:`SplatdiffRun` per run, each with
  its :class:`SplatdiffIteration` items; kept up to date by ``history``).
* :class:`SplatdiffRuntime` lives on the WindowManager
  (``window_manager.splatdiff``): the state of the running job, which must not
  be saved.
"""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
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

# Identifiers map to the run config's names: lower case, '_' -> '-'.
SCHEDULER_ITEMS = (
    ("DPMPP_2M", "DPM++ 2M Karras", "Good quality in few steps", 0),
    ("DDIM", "DDIM", "Deterministic, the classic sampler", 1),
    ("EULER_A", "Euler Ancestral", "Adds fresh noise at every step", 2),
    ("LCM", "LCM", "For latent consistency (LCM) models and LoRAs: 2 to 8 steps", 3),
)

CONSISTENCY_ITEMS = (
    ("CROSS_FRAME", "Cross-Frame", "Keyframes attend to each other while they are denoised (most consistent)", 0),
    ("GRID", "Grid", "Keyframes are denoised together as one tiled image", 1),
    ("NONE", "None", "Each keyframe is restyled on its own", 2),
)

RUN_STATE_ITEMS = (
    ("RUNNING", "Running", "Running, or interrupted (Blender closed during the run)", 'SORTTIME', 0),
    ("PAUSED", "Paused", "Waiting for keyframes edited outside Blender", 'PAUSE', 1),
    ("FINISHED", "Finished", "Every iteration asked for is finished", 'CHECKMARK', 2),
    ("FAILED", "Failed", "Stopped by an error; finished stages are kept", 'ERROR', 3),
    ("CANCELLED", "Cancelled", "Cancelled; finished stages are kept", 'CANCEL', 4),
)


# Blender 4.5 warns about "//" paths unless the property says it supports them.
_PATH_OPTIONS = {'PATH_SUPPORTS_BLEND_RELATIVE'} if bpy.app.version >= (4, 5, 0) else set()


def _poll_mesh(_self, obj):
    return obj.type == 'MESH'


class SplatdiffIteration(PropertyGroup):
    """One finished iteration of a run. Paths are relative to the run's work folder."""

    index: IntProperty(name="Iteration", default=1, min=1)
    strength: FloatProperty(name="Strength", default=0.0, subtype='FACTOR')
    metrics: StringProperty(name="Metrics", default="{}", description="The iteration's metrics (JSON)")
    collection: PointerProperty(
        name="Collection", type=bpy.types.Collection, description="The collection of the imported splats",
    )
    splats: StringProperty(name="Splats", default="", description="Trained splats (.ply)")
    keyframe_sheet: StringProperty(name="Keyframe Sheet", default="", description="Keyframes before and after")
    contact_sheet: StringProperty(name="Contact Sheet", default="", description="Splat renders of all views")
    turntable: StringProperty(name="Turntable", default="", description="Animated GIF of the splat renders")


class SplatdiffRun(PropertyGroup):
    """One run (``name`` is its name, e.g. ``run-001``), written by ``history`` only when a stage finished."""

    work_dir: StringProperty(
        name="Work Folder", default="", subtype='DIR_PATH', options=_PATH_OPTIONS,
        description="The run's folder (relative to the .blend once it is saved)",
    )
    object_name: StringProperty(name="Object", default="", description="The restyled object")
    settings: StringProperty(name="Settings", default="{}", description="The run's settings (JSON)")
    state: EnumProperty(name="State", items=RUN_STATE_ITEMS, default='RUNNING')
    error: StringProperty(name="Error", default="", description="Why the run's last attempt stopped")
    iterations: CollectionProperty(type=SplatdiffIteration, name="Iterations")
    active_iteration: IntProperty(name="Active Iteration", default=0, min=0)
    collection: PointerProperty(
        name="Collection", type=bpy.types.Collection, description="Parent collection of the imported iterations",
    )
    # Paths relative to the work folder.
    edit_folder: StringProperty(name="Edit Folder", default="", description="Where the paused run waits for edits")
    paused_message: StringProperty(name="Paused", default="")
    report_html: StringProperty(name="Report", default="")
    report_markdown: StringProperty(name="Report (Markdown)", default="")


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
    keyframe_frames: StringProperty(
        name="Pick Keyframes", default="",
        description="Frames to restyle, 0-based and comma separated (e.g. \"0, 9, 18, 27\"); empty = Keyframes evenly spaced",
    )
    prompt: StringProperty(name="Prompt", default="", description="What the restyled object should look like")
    negative_prompt: StringProperty(name="Negative Prompt", default="", description="What to avoid")
    stylizer: EnumProperty(name="Stylizer", items=STYLIZER_ITEMS, default=0, description="How keyframes are restyled")
    style_image: StringProperty(name="Style Image", subtype='FILE_PATH', default="", options=_PATH_OPTIONS, description="Example image of the style (exemplar stylizer)")
    command: StringProperty(
        name="Command", default="",
        description="Shell command that restyles one keyframe; {in}, {out}, {prompt}, {seed}, {strength} "
        "and {frame} are replaced (paths are quoted)",
    )
    command_timeout: IntProperty(
        name="Timeout (s)", default=600, min=1, soft_max=3600, max=86400,
        description="Seconds the command may run for one keyframe before it is stopped",
    )
    model_path: StringProperty(name="Model", subtype='FILE_PATH', default="", options=_PATH_OPTIONS, description="Diffusion model file or folder")
    diffusion_steps: IntProperty(
        name="Steps", default=20, min=1, soft_max=100, max=1000,
        description="Denoising steps of the diffusion model (only the last Strength part of them runs)",
    )
    guidance_scale: FloatProperty(
        name="Guidance", default=7.5, min=0.0, soft_max=20.0, max=100.0,
        description="How strongly the prompt steers the image (classifier-free guidance; 1 = off)",
    )
    scheduler: EnumProperty(name="Scheduler", items=SCHEDULER_ITEMS, default=0, description="Diffusion sampler")
    consistency: EnumProperty(
        name="Consistency", items=CONSISTENCY_ITEMS, default=0,
        description="How the keyframes are kept consistent with each other",
    )
    controlnet_depth: StringProperty(
        name="Depth ControlNet", subtype='DIR_PATH', default="", options=_PATH_OPTIONS,
        description="Optional depth ControlNet (diffusers folder): keeps the shape from the capture's depth",
    )
    strength: FloatProperty(
        name="Strength", default=0.6, min=0.0, max=1.0, subtype='FACTOR',
        description="How far the restyled images may depart from the renders",
    )
    strength_falloff: FloatProperty(
        name="Strength Falloff", default=0.5, min=0.0, max=1.0, subtype='FACTOR',
        description="Each iteration restyles with the previous strength times this",
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
    # ---------------------------------------------------------------- history
    runs: CollectionProperty(type=SplatdiffRun, name="Runs", description="The runs of this scene")
    active_run: IntProperty(name="Active Run", default=0, min=0)


class SplatdiffRuntime(PropertyGroup):
    """State of the running job (on the WindowManager: never saved)."""

    running: BoolProperty(name="Running", default=False)
    cancel_requested: BoolProperty(name="Cancel Requested", default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype='FACTOR')
    stage: StringProperty(name="Stage", default="")
    message: StringProperty(name="Message", default="")
    last_error: StringProperty(name="Last Error", default="")
    last_result: StringProperty(name="Last Result", default="", description="Summary of the last finished run")
    run_name: StringProperty(name="Run", default="", description="Name of the running run")


classes = (SplatdiffIteration, SplatdiffRun, SplatdiffSettings, SplatdiffRuntime)


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
