"""One splatdiff run, driven step by step: shared by the modal operator (one
step per timer tick) and ``blender_scripts/run_pipeline.py`` (a loop).

A run (1) validates its input, (2) captures the turntable into the
``capture`` stage of the work folder (or reuses a finished capture made with
the same config), rendering one view per step, (3) rasterizes the exact
geometry passes with the native ``Job.render_passes``, (4) commits the stage,
(5) runs the native pipeline and (6) imports the splats it produced.

Only the main thread touches bpy; native jobs run on Rust threads and are
polled.
"""

import json
import math
import os
import tempfile
from dataclasses import dataclass, field

import bpy

from . import capture as _capture
from . import native

CAPTURE_STAGE = "capture"


class RunError(Exception):
    """Bad input, found before anything was changed."""


@dataclass
class RunSettings:
    """Everything a run needs, independent of where it came from (UI or CLI)."""

    object_name: str
    output_dir: str
    capture: _capture.CaptureOptions = field(default_factory=_capture.CaptureOptions)
    keyframes: int = 8
    prompt: str = ""
    negative_prompt: str = ""
    stylizer: str = "diffusion"
    style_image: str = ""
    command: str = ""
    model: str = ""
    strength: float = 0.6
    seed: int = 0
    train_steps: int = 3000
    train_side: int = 256
    iterations: int = 2
    reuse_capture: bool = True

    @classmethod
    def from_props(cls, props):
        """From ``scene.splatdiff``; raises RunError for unusable values."""
        try:
            elevations = _capture.parse_elevations(props.elevations)
        except ValueError as exc:
            raise RunError(f"Elevations: {exc}") from None
        return cls(
            object_name=props.target.name if props.target else "",
            output_dir=props.output_dir,
            capture=_capture.CaptureOptions(
                frames=props.frames,
                elevations=elevations,
                resolution=props.resolution,
                engine=props.engine,
                samples=props.samples,
                fov=props.fov,
                isolate=props.isolate,
            ),
            keyframes=props.keyframes,
            prompt=props.prompt,
            negative_prompt=props.negative_prompt,
            stylizer=props.stylizer.lower(),
            style_image=bpy.path.abspath(props.style_image) if props.style_image else "",
            command=props.command,
            model=bpy.path.abspath(props.model_path) if props.model_path else "",
            strength=props.strength,
            seed=props.seed,
            train_steps=props.train_steps,
            train_side=props.train_side,
            iterations=props.iterations,
            reuse_capture=props.reuse_capture,
        )

    def pipeline_config(self):
        """The run config given to ``Job.pipeline``."""
        return {
            "object": self.object_name,
            "stylize": {
                "method": self.stylizer,
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "style_image": self.style_image,
                "command": self.command,
                "model": self.model,
                "strength": self.strength,
                "seed": self.seed,
                "keyframes": self.keyframes,
            },
            "train": {"steps": self.train_steps, "seed": self.seed, "max_side": self.train_side},
            "iterations": self.iterations,
        }


@dataclass
class Status:
    stage: str
    progress: float
    message: str
    waiting: bool = False  # True while polling a native job (nothing to do on this thread)


@dataclass
class RunResult:
    work_dir: str = ""
    capture_dir: str = ""
    capture_reused: bool = False
    pipeline: dict = None
    stages: list = field(default_factory=list)  # (name, status)
    not_built: list = field(default_factory=list)
    splats_path: str = ""
    imported: object = None

    def summary(self):
        parts = []
        if self.capture_dir:
            parts.append("capture reused" if self.capture_reused else "capture done")
        done = [name for name, status in self.stages if status in ("done", "reused", "finished")]
        if done:
            parts.append("stages done: " + ", ".join(done))
        if self.not_built:
            parts.append("not built yet: " + ", ".join(self.not_built))
        if self.imported is not None:
            parts.append(f"imported {self.imported.name}")
        return "; ".join(parts) if parts else "nothing to do"


