"""The scene's run history (``scene.splatdiff.runs``): records, their
imported collections, and the paths they keep.

A record is changed only here, and only once a stage has finished: created
when the run's capture is finished, updated all at once from a pipeline
result (or marked failed / cancelled), so the history is never left half
updated. The work folder is stored relative to the .blend once the file is
saved (a moved project folder still opens); the other paths of a record are
relative to its work folder.

Item references into a CollectionProperty go stale when the collection
changes, so callers keep run names and look records up again with :func:`find`.
"""

import json
import os

import bpy

RUN_PREFIX = "run-"

# (result key, label, format) of the metrics shown in the panel and printed by the headless script.
METRICS = (
    ("keyframe_reprojection", "Keyframe Reproj.", "{:.4f}"),
    ("propagated_reprojection", "Propagated Reproj.", "{:.4f}"),
    ("splat_reprojection", "Splat Reproj.", "{:.4f}"),
    ("refit_psnr", "Refit PSNR", "{:.2f} dB"),
    ("refit_ssim", "Refit SSIM", "{:.3f}"),
    ("change_psnr", "Change PSNR", "{:.2f} dB"),
    ("change_ssim", "Change SSIM", "{:.3f}"),
)


# ---------------------------------------------------------------- look-ups


def runs(scene):
    """The scene's run records."""
    return scene.splatdiff.runs


def find(scene, name):
    """The record named ``name``, or None."""
    return runs(scene).get(name)


def active(scene):
    """The active record, or None when there are none."""
    props = scene.splatdiff
    return props.runs[props.active_run] if 0 <= props.active_run < len(props.runs) else None


def iteration(record, index):
    """The record's iteration ``index`` (1-based), or None."""
    return next((item for item in record.iterations if item.index == index), None)


def next_run_name(scene, output_dir):
    """``run-001``, ``run-002``, ...: the first name that is neither a record,
    a folder in ``output_dir`` nor a collection."""
    n = 1
    while True:
        name = f"{RUN_PREFIX}{n:03d}"
        if find(scene, name) is None and name not in bpy.data.collections and not os.path.lexists(
            os.path.join(output_dir, name)
        ):
            return name
        n += 1


# ------------------------------------------------------------------- paths


def blend_relative(path, blend_path=None):
    """``path`` as Blender's ``//`` relative path to the .blend at ``blend_path``
    (default: the open file); absolute when the file is not saved or the path
    is on another drive."""
    blend_path = blend_path if blend_path is not None else bpy.data.filepath
    if not blend_path:
        return path
    try:
        return bpy.path.relpath(path, start=os.path.dirname(blend_path))
    except ValueError:  # another drive (Windows)
        return path


def work_dir(record):
    """The record's work folder, absolute."""
    return os.path.normpath(bpy.path.abspath(record.work_dir))


def work_path(record, relative):
    """A path stored relative to the record's work folder, absolute; '' stays ''."""
    return os.path.normpath(os.path.join(work_dir(record), relative)) if relative else ""


def _relative_to(path, folder):
    return os.path.relpath(path, folder) if path else ""


def relocate_work_dirs(to_blend, from_blend):
    """Rewrites every scene's work folders, stored relative to the .blend at
    ``from_blend``, relative to the .blend at ``to_blend`` (around a save to
    another folder, and back after a copy is saved)."""
    start = os.path.dirname(from_blend) if from_blend else None
    for scene in bpy.data.scenes:
        for record in runs(scene):
            folder = os.path.normpath(bpy.path.abspath(record.work_dir, start=start))
            record.work_dir = blend_relative(folder, to_blend)


# ------------------------------------------------------------ bookkeeping


def create(scene, name, folder, object_name, settings_json):
    """Adds the record of a run whose capture has just finished; returns it."""
    props = scene.splatdiff
    record = props.runs.add()
    record.name = name
    record.work_dir = blend_relative(folder)
    record.object_name = object_name
    record.settings = settings_json
    record.state = 'RUNNING'
    props.active_run = len(props.runs) - 1
    return record


def start(record, settings_json):
    """Marks a continued or resumed run as running with ``settings_json``."""
    record.settings = settings_json
    record.state = 'RUNNING'
    record.error = ""


def stop(record, state, error=""):
    """Marks the run stopped with ``state``: 'FAILED' or 'CANCELLED', or 'FINISHED'
    after a capture-only run. A pause, if any, is kept for Resume."""
    record.state = state
    record.error = error


