"""3D View > Sidebar > Splat Diffusion."""

import bpy
from bpy.types import Panel

IMPORT_OPERATOR = "import_scene.splatdiff_ply"


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
        elif props.stylizer == 'EXEMPLAR':
            col.prop(props, "style_image")
        elif props.stylizer == 'COMMAND':
            col.prop(props, "command")
        col.prop(props, "keyframes")
        col.prop(props, "strength", slider=True)
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


classes = (SPLATDIFF_PT_main, SPLATDIFF_PT_capture, SPLATDIFF_PT_stylize, SPLATDIFF_PT_train)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
