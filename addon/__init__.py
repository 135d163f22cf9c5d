"""Splat Diffusion: restyle a 3D object by text prompt and train Gaussian
splats from a 360 degree turntable.

Modules (as in Blender's own add-ons): ``properties`` (settings and the
run history), ``operators`` (run / continue / resume / cancel, the history's
buttons), ``panels`` (3D View sidebar), ``io_operators`` and ``splat_io``
(splat PLY import/export), ``capture`` (turntable cameras and renders),
``run`` (drives a run step by step), ``history`` (the scene's run records and
their collections), ``native`` (the Rust backend).
"""

bl_info = {
    "name": "Splat Diffusion",
    "author": "splatdiff developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D View > Sidebar > Splat Diffusion",
    "description": "Restyle an object by text prompt and train Gaussian splats from a turntable",
    "category": "Render",
    "doc_url": "https://example.invalid/splatdiff",
}

if "bpy" in locals():  # reload (F3 > Reload Scripts)
    import importlib

    for _name in ("native", "properties", "capture", "history", "run", "splat_io", "io_operators", "operators",
                  "panels"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402

from . import capture, history, io_operators, native, operators, panels, properties, run, splat_io  # noqa: E402,F401

_modules = (properties, operators, panels)


def register():
    for module in _modules:
        module.register()
    for cls in io_operators.classes:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(io_operators.menu_import)
    bpy.types.TOPBAR_MT_file_export.append(io_operators.menu_export)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(io_operators.menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(io_operators.menu_import)
    for cls in reversed(io_operators.classes):
        bpy.utils.unregister_class(cls)
    for module in reversed(_modules):
        module.unregister()
