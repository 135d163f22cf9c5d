"""Operators: run the pipeline (modal, one step per timer tick), cancel it."""

import traceback

import bpy
from bpy.types import Operator

from . import native
from .run import Run, RunError, RunSettings

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


def _is_cancelled(exc):
    try:
        return isinstance(exc, native.load().Cancelled)
    except native.NativeMissing:
        return False


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


class SPLATDIFF_OT_run(Operator):
    """Capture a turntable of the target, restyle it and train Gaussian splats"""

    bl_idname = "splatdiff.run"
    bl_label = "Run Splat Diffusion"
    bl_options = {'REGISTER'}

    _timer = None
    _run = None
    _finished = False

    @classmethod
    def poll(cls, context):
        return context.scene is not None and _active is None

    # ------------------------------------------------------------- helpers

    def _start(self, context):
        rt = context.window_manager.splatdiff
        try:
            settings = RunSettings.from_props(context.scene.splatdiff)
            run = Run(context, settings, log=print)
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
        rt.message = f"Output: {run.work_dir}"
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
            run.close()  # restores the scene, cancels a native job still running
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
            rt.stage = "done"
            rt.progress = 1.0
            summary = run.result.summary() if run else ""
            rt.message = summary
            rt.last_result = summary
            if run and run.result.not_built:
                self.report({'WARNING'}, "Splat Diffusion: stages not built yet: " + ", ".join(run.result.not_built))
            else:
                self.report({'INFO'}, "Splat Diffusion: " + summary)
        _redraw(context)
        return {'CANCELLED'} if (cancelled or error is not None) else {'FINISHED'}

    def _advance(self, context):
        """One step; returns a finished operator result, or None to go on."""
        try:
            status = self._run.step()
        except _expected_errors() as exc:
            if _is_cancelled(exc):
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


class SPLATDIFF_OT_clear_error(Operator):
    """Dismiss the last error"""

    bl_idname = "splatdiff.clear_error"
    bl_label = "Dismiss"
    bl_options = {'INTERNAL'}

    def execute(self, context):
        context.window_manager.splatdiff.last_error = ""
        return {'FINISHED'}


classes = (SPLATDIFF_OT_run, SPLATDIFF_OT_cancel, SPLATDIFF_OT_clear_error)


@bpy.app.handlers.persistent
def _cancel_before_load(*_args):
    """A file is about to load: cancel the run while the scene it must restore still exists."""
    if _active is not None:
        _active._finish(bpy.context, cancelled=True)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_pre.append(_cancel_before_load)


def unregister():
    if _active is not None:
        _active._finish(bpy.context, cancelled=True)
    if _cancel_before_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_before_load)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