def canonical_json(data):
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def resolve_output_dir(path):
    """Absolute output folder; relative (``//``) paths need a saved .blend."""
    path = path.strip()
    if not path:
        raise RunError("No output folder: choose one in Splat Diffusion")
    if path.startswith("//") and not bpy.data.filepath:
        raise RunError(
            f"Output folder {path!r} is relative to the .blend file, which is not saved yet: "
            "save the file or choose an absolute folder"
        )
    return os.path.normpath(os.path.abspath(bpy.path.abspath(path)))


def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{folder}: the output folder cannot be created ({exc.strerror or exc})") from None
    if not os.path.isdir(folder):
        raise RunError(f"{folder}: the output folder is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".splatdiff-write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"{folder}: the output folder is not writable ({exc.strerror or exc})") from None


def validate(scene, settings):
    """Checks the input before anything changes; returns ``(object, work_dir)``."""
    name = settings.object_name
    if not name:
        raise RunError("No target object: choose a mesh object in Splat Diffusion > Target")
    obj = scene.objects.get(name)
    if obj is None:
        if name in bpy.data.objects:
            raise RunError(f"Object {name!r} is not in scene {scene.name!r}")
        raise RunError(f"No object named {name!r} in the file")
    if obj.type != 'MESH':
        raise RunError(f"Object {name!r} is a {obj.type.lower()} object, not a mesh")
    opts = settings.capture
    if opts.frames < 1:
        raise RunError(f"Frames must be at least 1 (got {opts.frames})")
    if opts.resolution < 16:
        raise RunError(f"Resolution must be at least 16 pixels (got {opts.resolution})")
    if not opts.elevations:
        raise RunError("No elevation rings")
    if not (0.0 < opts.fov < math.pi):
        raise RunError(f"Field of view must be between 0 and 180 degrees (got {math.degrees(opts.fov):.1f})")
    engines = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    engines.update(("CYCLES", "BLENDER_WORKBENCH"))
    if opts.engine not in engines:
        raise RunError(f"Render engine {opts.engine!r} is not available in this Blender")
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        faces = len(mesh.polygons)
    finally:
        evaluated.to_mesh_clear()
    if faces == 0:
        raise RunError(f"Mesh {name!r} has no faces: there is nothing to render")
    work_dir = resolve_output_dir(settings.output_dir)
    check_writable(work_dir)
    try:
        native.load()
    except native.NativeMissing as exc:
        raise RunError(str(exc)) from None
    return obj, work_dir


def stage_statuses(result):
    """``[(name, status)]`` of a pipeline result, in run order."""
    return [(str(info.get("name", "?")), str(info.get("status", ""))) for info in result.get("stages", [])]


