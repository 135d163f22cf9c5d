"""3D View > Sidebar > Splat Diffusion."""

import os

import bpy
from bpy.types import Panel, UIList

from . import history

IMPORT_OPERATOR = "import_scene.splatdiff_ply"
THUMBNAIL_SCALE = 8.0

# Thumbnails of keyframe and contact sheets (bpy.utils.previews), keyed by path and modification time.
_previews = None


class SplatdiffPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Splat Diffusion"

    @staticmethod
    def settings(context):
        return context.scene.splatdiff

    @staticmethod
    def runtime(context):
        return context.window_manager.splatdiff

    def settings_layout(self, context):
        """A property-split layout, disabled while a job runs, and the settings."""
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = not self.runtime(context).running
        return layout, self.settings(context)


class SPLATDIFF_PT_main(SplatdiffPanel, Panel):
    bl_label = "Splat Diffusion"
    bl_idname = "SPLATDIFF_PT_main"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = self.settings(context)
        rt = self.runtime(context)

        col = layout.column()
        col.enabled = not rt.running
        col.prop(props, "target")
        col.prop(props, "output_dir")

        row = layout.row(align=True)
        row.scale_y = 1.4
        if rt.running:
            row.operator("splatdiff.cancel", text="Cancel", icon='CANCEL')
        else:
            row.operator("splatdiff.run", text="Run", icon='PLAY')
        sub = row.row(align=True)
        sub.enabled = not rt.running
        sub.operator(IMPORT_OPERATOR, text="Import", icon='IMPORT')

        draw_status(layout, rt)


def draw_status(layout, rt):
    """Status area: stage, progress bar and message while running; the last error in red."""
    if rt.running:
        box = layout.box()
        box.label(text=f"Stage: {rt.stage or '...'}", icon='SORTTIME')
        if hasattr(box, "progress"):  # Blender 4.0+
            box.progress(factor=rt.progress, type='BAR', text=f"{100.0 * rt.progress:.0f}%")
        else:  # pragma: no cover
            box.label(text=f"{100.0 * rt.progress:.0f}%")
        if rt.message:
            box.label(text=rt.message)
    elif rt.last_error:
        box = layout.box()
        box.alert = True
        row = box.row()
        row.label(text="Run failed", icon='ERROR')
        row.operator("splatdiff.clear_error", text="", icon='X', emboss=False)
        for line in _wrap(rt.last_error, 48):
            box.label(text=line)
    elif rt.last_result:
        box = layout.box()
        for i, line in enumerate(_wrap(rt.last_result, 48)):
            box.label(text=line, icon='CHECKMARK' if i == 0 else 'BLANK1')


def _wrap(text, width):
    import textwrap

    return textwrap.wrap(text, width) or [""]


class SPLATDIFF_PT_capture(SplatdiffPanel, Panel):
    bl_label = "Capture"
    bl_parent_id = "SPLATDIFF_PT_main"

    def draw(self, context):
        layout, props = self.settings_layout(context)
        col = layout.column()
        col.prop(props, "frames")
        col.prop(props, "elevations")
        col.prop(props, "resolution")
        col.prop(props, "fov")
        col = layout.column()
        col.prop(props, "engine")
        sub = col.column()
        sub.active = props.engine != 'BLENDER_WORKBENCH'
        sub.prop(props, "samples")
        col.prop(props, "isolate")
        col.prop(props, "reuse_capture")


class SPLATDIFF_PT_stylize(SplatdiffPanel, Panel):
    bl_label = "Stylize"
    bl_parent_id = "SPLATDIFF_PT_main"

    def draw(self, context):
        layout, props = self.settings_layout(context)
        col = layout.column()
        col.prop(props, "stylizer")
        col.prop(props, "prompt")
        col.prop(props, "negative_prompt")
        if props.stylizer == 'DIFFUSION':
            col.prop(props, "model_path")
            col.prop(props, "diffusion_steps")
            col.prop(props, "guidance_scale")
            col.prop(props, "scheduler")
            col.prop(props, "consistency")
            col.prop(props, "controlnet_depth")
        elif props.stylizer == 'EXEMPLAR':
            col.prop(props, "style_image")
        elif props.stylizer == 'COMMAND':
            col.prop(props, "command")
            col.prop(props, "command_timeout")
        col.prop(props, "keyframes")
        col.prop(props, "keyframe_frames")
        col.prop(props, "strength", slider=True)
        col.prop(props, "strength_falloff", slider=True)
        col.prop(props, "seed")


class SPLATDIFF_PT_train(SplatdiffPanel, Panel):
    bl_label = "Train"
    bl_parent_id = "SPLATDIFF_PT_main"

    def draw(self, context):
        layout, props = self.settings_layout(context)
        col = layout.column()
        col.prop(props, "train_steps")
        col.prop(props, "train_side")
        col.prop(props, "iterations")


class SPLATDIFF_UL_runs(UIList):
    """The scene's runs: name, object, iterations and state."""

    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0, _flt_flag=0):
        row = layout.row(align=True)
        row.label(text=item.name, icon=state_icon(item))
        row.label(text=item.object_name, icon='OBJECT_DATA')
        row.label(text=f"{len(item.iterations)} it")


class SPLATDIFF_UL_iterations(UIList):
    """A run's iterations: strength and a show/hide toggle each."""

    def draw_item(self, _context, layout, data, item, _icon, _active_data, _active_prop, _index=0, _flt_flag=0):
        row = layout.row(align=True)
        row.label(text=f"Iteration {item.index}", icon='SHADING_RENDERED')
        row.label(text=f"Strength {item.strength:.2f}")
        shown = item.collection is not None and not item.collection.hide_viewport
        op = row.operator("splatdiff.toggle_iteration", text="", emboss=False,
                          icon='HIDE_OFF' if shown else 'HIDE_ON')
        op.run_name, op.index = data.name, item.index


