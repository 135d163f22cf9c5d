"""Operators: start, continue and resume runs (modal, one step per timer
tick, one run at a time), cancel them; and the run history's buttons:
delete an iteration or a run, show or hide an iteration, open the report or
a run's folders."""

import os
import traceback

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Operator

from . import history, native
from .run import Run, RunError, RunSettings, is_cancelled

TIMER_INTERVAL = 0.1

# The running operator (one run at a time). Module state, not the
# WindowManager flag, decides: a reload of the add-on starts afresh.
_active = None


def _expected_errors():
    types = [RunError, OSError, ValueError, RuntimeError]
    try:
        types.extend(native.error_types())
    except native.NativeMissing:
        pass
    return tuple(types)


def _redraw(context):
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type in {'VIEW_3D', 'STATUSBAR'}:
            area.tag_redraw()


def _status_text(context, text):
    workspace = getattr(context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(text)


def _run_name(context, name):
    """``name``, or the active run's name; raises RunError when there is no such run."""
    record = history.find(context.scene, name) if name else history.active(context.scene)
    if record is None:
        raise RunError(f"No run named {name!r}" if name else "No run: start one with Run first")
    return record.name


def open_path(path):
    """Opens a file or folder with the system's default application."""
    bpy.ops.wm.path_open(filepath=path)


class RunModal:
    """The modal machinery of the operators that drive a :class:`Run`:
    subclasses say which run with :meth:`make_run`."""

    bl_options = {'REGISTER'}

    _timer = None
    _run = None
    _finished = False

    @classmethod
    def poll(cls, context):
        return context.scene is not None and _active is None

    def make_run(self, context):
        """The :class:`Run` to drive; raises RunError (or a native error) for bad input."""
        raise NotImplementedError

    # ------------------------------------------------------------- helpers

    def _start(self, context):
        rt = context.window_manager.splatdiff
        try:
            run = self.make_run(context)
        except _expected_errors() as exc:
            rt.last_error = str(exc)
            self.report({'ERROR'}, str(exc))
            return None
        rt.last_error = ""
        rt.last_result = ""
        rt.cancel_requested = False
        rt.running = True
        rt.progress = 0.0
        rt.stage = "starting"
        rt.run_name = run.name
        rt.message = f"{run.name}: {run.work_dir}"
        return run

    def _show(self, context, status):
        rt = context.window_manager.splatdiff
        rt.stage = status.stage
        rt.progress = status.progress
        rt.message = status.message
        _status_text(context, f"Splat Diffusion: {status.stage} {100.0 * status.progress:.0f}%  {status.message}")
        _redraw(context)

    def _finish(self, context, error=None, cancelled=False):
        global _active
        if self._finished:
            return {'CANCELLED'}
        self._finished = True
        if _active is self:
            _active = None
        rt = context.window_manager.splatdiff
        run, self._run = self._run, None
        if run is not None:
            run.close()  # restores the scene, cancels a native job still running, records the stop
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        rt.running = False
        rt.cancel_requested = False
        _status_text(context, None)
        if cancelled:
            rt.stage = "cancelled"
            rt.message = "Cancelled; finished stages are kept"
            self.report({'WARNING'}, "Splat Diffusion cancelled")
        elif error is not None:
            rt.stage = "failed"
            rt.last_error = str(error)
            self.report({'ERROR'}, str(error))
        else:
            rt.stage = "paused" if run and run.result.paused else "done"
            rt.progress = 1.0
            summary = run.result.summary() if run else ""
            rt.message = summary
            rt.last_result = summary
            self.report({'INFO'}, "Splat Diffusion: " + summary)
        _redraw(context)
        return {'CANCELLED'} if (cancelled or error is not None) else {'FINISHED'}

    def _advance(self, context):
        """One step; returns a finished operator result, or None to go on."""
        try:
            status = self._run.step()
        except _expected_errors() as exc:
            if is_cancelled(exc):
                return self._finish(context, cancelled=True)
            return self._finish(context, error=exc)
        except Exception as exc:  # a bug: keep the traceback for the console
            traceback.print_exc()
            return self._finish(context, error=f"{type(exc).__name__}: {exc}")
        if status is None:
            return self._finish(context)
        self._show(context, status)
        return None

    # ------------------------------------------------------------ operator

    def execute(self, context):
        """Runs to the end without returning to the event loop (scripts, background mode)."""
        self._run = self._start(context)
        if self._run is None:
            return {'CANCELLED'}
        while True:
            result = self._advance(context)
            if result is not None:
                return result
            if self._run is not None and self._run.job is not None:
                import time

                time.sleep(TIMER_INTERVAL)

    def invoke(self, context, _event):
        self._run = self._start(context)
        if self._run is None:
            return {'CANCELLED'}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL, window=context.window)
        wm.modal_handler_add(self)
        global _active
        _active = self
        _redraw(context)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        rt = context.window_manager.splatdiff
        if event.type == 'ESC' or rt.cancel_requested:
            return self._finish(context, cancelled=True)
        if event.type == 'TIMER' and event.timer == self._timer:
            result = self._advance(context)
            return result if result is not None else {'RUNNING_MODAL'}
        if event.type == 'Z' and (event.ctrl or event.oskey):
            # Undo while the capture holds references to scene data would break the restore.
            return {'RUNNING_MODAL'}
        return {'PASS_THROUGH'}

    def cancel(self, context):
        # Blender ends the operator (e.g. a file is loaded or the window closes).
        self._finish(context, cancelled=True)


