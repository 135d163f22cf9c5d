"""One splatdiff run, driven step by step: shared by the modal operators (one
step per timer tick) and ``blender_scripts/run_pipeline.py`` (a loop).

Every run has its own work folder, ``<output folder>/<run name>``. A run
(1) validates its input, (2) captures the turntable into the ``capture``
stage (rendering one view per step; a new run may take a finished capture
with the same config from another run in the output folder; a continued run
reuses its own), (3) rasterizes the exact geometry passes with the native
``Job.render_passes``, (4) commits the stage and records the run in the
scene's history, (5) runs the native pipeline (points, then per iteration
stylize, propagate, train, render; and the report) and (6) imports every
finished iteration's splats not yet in the scene. A run paused for external
edits ends without error; resuming it is a run with ``resume=True``.

Only the main thread touches bpy; native jobs run on Rust threads and are
polled.
"""

import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import bpy

from . import capture as _capture
from . import history, native

CAPTURE_STAGE = "capture"
STYLIZERS = ("diffusion", "exemplar", "external", "command")


class RunError(Exception):
    """Bad input, found before anything was changed."""


def enum_id(identifier):
    """A panel enum identifier as the run config names it: ``CROSS_FRAME`` -> ``cross-frame``."""
    return identifier.lower().replace("_", "-")