def apply_result(record, result):
    """Updates the record from a pipeline result, all at once: its finished
    iterations (collections of iterations already recorded are kept), the
    report, and the pause or the end."""
    folder = work_dir(record)
    for info in result.get("iterations", []):
        item = iteration(record, int(info["index"])) or record.iterations.add()
        item.index = int(info["index"])
        item.strength = float(info.get("strength", 0.0))
        item.metrics = json.dumps(info.get("metrics") or {}, sort_keys=True)
        item.splats = _relative_to(info.get("splats", ""), folder)
        item.keyframe_sheet = _relative_to(info.get("keyframe_sheet", ""), folder)
        item.contact_sheet = _relative_to(info.get("contact_sheet", ""), folder)
        item.turntable = _relative_to(info.get("turntable", ""), folder)
    report = result.get("report") or {}
    record.report_html = _relative_to(report.get("html", ""), folder)
    record.report_markdown = _relative_to(report.get("markdown", ""), folder)
    paused = result.get("paused")
    record.edit_folder = _relative_to(paused.get("folder", ""), folder) if paused else ""
    record.paused_message = paused.get("message", "") if paused else ""
    record.state = 'PAUSED' if paused else 'FINISHED'
    record.error = ""
    if record.iterations:
        record.active_iteration = len(record.iterations) - 1


def metrics(item):
    """The iteration's metrics as a dict ({} when unreadable)."""
    try:
        value = json.loads(item.metrics or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def format_metric(value, fmt):
    """A metric value for display; '-' when missing."""
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


# ------------------------------------------------------------- collections


def pending_imports(record):
    """Indices of finished iterations whose splats are not in the scene
    (never imported, or their collection was deleted)."""
    return [item.index for item in record.iterations if item.collection is None and item.splats]


def _placement(scene, obj):
    """Where a run's collection goes: the target object's collection when it is in ``scene``."""
    in_scene = set(scene.collection.children_recursive) | {scene.collection}
    return next((c for c in (obj.users_collection if obj else ()) if c in in_scene), scene.collection)


def import_iteration(context, record, index, obj):
    """Imports iteration ``index``'s splats into ``"<run> it<index>"`` inside the
    run's collection (next to ``obj``); earlier iterations are hidden so the
    newest shows. Returns the imported object."""
    from . import splat_io

    scene = context.scene
    item = iteration(record, index)
    path = work_path(record, item.splats)
    if record.collection is None:
        record.collection = bpy.data.collections.new(record.name)
        _placement(scene, obj).children.link(record.collection)
    name = f"{record.name} it{index}"
    collection = bpy.data.collections.new(name)
    record.collection.children.link(collection)  # first: the import selects the object in the view layer
    try:
        imported = splat_io.import_splats(context, path, name=name, collection=collection)
    except BaseException:
        bpy.data.collections.remove(collection)
        raise
    item.collection = collection
    for other in record.iterations:
        if other.collection is not None and other.index < index:
            set_visible(other.collection, False)
    return imported


def set_visible(collection, visible):
    """Shows or hides a collection in the viewport and in renders."""
    collection.hide_viewport = not visible
    collection.hide_render = not visible


def remove_collection(collection):
    """Removes a collection with its objects (and their data when nothing else uses it) and child collections."""
    if collection is None:
        return
    for child in list(collection.children):
        remove_collection(child)
    for obj in list(collection.objects):
        data = obj.data
        bpy.data.objects.remove(obj)
        if isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
    bpy.data.collections.remove(collection)


# ---------------------------------------------------------------- deleting


def delete_iterations(record, first):
    """Forgets iterations ``first`` and later and removes their collections
    (the caller has discarded their stages); the run can be continued from
    ``first``. A pause goes too: its stages are gone."""
    for item in [i for i in record.iterations if i.index >= first]:
        remove_collection(item.collection)
    for position in reversed(range(len(record.iterations))):
        if record.iterations[position].index >= first:
            record.iterations.remove(position)
    record.active_iteration = max(0, len(record.iterations) - 1)
    record.edit_folder = ""
    record.paused_message = ""
    record.state = 'FINISHED'
    record.error = ""


def delete_run(scene, name):
    """Removes the record ``name`` and its collections (files stay on disk)."""
    props = scene.splatdiff
    position = props.runs.find(name)
    record = props.runs[position]
    for item in record.iterations:
        remove_collection(item.collection)
    remove_collection(record.collection)
    props.runs.remove(position)
    props.active_run = max(0, min(props.active_run, len(props.runs) - 1))