class SPLATDIFF_OT_run(RunModal, Operator):
    """Start a new run: capture a turntable of the target, restyle it and train Gaussian splats"""

    bl_idname = "splatdiff.run"
    bl_label = "Run Splat Diffusion"

    def make_run(self, context):
        return Run.new(context, RunSettings.from_props(context.scene.splatdiff, context.active_object), log=print)


class SPLATDIFF_OT_continue_run(RunModal, Operator):
    """Add one more iteration to a run, with the run's recorded settings (finished stages are reused)"""

    bl_idname = "splatdiff.continue_run"
    bl_label = "Continue Run"

    run_name: StringProperty(name="Run", description="The run to continue (default: the active run)",
                             options={'SKIP_SAVE'})

    def make_run(self, context):
        return Run.proceed(context, _run_name(context, self.run_name), log=print)


class SPLATDIFF_OT_resume_run(RunModal, Operator):
    """Resume a paused run with the keyframes edited in its edit folder"""

    bl_idname = "splatdiff.resume_run"
    bl_label = "Resume Run"

    run_name: StringProperty(name="Run", description="The run to resume (default: the active run)",
                             options={'SKIP_SAVE'})

    def make_run(self, context):
        return Run.proceed(context, _run_name(context, self.run_name), resume=True, log=print)


class SPLATDIFF_OT_cancel(Operator):
    """Cancel the running Splat Diffusion job (finished stages are kept)"""

    bl_idname = "splatdiff.cancel"
    bl_label = "Cancel"
    bl_options = {'REGISTER', 'INTERNAL'}

    @classmethod
    def poll(cls, context):
        return context.window_manager.splatdiff.running

    def execute(self, context):
        rt = context.window_manager.splatdiff
        if _active is None:  # stale state (e.g. the add-on was reloaded during a run)
            rt.running = False
            rt.cancel_requested = False
            return {'FINISHED'}
        rt.cancel_requested = True
        return {'FINISHED'}