@dataclass
class RunSettings:
    """Everything a run needs, independent of where it came from (UI, CLI or a run's record)."""

    object_name: str
    output_dir: str
    capture: _capture.CaptureOptions = field(default_factory=_capture.CaptureOptions)
    keyframes: int = 8
    keyframe_frames: tuple = ()
    prompt: str = ""
    negative_prompt: str = ""
    stylizer: str = "diffusion"
    style_image: str = ""
    command: str = ""
    command_timeout: int = 600
    model: str = ""
    diffusion_steps: int = 20
    guidance_scale: float = 7.5
    scheduler: str = "dpmpp-2m"
    consistency: str = "cross-frame"
    controlnet_depth: str = ""
    strength: float = 0.6
    strength_falloff: float = 0.5
    seed: int = 0
    train_steps: int = 3000
    train_side: int = 256
    iterations: int = 2
    reuse_capture: bool = True

    @classmethod
    def from_props(cls, props, active_object=None):
        """From ``scene.splatdiff``; without a Target, the selected active mesh
        object (so a first run just works on the selection). Raises RunError
        for unusable values."""
        try:
            elevations = _capture.parse_elevations(props.elevations)
        except ValueError as exc:
            raise RunError(f"Elevations: {exc}") from None
        return cls(
            object_name=_target_name(props.target, active_object),
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
            keyframe_frames=parse_keyframe_frames(props.keyframe_frames),
            prompt=props.prompt,
            negative_prompt=props.negative_prompt,
            stylizer=props.stylizer.lower(),
            style_image=_abspath(props.style_image),
            command=props.command,
            command_timeout=props.command_timeout,
            model=_abspath(props.model_path),
            diffusion_steps=props.diffusion_steps,
            guidance_scale=round(props.guidance_scale, 4),
            scheduler=enum_id(props.scheduler),
            consistency=enum_id(props.consistency),
            controlnet_depth=_abspath(props.controlnet_depth),
            strength=round(props.strength, 4),  # f32 in Blender: 0.6 reads as 0.6000000238
            strength_falloff=round(props.strength_falloff, 4),
            seed=props.seed,
            train_steps=props.train_steps,
            train_side=props.train_side,
            iterations=props.iterations,
            reuse_capture=props.reuse_capture,
        )

    def to_json(self):
        """The settings as JSON (what a run's record keeps)."""
        return canonical_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        """Settings written by :meth:`to_json`; raises RunError when unreadable."""
        try:
            data = json.loads(text)
            capture = data.pop("capture")
            capture["elevations"] = tuple(capture["elevations"])
            data["keyframe_frames"] = tuple(data.get("keyframe_frames", ()))
            return cls(capture=_capture.CaptureOptions(**capture), **data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RunError(f"The run's recorded settings cannot be read ({exc})") from None

    def stylize_config(self):
        """The ``stylize`` part of the run config, for this stylizer."""
        if self.stylizer == "diffusion":
            controlnets = []
            if self.controlnet_depth:
                controlnets.append({"kind": "depth", "model": self.controlnet_depth, "weight": 1.0})
            return {
                "kind": "diffusion",
                "model": self.model,
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "strength": self.strength,
                "steps": self.diffusion_steps,
                "guidance_scale": self.guidance_scale,
                "seed": self.seed,
                "scheduler": self.scheduler,
                "consistency": self.consistency,
                "controlnets": controlnets,
            }
        if self.stylizer == "exemplar":
            return {"kind": "exemplar", "style_image": self.style_image, "strength": self.strength}
        if self.stylizer == "external":
            return {"kind": "external", "strength": self.strength}
        return {
            "kind": "command",
            "command": self.command,
            "timeout_s": self.command_timeout,
            "prompt": self.prompt,
            "seed": self.seed,
            "strength": self.strength,
        }

    def pipeline_config(self, resume=False):
        """The run config given to ``Job.pipeline``; ``resume``: external edits are done."""
        return {
            "keyframes": {"count": self.keyframes, "frames": list(self.keyframe_frames)},
            "stylize": self.stylize_config(),
            "iterations": self.iterations,
            "strength_falloff": self.strength_falloff,
            "propagate": {},
            "train": {"steps": self.train_steps, "seed": self.seed, "max_side": self.train_side},
            "resume": resume,
        }


def _target_name(target, active_object):
    """The Target's name, else the active object's when it is a selected mesh, else ''."""
    if target is not None:
        return target.name
    if active_object is not None and active_object.type == 'MESH' and active_object.select_get():
        return active_object.name
    return ""


def parse_keyframe_frames(text):
    """``"0, 9, 18"`` -> ``(0, 9, 18)`` (empty: evenly spaced); raises RunError."""
    frames = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise RunError(f"Pick Keyframes: {part!r} is not a frame number (expected 0-based frames like \"0, 9, 18\")")
        frames.append(int(part))
    return tuple(sorted(set(frames)))


def _abspath(path):
    """A path property as an absolute path ('' stays '')."""
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


@dataclass
class Status:
    stage: str
    progress: float
    message: str
    waiting: bool = False  # True while polling a native job (nothing to do on this thread)


@dataclass
class RunResult:
    name: str = ""
    work_dir: str = ""
    capture_dir: str = ""
    capture_reused: bool = False
    pipeline: dict = None
    stages: list = field(default_factory=list)  # (name, status)
    iterations: list = field(default_factory=list)  # the result's finished iterations
    paused: dict = None
    report: str = ""
    splats_path: str = ""
    imported: list = field(default_factory=list)

    def summary(self):
        parts = [self.name] if self.name else []
        if self.capture_dir:
            parts.append("capture reused" if self.capture_reused else "capture done")
        if self.pipeline is not None:
            parts.append(f"{len(self.iterations)} iteration(s) finished")
        if self.imported:
            parts.append("imported " + ", ".join(obj.name for obj in self.imported))
        if self.paused:
            parts.append(f"paused: edit the keyframes in {self.paused.get('folder', '?')}, then Resume")
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


def validate_object(scene, name):
    """The mesh object ``name`` of ``scene``, with faces; raises RunError."""
    if not name:
        raise RunError("No target object: select a mesh object, or choose one in Splat Diffusion > Target")
    obj = scene.objects.get(name)
    if obj is None:
        if name in bpy.data.objects:
            raise RunError(f"Object {name!r} is not in scene {scene.name!r}")
        raise RunError(f"No object named {name!r} in the file")
    if obj.type != 'MESH':
        raise RunError(f"Object {name!r} is a {obj.type.lower()} object, not a mesh")
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        faces = len(mesh.polygons)
    finally:
        evaluated.to_mesh_clear()
    if faces == 0:
        raise RunError(f"Mesh {name!r} has no faces: there is nothing to render")
    return obj


def validate_capture(opts):
    """Raises RunError for capture options that cannot render."""
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


def _require_path(path, what, where, folder=False):
    if not path:
        raise RunError(f"No {what}: choose one in {where}")
    if not (os.path.isdir(path) if folder else os.path.exists(path)):
        raise RunError(f"{path}: the {what} does not exist")


def validate_stylizer(settings):
    """Raises RunError for stylize settings the pipeline could not use."""
    kind = settings.stylizer
    if kind not in STYLIZERS:
        raise RunError(f"Unknown stylizer {kind!r} (use {', '.join(STYLIZERS)})")
    if kind == "diffusion":
        _require_path(settings.model, "diffusion model", "Stylize > Model")
        if settings.controlnet_depth:
            _require_path(settings.controlnet_depth, "depth ControlNet folder", "Stylize", folder=True)
    elif kind == "exemplar":
        _require_path(settings.style_image, "style image", "Stylize > Style Image")
    elif kind == "command":
        if not settings.command.strip():
            raise RunError("No command: enter one in Stylize > Command, e.g. \"mytool {in} {out}\"")
        if settings.command_timeout < 1:
            raise RunError(f"The command timeout must be at least 1 second (got {settings.command_timeout})")
    if settings.keyframes < 1:
        raise RunError(f"Keyframes must be at least 1 (got {settings.keyframes})")
    if settings.iterations < 1:
        raise RunError(f"Iterations must be at least 1 (got {settings.iterations})")


def validate(scene, settings, pipeline=True):
    """Checks the input before anything changes; returns the object."""
    obj = validate_object(scene, settings.object_name)
    validate_capture(settings.capture)
    if pipeline:
        validate_stylizer(settings)
    try:
        native.load()
    except native.NativeMissing as exc:
        raise RunError(str(exc)) from None
    return obj


def stage_statuses(result):
    """``[(name, status)]`` of a pipeline result, in run order."""
    return [(str(info.get("name", "?")), str(info.get("status", ""))) for info in result.get("stages", [])]


def capture_outputs(total, object_name):
    """The outputs recorded for a finished capture stage."""
    return {
        "transforms": _capture.TRANSFORMS_NAME,
        "frames": total,
        "images": "images",
        "depth": "depth",
        "normal": "normal",
        "mask": "mask",
        "object": object_name,
    }


def _link_or_copy(src, dst):
    """Hard-links a finished capture's file (captures are never modified), or copies it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class Run:
    """A run, advanced by iterating :meth:`steps` (each step yields a :class:`Status`).

    Make one with :meth:`new` (a new run and work folder) or :meth:`proceed`
    (continue or resume a recorded run with its recorded settings).
    """

    def __init__(self, context, settings, obj, name, work_dir, *, continuing=False, resume=False, pipeline=True,
                 import_result=True, log=print):
        # The context is not kept: a modal operator's context is only valid
        # during each call, so later steps use ``bpy.context``.
        self.scene = context.scene
        self.settings = settings
        self.obj = obj
        self.name = name
        self.work_dir = work_dir
        self.continuing = continuing
        self.resume = resume
        self.pipeline = pipeline
        self.import_result = import_result
        self.log = log or (lambda _line: None)
        self.result = RunResult(name=name, work_dir=work_dir)
        self.job = None
        self._steps = None

    @classmethod
    def new(cls, context, settings, **kwargs):
        """A new run, in a new folder ``<output folder>/run-NNN``."""
        obj = validate(context.scene, settings, kwargs.get("pipeline", True))
        output_dir = resolve_output_dir(settings.output_dir)
        check_writable(output_dir)
        name = history.next_run_name(context.scene, output_dir)
        return cls(context, settings, obj, name, os.path.join(output_dir, name), **kwargs)

    @classmethod
    def proceed(cls, context, name, *, iterations=None, resume=False, **kwargs):
        """Continues the recorded run ``name`` with its recorded settings: to
        ``iterations`` in all (default: one more than it has), or, with
        ``resume``, resumes its pause with the edited keyframes."""
        record = history.find(context.scene, name)
        if record is None:
            known = ", ".join(r.name for r in history.runs(context.scene)) or "none"
            raise RunError(f"No run named {name!r} in scene {context.scene.name!r} (runs: {known})")
        if resume and not record.edit_folder:
            raise RunError(f"Run {name!r} is not paused: there is nothing to resume")
        folder = history.work_dir(record)
        if not os.path.isdir(folder):
            raise RunError(f"{folder}: the folder of run {name!r} is missing (moved or deleted?)")
        check_writable(folder)
        settings = RunSettings.from_json(record.settings)
        settings.object_name = record.object_name
        if not resume:
            finished = len(record.iterations)
            if iterations is not None and iterations <= finished:
                raise RunError(
                    f"Run {name!r} already has {finished} iteration(s): ask for more, or delete iterations first"
                )
            settings.iterations = iterations or finished + 1
        obj = validate(context.scene, settings, kwargs.get("pipeline", True))
        return cls(context, settings, obj, name, folder, continuing=True, resume=resume, **kwargs)

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

    def record(self):
        """The run's history record (None until its capture is finished)."""
        return history.find(self.scene, self.name)

    def steps(self):
        try:
            yield from self._capture()
            self._record_start()
            if self.pipeline:
                yield from self._pipeline()
            else:
                history.stop(self.record(), 'FINISHED')
        except GeneratorExit:
            self._record_stop('CANCELLED', "Cancelled; finished stages are kept")
            raise
        except Exception as exc:
            self._record_stop('CANCELLED' if is_cancelled(exc) else 'FAILED', str(exc))
            raise
        finally:
            if self.job is not None and not self.job.done:
                self.job.cancel()
                self.log("splatdiff: cancelled the running native job")

    def _record_start(self):
        record = self.record()
        if record is None:
            history.create(self.scene, self.name, self.work_dir, self.obj.name, self.settings.to_json())
        else:
            history.start(record, self.settings.to_json())

    def _record_stop(self, state, error):
        record = self.record()
        if record is not None:
            history.stop(record, state, error)

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
        config_json = canonical_json(dict(opts.config(), object=self.obj.name, geometry=arrays.fingerprint()))
        work = self.work_dir
        state = mod.stage_state(work, CAPTURE_STAGE, config_json)
        if self.continuing:
            self._check_own_capture(state)
        if state == "finished":
            self.result.capture_dir = mod.stage_dir(work, CAPTURE_STAGE)
            self.result.capture_reused = True
            self.log(f"splatdiff: reusing the finished capture in {self.result.capture_dir}")
            yield Status(CAPTURE_STAGE, 1.0, "Reusing the finished capture")
            return
        total = opts.frames * len(opts.elevations)
        earlier = self._earlier_capture(config_json) if self.settings.reuse_capture else None
        staging = mod.stage_begin(work, CAPTURE_STAGE, config_json)
        if earlier:
            shutil.copytree(earlier, staging, dirs_exist_ok=True, copy_function=_link_or_copy)
            self.result.capture_reused = True
            self.log(f"splatdiff: reusing the finished capture of {earlier}")
        else:
            yield from self._render_capture(mod, staging, arrays)
        outputs = canonical_json(capture_outputs(total, self.obj.name))
        self.result.capture_dir = mod.stage_commit(work, CAPTURE_STAGE, outputs)
        self.log(f"splatdiff: capture of {total} views in {self.result.capture_dir}")
        yield Status(CAPTURE_STAGE, 1.0, f"Captured {total} views")

    def _check_own_capture(self, state):
        """A continued run must keep its capture: its iterations were trained on it."""
        if state == "stale":
            raise RunError(
                f"{self.obj.name!r} or the capture settings changed since run {self.name!r} was captured: "
                "start a new run instead"
            )
        if state != "finished":
            raise RunError(f"{self.work_dir}: the capture of run {self.name!r} is missing")

    def _earlier_capture(self, config_json):
        """The capture folder of another run in the output folder finished with
        the same config (same object, geometry and settings), or None."""
        mod = native.load()
        parent = os.path.dirname(self.work_dir)
        for entry in sorted(os.listdir(parent), reverse=True):
            other = os.path.join(parent, entry)
            if other == self.work_dir or not os.path.isfile(os.path.join(other, "manifest.json")):
                continue
            try:
                if mod.stage_state(other, CAPTURE_STAGE, config_json) == "finished":
                    return mod.stage_dir(other, CAPTURE_STAGE)
            except native.error_types():
                continue  # not a readable work folder: not ours to judge
        return None

    def _render_capture(self, mod, staging, arrays):
        """Renders the turntable into ``staging`` and rasterizes the geometry passes."""
        opts = self.settings.capture
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

    def _pipeline(self):
        mod = native.load()
        config = canonical_json(self.settings.pipeline_config(resume=self.resume))
        job = mod.Job.pipeline(self.work_dir, config)
        text = yield from self._poll(job, "pipeline")
        result = json.loads(text) if text else {}
        self.result.pipeline = result
        self.result.stages = stage_statuses(result)
        self.result.iterations = list(result.get("iterations", []))
        self.result.paused = result.get("paused")
        self.result.report = (result.get("report") or {}).get("html", "")
        self.result.splats_path = result.get("splats", "")
        history.apply_result(self.record(), result)
        if self.import_result:
            yield from self._import_pending()
        if self.result.paused:
            yield Status("paused", 1.0, self.result.paused.get("message") or self.result.summary())
        else:
            yield Status("done", 1.0, self.result.summary())

    def _import_pending(self):
        """Imports every finished iteration whose splats are not in the scene yet."""
        pending = history.pending_imports(self.record())
        for done, index in enumerate(pending):
            yield Status("import", done / len(pending), f"Importing iteration {index}")
            self.result.imported.append(history.import_iteration(bpy.context, self.record(), index, self.obj))


def is_cancelled(exc):
    """Whether ``exc`` is the native module's Cancelled."""
    try:
        return isinstance(exc, native.load().Cancelled)
    except native.NativeMissing:
        return False