class Run:
    """A run, advanced by iterating :meth:`steps` (each step yields a :class:`Status`)."""

    def __init__(self, context, settings, *, pipeline=True, import_result=True, log=print):
        # The context is not kept: a modal operator's context is only valid
        # during each call, so later steps use ``bpy.context``.
        self.scene = context.scene
        self.settings = settings
        self.pipeline = pipeline
        self.import_result = import_result
        self.log = log or (lambda _line: None)
        self.obj, self.work_dir = validate(self.scene, settings)
        self.result = RunResult(work_dir=self.work_dir)
        self.job = None
        self._steps = None

    # ------------------------------------------------------------- driving

    def step(self):
        """Advances one step; returns the Status, or None when the run is finished."""
        if self._steps is None:
            self._steps = self.steps()
        try:
            return next(self._steps)
        except StopIteration:
            return None

    def close(self):
        """Cancels the run: stops the native job and restores the scene."""
        if self._steps is not None:
            self._steps.close()
        elif self.job is not None and not self.job.done:
            self.job.cancel()

    def run_blocking(self, on_status=None, poll_interval=0.1):
        import time

        try:
            while (status := self.step()) is not None:
                if on_status:
                    on_status(status)
                if status.waiting:
                    time.sleep(poll_interval)
        finally:
            self.close()
        return self.result

    # --------------------------------------------------------------- steps

    def steps(self):
        try:
            yield from self._capture()
            if self.pipeline:
                yield from self._pipeline()
        finally:
            if self.job is not None and not self.job.done:
                self.job.cancel()
                self.log("splatdiff: cancelled the running native job")

    def _poll(self, job, label):
        self.job = job
        while not job.done:
            for line in job.take_log():
                self.log(line)
            yield Status(job.stage or label, max(0.0, min(1.0, job.progress)), job.message, waiting=True)
        for line in job.take_log():
            self.log(line)
        text = job.result()
        self.job = None
        return text

    def _capture(self):
        mod = native.load()
        opts = self.settings.capture
        arrays = _capture.mesh_arrays(self.obj, bpy.context)
        config = dict(opts.config(), object=self.obj.name, geometry=arrays.fingerprint())
        config_json = canonical_json(config)
        work = self.work_dir
        state = mod.stage_state(work, CAPTURE_STAGE, config_json)
        if state == "finished" and self.settings.reuse_capture:
            self.result.capture_dir = mod.stage_dir(work, CAPTURE_STAGE)
            self.result.capture_reused = True
            self.log(f"splatdiff: reusing the finished capture in {self.result.capture_dir}")
            yield Status(CAPTURE_STAGE, 1.0, "Reusing the finished capture")
            return
        if state in ("finished", "stale"):
            why = "recapture asked for" if state == "finished" else "capture settings or geometry changed"
            self.log(f"splatdiff: {why}: discarding the finished capture and the stages built on it")
            mod.stage_discard(work, CAPTURE_STAGE)
        staging = mod.stage_begin(work, CAPTURE_STAGE, config_json)
        centre, radius = _capture.bounding_sphere(arrays.positions)
        plan = _capture.plan_turntable(centre, radius, opts)
        transforms_path = os.path.join(staging, _capture.TRANSFORMS_NAME)
        _capture.write_json_atomic(transforms_path, _capture.transforms_dict(plan, self.obj.name, self.scene))
        total = len(plan.views)
        yield Status(CAPTURE_STAGE, 0.0, f"Rendering {total} views")
        renderer = _capture.render_turntable(self.scene, self.obj, staging, plan)
        try:
            for done, total in renderer:
                yield Status(CAPTURE_STAGE, 0.8 * done / total, f"Rendered view {done}/{total}")
        finally:
            renderer.close()
        job = mod.Job.render_passes(
            transforms_path,
            arrays.positions.ravel(),
            arrays.triangles.ravel(),
            arrays.corner_normals.ravel(),
        )
        for status in self._poll(job, "passes"):
            yield Status(CAPTURE_STAGE, 0.8 + 0.2 * status.progress, status.message or "Geometry passes", True)
        outputs = {
            "transforms": _capture.TRANSFORMS_NAME,
            "frames": total,
            "images": "images",
            "depth": "depth",
            "normal": "normal",
            "mask": "mask",
            "object": self.obj.name,
        }
        self.result.capture_dir = mod.stage_commit(work, CAPTURE_STAGE, canonical_json(outputs))
        self.log(f"splatdiff: capture of {total} views in {self.result.capture_dir}")
        yield Status(CAPTURE_STAGE, 1.0, f"Captured {total} views")

    def _pipeline(self):
        mod = native.load()
        job = mod.Job.pipeline(self.work_dir, canonical_json(self.settings.pipeline_config()))
        text = yield from self._poll(job, "pipeline")
        result = json.loads(text) if text else {}
        self.result.pipeline = result
        self.result.stages = stage_statuses(result)
        self.result.not_built = [name for name, status in self.result.stages if status == "not_built"]
        splats = result.get("splats", "")
        if splats:
            self.result.splats_path = splats
            if self.import_result:
                yield Status("import", 0.0, f"Importing {os.path.basename(splats)}")
                self.result.imported = self._import(splats)
        yield Status("done", 1.0, self.result.summary())

    def _import(self, path):
        from . import splat_io

        name = f"splatdiff {self.obj.name}"
        collection = bpy.data.collections.new(name)
        self.scene.collection.children.link(collection)
        return splat_io.import_splats(bpy.context, path, name=name, collection=collection)