class RecordOperator:
    """A button on a recorded run (``run_name``; default: the active run)."""

    bl_options = {'REGISTER', 'INTERNAL'}
    changes_history = True  # not available while a run is running

    run_name: StringProperty(name="Run", description="The run (default: the active run)", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if cls.changes_history and _active is not None:
            return False
        return context.scene is not None and len(history.runs(context.scene)) > 0

    def execute(self, context):
        try:
            record = history.find(context.scene, _run_name(context, self.run_name))
            message = self.apply(context, record)
        except _expected_errors() as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if message:
            self.report({'INFO'}, message)
        _redraw(context)
        return {'FINISHED'}

    def apply(self, context, record):
        """Does the operator's work on ``record``; returns a message or ''; raises RunError."""
        raise NotImplementedError

    @staticmethod
    def iteration(record, index):
        """The record's iteration ``index``; raises RunError."""
        item = history.iteration(record, index)
        if item is None:
            raise RunError(f"Run {record.name!r} has no iteration {index}")
        return item


class SPLATDIFF_OT_delete_iteration(RecordOperator, Operator):
    """Delete this iteration and the later ones: their stages in the run folder and their splats in the scene"""

    bl_idname = "splatdiff.delete_iteration"
    bl_label = "Delete Iteration"

    index: IntProperty(name="Iteration", min=1, default=1)

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def apply(self, context, record):
        self.iteration(record, self.index)
        folder = history.work_dir(record)
        if os.path.isdir(folder):  # the native call would create a missing folder
            native.load().stage_discard(folder, f"stylize-{self.index}")
            where = f"its stages in {folder} are deleted"
        else:
            where = f"the run folder {folder} is missing, so only the scene's copy is deleted"
        history.delete_iterations(record, self.index)
        return f"Deleted iteration {self.index} and later of {record.name}; {where}"


class SPLATDIFF_OT_delete_run(RecordOperator, Operator):
    """Delete the run from the scene: its record and its splats (its files stay on disk)"""

    bl_idname = "splatdiff.delete_run"
    bl_label = "Delete Run"

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def apply(self, context, record):
        name, folder = record.name, history.work_dir(record)
        history.delete_run(context.scene, name)
        return f"Deleted {name} from the scene; its files stay in {folder}"


class SPLATDIFF_OT_toggle_iteration(RecordOperator, Operator):
    """Show or hide this iteration's splats (to compare iterations)"""

    bl_idname = "splatdiff.toggle_iteration"
    bl_label = "Show/Hide Iteration"
    changes_history = False

    index: IntProperty(name="Iteration", min=1, default=1)

    def apply(self, context, record):
        item = self.iteration(record, self.index)
        if item.collection is None:
            raise RunError(f"The splats of {record.name} iteration {self.index} are not in the scene; "
                           "Continue imports them again")
        history.set_visible(item.collection, item.collection.hide_viewport)
        return ""


class SPLATDIFF_OT_open_report(RecordOperator, Operator):
    """Open the run's report (HTML) in the web browser"""

    bl_idname = "splatdiff.open_report"
    bl_label = "Open Report"
    changes_history = False

    def apply(self, context, record):
        path = history.work_path(record, record.report_html)
        if not path:
            raise RunError(f"Run {record.name!r} has no report yet: it is written when an iteration finishes")
        if not os.path.isfile(path):
            raise RunError(f"{path}: the report of {record.name} does not exist (moved or deleted?)")
        open_path(path)
        return ""


class SPLATDIFF_OT_open_folder(RecordOperator, Operator):
    """Open the run's folder, or the folder where a paused run waits for edited keyframes"""

    bl_idname = "splatdiff.open_folder"
    bl_label = "Open Folder"
    changes_history = False

    folder: EnumProperty(
        name="Folder",
        items=(('RUN', "Run", "The run's work folder"), ('EDIT', "Edit", "The keyframes to edit of a paused run")),
        default='RUN',
        options={'SKIP_SAVE'},
    )

    def apply(self, context, record):
        if self.folder == 'EDIT':
            if not record.edit_folder:
                raise RunError(f"Run {record.name!r} is not paused: it has no keyframes to edit")
            path = history.work_path(record, record.edit_folder)
        else:
            path = history.work_dir(record)
        if not os.path.isdir(path):
            raise RunError(f"{path}: the folder does not exist (moved or deleted?)")
        open_path(path)
        return ""


class SPLATDIFF_OT_clear_error(Operator):
    """Dismiss the last error"""

    bl_idname = "splatdiff.clear_error"
    bl_label = "Dismiss"
    bl_options = {'INTERNAL'}

    def execute(self, context):
        context.window_manager.splatdiff.last_error = ""
        return {'FINISHED'}


classes = (
    SPLATDIFF_OT_run,
    SPLATDIFF_OT_continue_run,
    SPLATDIFF_OT_resume_run,
    SPLATDIFF_OT_cancel,
    SPLATDIFF_OT_delete_iteration,
    SPLATDIFF_OT_delete_run,
    SPLATDIFF_OT_toggle_iteration,
    SPLATDIFF_OT_open_report,
    SPLATDIFF_OT_open_folder,
    SPLATDIFF_OT_clear_error,
)


@bpy.app.handlers.persistent
def _cancel_before_load(*_args):
    """A file is about to load: cancel the run while the scene it must restore still exists."""
    if _active is not None:
        _active._finish(bpy.context, cancelled=True)


@bpy.app.handlers.persistent
def _relocate_before_save(filepath, *_args):
    """The .blend is about to be saved at ``filepath``: store run folders relative to it."""
    history.relocate_work_dirs(filepath, bpy.data.filepath)


@bpy.app.handlers.persistent
def _relocate_after_save(filepath, *_args):
    """Saved (maybe as a copy elsewhere): run folders relative to the open file again."""
    history.relocate_work_dirs(bpy.data.filepath, filepath)


_handlers = (
    (bpy.app.handlers.load_pre, _cancel_before_load),
    (bpy.app.handlers.save_pre, _relocate_before_save),
    (bpy.app.handlers.save_post, _relocate_after_save),
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    for handlers, handler in _handlers:
        handlers.append(handler)


def unregister():
    if _active is not None:
        _active._finish(bpy.context, cancelled=True)
    for handlers, handler in _handlers:
        if handler in handlers:
            handlers.remove(handler)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