def _state_item(record):
    return record.bl_rna.properties["state"].enum_items[record.state]


def state_icon(record):
    """The icon of a run's state (the enum item's own)."""
    return _state_item(record).icon


class SPLATDIFF_PT_runs(SplatdiffPanel, Panel):
    bl_label = "Runs"
    bl_parent_id = "SPLATDIFF_PT_main"

    def draw(self, context):
        layout = self.layout
        props = self.settings(context)
        rt = self.runtime(context)
        layout.template_list("SPLATDIFF_UL_runs", "", props, "runs", props, "active_run", rows=3)
        record = history.active(context.scene)
        if record is None:
            layout.label(text="No runs yet: Run starts one", icon='INFO')
            return
        running = rt.running and rt.run_name == record.name
        draw_run_state(layout, record, running)
        draw_run_buttons(layout, record, rt.running)
        if record.iterations:
            layout.template_list("SPLATDIFF_UL_iterations", "", record, "iterations", record, "active_iteration",
                                 rows=2)
            draw_metrics(layout, record)
            draw_active_iteration(layout, record)


def draw_run_state(layout, record, running):
    """State line; the error of a failed run in red; the pause with its edit folder."""
    box = layout.box()
    if running:
        state = "Running"
    elif record.state == 'RUNNING':  # recorded as running, but no run is: Blender stopped during it
        state = "Interrupted: Continue picks it up"
    else:
        state = _state_item(record).name
    box.label(text=f"{record.name}: {state}", icon=state_icon(record))
    box.label(text=history.work_dir(record), icon='FILE_FOLDER')
    if record.error:
        col = box.column()
        col.alert = True
        for line in _wrap(record.error, 48):
            col.label(text=line)
    if record.edit_folder:
        for line in _wrap(record.paused_message or "Edit the keyframes, then Resume", 48):
            box.label(text=line)
        box.label(text=history.work_path(record, record.edit_folder), icon='IMAGE_DATA')


def draw_run_buttons(layout, record, busy):
    """Continue / Resume, Open Edit Folder, Open Report, Open Folder, Delete Run."""
    row = layout.row(align=True)
    row.enabled = not busy
    if record.edit_folder:
        row.operator("splatdiff.resume_run", text="Resume", icon='PLAY').run_name = record.name
        op = row.operator("splatdiff.open_folder", text="Open Edit Folder", icon='FILEBROWSER')
        op.run_name, op.folder = record.name, 'EDIT'
    else:
        row.operator("splatdiff.continue_run", text="Continue", icon='PLAY').run_name = record.name
    row = layout.row(align=True)
    sub = row.row(align=True)
    sub.enabled = bool(record.report_html)
    sub.operator("splatdiff.open_report", text="Report", icon='TEXT').run_name = record.name
    row.operator("splatdiff.open_folder", text="Folder", icon='FILE_FOLDER').run_name = record.name
    sub = row.row(align=True)
    sub.enabled = not busy
    sub.operator("splatdiff.delete_run", text="", icon='TRASH').run_name = record.name


def draw_metrics(layout, record):
    """The iterations' metrics side by side: one column per iteration."""
    items = list(record.iterations)
    grid = layout.grid_flow(row_major=True, columns=len(items) + 1, even_columns=False, align=True)
    grid.label(text="")
    for item in items:
        grid.label(text=f"it{item.index}")
    values = [history.metrics(item) for item in items]
    for key, label, fmt in history.METRICS:
        grid.label(text=label)
        for metrics in values:
            grid.label(text=history.format_metric(metrics.get(key), fmt))


def draw_active_iteration(layout, record):
    """The active iteration's keyframe and contact sheets, and Delete Iteration."""
    index = min(record.active_iteration, len(record.iterations) - 1)
    item = record.iterations[index]
    box = layout.box()
    row = box.row()
    row.label(text=f"Iteration {item.index}")
    op = row.operator("splatdiff.delete_iteration", text="Delete", icon='TRASH')
    op.run_name, op.index = record.name, item.index
    for label, path in (("Keyframes (before / after)", item.keyframe_sheet), ("Splat renders", item.contact_sheet)):
        icon = thumbnail(history.work_path(record, path))
        box.label(text=label)
        if icon:
            box.template_icon(icon_value=icon, scale=THUMBNAIL_SCALE)
        else:
            box.label(text="(no image)", icon='IMAGE_DATA')


def thumbnail(path):
    """The preview icon of the image at ``path`` (loaded once per file version), or 0."""
    if _previews is None or not path or not os.path.isfile(path):
        return 0
    key = f"{path}@{os.path.getmtime(path)}"
    preview = _previews.get(key) or _previews.load(key, path, 'IMAGE')
    return preview.icon_id


classes = (
    SPLATDIFF_PT_main,
    SPLATDIFF_PT_capture,
    SPLATDIFF_PT_stylize,
    SPLATDIFF_PT_train,
    SPLATDIFF_UL_runs,
    SPLATDIFF_UL_iterations,
    SPLATDIFF_PT_runs,
)


def register():
    global _previews
    import bpy.utils.previews

    _previews = bpy.utils.previews.new()
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister():
    global _previews
    import bpy.utils.previews

    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    bpy.utils.previews.remove(_previews)
    _previews = None
