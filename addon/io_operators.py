"""File > Import / Export operators for Gaussian splat files."""

import os

import bpy
from bpy.props import CollectionProperty, FloatProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import native, splat_io


def _input_errors():
    """Exception types that mean bad input (reported to the user), not a bug."""
    try:
        return native.error_types() + (native.NativeMissing,)
    except native.NativeMissing:
        return (native.NativeMissing, OSError, ValueError)


class IMPORT_SCENE_OT_splatdiff_ply(Operator, ImportHelper):
    """Import 3D Gaussian Splatting .ply files as splat point meshes"""

    bl_idname = "import_scene.splatdiff_ply"
    bl_label = "Gaussian Splats (.ply)"
    bl_options = {'REGISTER', 'UNDO'}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply", options={'HIDDEN'})
    files: CollectionProperty(type=OperatorFileListElement, options={'HIDDEN', 'SKIP_SAVE'})
    directory: StringProperty(subtype='DIR_PATH', options={'HIDDEN', 'SKIP_SAVE'})
    radius_scale: FloatProperty(
        name="Radius Scale",
        description="Multiplies the display radius of every splat (display only, not exported)",
        default=1.0,
        min=0.0,
        soft_max=10.0,
    )

    def _paths(self):
        names = [f.name for f in self.files if f.name]
        if names and self.directory:
            return [os.path.join(self.directory, n) for n in names]
        return [self.filepath]

    def execute(self, context):
        imported = []
        failed = 0
        for path in self._paths():
            try:
                obj = splat_io.import_splats(context, path, radius_scale=self.radius_scale)
            except _input_errors() as exc:
                self.report({'ERROR'}, str(exc))
                failed += 1
                continue
            imported.append(obj)
        if not imported:
            return {'CANCELLED'}
        for obj in imported[:-1]:  # several files: all selected, the last one active
            try:
                obj.select_set(True)
            except RuntimeError:
                pass  # not in the view layer
        total = sum(len(obj.data.vertices) for obj in imported)
        if not failed:
            self.report({'INFO'}, f"Imported {total:,} splats into {len(imported)} object(s)")
        return {'FINISHED'}


class EXPORT_SCENE_OT_splatdiff_ply(Operator, ExportHelper):
    """Export the active splat object as a 3DGS .ply (or a web .splat file)"""

    bl_idname = "export_scene.splatdiff_ply"
    bl_label = "Gaussian Splats (.ply)"
    bl_options = {'REGISTER'}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply;*.splat", options={'HIDDEN'})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def check(self, context):
        # Keep a typed ".splat" extension; anything else gets ".ply".
        if self.filepath.lower().endswith(".splat"):
            return False
        return ExportHelper.check(self, context)

    def execute(self, context):
        path = self.filepath
        if not path.lower().endswith((".ply", ".splat")):
            path = bpy.path.ensure_ext(path, self.filename_ext)
        try:
            count = splat_io.export_splats(context.active_object, path)
        except _input_errors() as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Exported {count:,} splats to {path}")
        return {'FINISHED'}


classes = (
    IMPORT_SCENE_OT_splatdiff_ply,
    EXPORT_SCENE_OT_splatdiff_ply,
)


def menu_import(self, context):
    self.layout.operator(IMPORT_SCENE_OT_splatdiff_ply.bl_idname, text="Gaussian Splats (.ply)")


def menu_export(self, context):
    self.layout.operator(EXPORT_SCENE_OT_splatdiff_ply.bl_idname, text="Gaussian Splats (.ply/.splat)")


def register():
    """Standalone registration (the add-on's ``__init__`` normally does this)."""
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
