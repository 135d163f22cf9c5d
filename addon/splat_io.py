"""Gaussian splats in Blender: import a 3DGS ``.ply`` as a point mesh, export it back.

A splat object is a mesh with one vertex per splat (no edges or faces) whose
vertex positions are the splat centres, and one point-domain FLOAT attribute
per PLY vertex property, named exactly as in the file (``f_dc_0``..,
``f_rest_0``.., ``opacity``, ``scale_0``.., ``rot_0``.., extras). Two more
attributes drive the display only and are never exported: ``display_color``
(FLOAT_COLOR, linear RGBA) and ``display_radius`` (FLOAT).

The display is a Geometry Nodes modifier (node group ``SplatDiff Splats``)
that turns the vertices into points of radius ``display_radius * Radius
Scale`` with the material ``SplatDiff Splat``, which emits ``display_color``
(the splat's baked DC radiance) and is transparent by ``1 - alpha``.

Everything moves through numpy buffers and ``foreach_set``/``foreach_get``:
no per-splat Python loop.

Export writes **object-space** centres (the mesh's vertex positions as they
are), ignoring the object's transform. A splat is a centre *and* an oriented,
scaled Gaussian with view-dependent colour: moving the centres by the object
matrix without also rotating ``rot_*``, scaling ``scale_*`` and rotating the
spherical-harmonic coefficients ``f_rest_*`` would write an inconsistent
splat cloud, and rotating SH bands 1..3 is out of scope here. Writing the
data unchanged keeps import -> export a bit-exact round trip; to place splats
elsewhere, transform them in the training scene instead.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import native

NODE_GROUP_NAME = "SplatDiff Splats"
MATERIAL_NAME = "SplatDiff Splat"
MODIFIER_NAME = "SplatDiff Display"
RADIUS_SCALE_SOCKET = "Radius Scale"
DISPLAY_COLOR = "display_color"
DISPLAY_RADIUS = "display_radius"

PROP_SH_DEGREE = "splatdiff_sh_degree"
PROP_SOURCE = "splatdiff_source"
# Bumped when the node group or material layout changes, so that files saved
# with an older layout get a fresh node group / material instead of a stale one.
_DISPLAY_VERSION = 1
_VERSION_KEY = "splatdiff_display_version"

REQUIRED_PROPERTIES = (
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)
_SH_REST_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}
_DISPLAY_ATTRIBUTES = frozenset((DISPLAY_COLOR, DISPLAY_RADIUS))
# Point-domain attributes with a meaning of their own in Blender: never PLY properties.
_BLENDER_POINT_ATTRIBUTES = frozenset(("position", "bevel_weight_vert", "crease_vert"))


class NotASplatObject(ValueError):
    """The object cannot be exported as splats (not a mesh, or attributes missing)."""


# ------------------------------------------------------------------- import


def import_splats(context, path, *, name=None, collection=None, radius_scale=1.0):
    """Imports the 3DGS PLY at ``path`` as a splat mesh object and returns it.

    The file is read completely before any data-block is created, so a file
    that cannot be read (:class:`SplatdiffError` from the native reader,
    whose message names the file) leaves the scene unchanged.

    ``collection`` defaults to the active collection; the new object becomes
    the only selected object and the active one. ``radius_scale`` sets the
    display modifier's "Radius Scale" (display only).
    """
    path = os.fspath(path)
    data = native.load().read_ply(path)

    count = int(data["count"])
    sh_degree = int(data["sh_degree"])
    # The columns are consumed one by one while the mesh is filled, each
    # buffer freed as soon as it is copied: peak memory stays near one copy
    # of the splats instead of two (the native result + the mesh).
    columns = list(data.pop("columns"))
    positions = np.frombuffer(data.pop("positions"), np.float32)
    display_color = np.frombuffer(data.pop("display_color"), np.float32)
    display_radius = np.frombuffer(data.pop("display_radius"), np.float32)
    del data
    _check_lengths(path, count, positions, columns, display_color, display_radius)

    if name is None:
        name = os.path.splitext(os.path.basename(path))[0] or "Splats"
    if collection is None:
        collection = _active_collection(context)

    mesh = bpy.data.meshes.new(name)
    obj = None
    try:
        _fill_mesh(mesh, count, positions, columns, display_color, display_radius)
        obj = bpy.data.objects.new(name, mesh)
        obj[PROP_SH_DEGREE] = sh_degree
        obj[PROP_SOURCE] = path
        add_display_modifier(obj, radius_scale)
        collection.objects.link(obj)
    except BaseException:
        if obj is not None:
            bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        raise

    _select_only(context, obj)
    return obj


def _check_lengths(path, count, positions, columns, display_color, display_radius):
    sizes = {"positions": (positions.size, 3), "display_color": (display_color.size, 4),
             "display_radius": (display_radius.size, 1)}
    sizes.update((f"column {n!r}", (memoryview(buf).nbytes // 4, 1)) for n, buf in columns)
    for what, (size, width) in sizes.items():
        if size != count * width:
            # A broken native module, not bad input: say so precisely.
            raise RuntimeError(f"{path}: native read_ply returned {size} values for {what}, expected {count * width}")


def _fill_mesh(mesh, count, positions, columns, display_color, display_radius):
    mesh.vertices.add(count)
    position = mesh.attributes.get("position")
    if position is not None and position.data_type == 'FLOAT_VECTOR' and position.domain == 'POINT':
        # Bulk copy into the position attribute (the "co" path of MeshVertex
        # is a per-item RNA loop: ~0.1 s per million vertices vs ~1 ms).
        position.data.foreach_set("vector", positions)
    else:  # pragma: no cover - meshes without a generic position attribute (pre-3.5)
        mesh.vertices.foreach_set("co", positions)

    attributes = mesh.attributes
    # Each attribute is filled right after it is created: adding an attribute
    # reallocates the layer array and invalidates earlier Python references.
    # ``columns`` is emptied on the way so that each buffer is freed once copied.
    columns.reverse()
    while columns:
        col_name, buf = columns.pop()
        if col_name not in _DISPLAY_ATTRIBUTES:  # a clash with our display data: display wins
            _new_attribute(attributes, col_name, 'FLOAT').data.foreach_set("value", np.frombuffer(buf, np.float32))
        del buf
    _new_attribute(attributes, DISPLAY_COLOR, 'FLOAT_COLOR').data.foreach_set("color", display_color)
    _new_attribute(attributes, DISPLAY_RADIUS, 'FLOAT').data.foreach_set("value", display_radius)
    mesh.update()


def _new_attribute(attributes, attr_name, data_type):
    try:
        attribute = attributes.new(attr_name, data_type, 'POINT')
    except RuntimeError as exc:  # e.g. a name Blender reserves with another type
        raise ValueError(f"cannot store PLY property {attr_name!r} as a point attribute: {exc}") from exc
    if attribute.name != attr_name:
        # Blender renamed it (name too long or already taken): the property would be lost on export.
        attributes.remove(attribute)
        raise ValueError(f"cannot store PLY property {attr_name!r}: Blender would rename it to {attribute.name!r}")
    return attribute


def _active_collection(context):
    collection = getattr(context, "collection", None)
    if collection is None:
        layer_collection = context.view_layer.active_layer_collection
        collection = layer_collection.collection if layer_collection else context.scene.collection
    return collection


def _select_only(context, obj):
    view_layer = context.view_layer
    for other in list(view_layer.objects.selected):
        if other is not None:  # a stale entry after objects were removed, until the layer resyncs
            other.select_set(False)
    try:
        obj.select_set(True, view_layer=view_layer)
        view_layer.objects.active = obj
    except (RuntimeError, ValueError):
        pass  # the collection is not in this view layer (or is excluded): nothing to select


# ------------------------------------------------------------------- display


def add_display_modifier(obj, radius_scale=1.0):
    """Adds (or reuses) the Geometry Nodes display modifier on a splat object."""
    group = ensure_node_group()
    modifier = next(
        (m for m in obj.modifiers if m.type == 'NODES' and m.node_group == group), None
    )
    if modifier is None:
        modifier = obj.modifiers.new(MODIFIER_NAME, 'NODES')
        modifier.node_group = group
    identifier = _interface_socket(group, RADIUS_SCALE_SOCKET).identifier
    modifier[identifier] = float(radius_scale)
    return modifier


def ensure_node_group():
    """The node group ``SplatDiff Splats``, built on first use and reused afterwards."""
    group = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if (
        group is not None
        and group.bl_idname == 'GeometryNodeTree'
        and group.get(_VERSION_KEY) == _DISPLAY_VERSION
        and not getattr(group, "library", None)
    ):
        return group
    return _build_node_group(ensure_material())


def _build_node_group(material):
    group = bpy.data.node_groups.new(NODE_GROUP_NAME, 'GeometryNodeTree')
    group[_VERSION_KEY] = _DISPLAY_VERSION
    if hasattr(group, "is_modifier"):  # 4.0+: offered in the modifier's group list
        group.is_modifier = True
    interface = group.interface
    interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    scale = interface.new_socket(RADIUS_SCALE_SOCKET, in_out='INPUT', socket_type='NodeSocketFloat')
    scale.default_value = 1.0
    scale.min_value = 0.0
    scale.max_value = 1000.0
    scale.description = "Multiplies every splat's display radius"
    interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')

    nodes, links = group.nodes, group.links
    group_in = nodes.new('NodeGroupInput')
    group_in.location = (-700, 0)
    group_out = nodes.new('NodeGroupOutput')
    group_out.location = (400, 0)

    radius = nodes.new('GeometryNodeInputNamedAttribute')
    radius.label = "Display Radius"
    radius.data_type = 'FLOAT'
    radius.inputs["Name"].default_value = DISPLAY_RADIUS
    radius.location = (-700, -200)

    multiply = nodes.new('ShaderNodeMath')
    multiply.operation = 'MULTIPLY'
    multiply.location = (-450, -150)

    to_points = nodes.new('GeometryNodeMeshToPoints')
    to_points.mode = 'VERTICES'
    to_points.location = (-200, 0)

    set_material = nodes.new('GeometryNodeSetMaterial')
    set_material.inputs["Material"].default_value = material
    set_material.location = (100, 0)

    links.new(_output(radius, "Attribute"), multiply.inputs[0])
    links.new(group_in.outputs[RADIUS_SCALE_SOCKET], multiply.inputs[1])
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(multiply.outputs["Value"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs["Geometry"])
    return group


def _interface_socket(group, socket_name, in_out='INPUT'):
    for item in group.interface.items_tree:
        if item.item_type == 'SOCKET' and item.in_out == in_out and item.name == socket_name:
            return item
    raise KeyError(f"node group {group.name!r} has no {in_out.lower()} socket {socket_name!r}")


def _output(node, socket_name):
    """The output named ``socket_name`` that is enabled (some nodes keep one per data type)."""
    for socket in node.outputs:
        if socket.name == socket_name and socket.enabled:
            return socket
    return node.outputs[socket_name]


def ensure_material():
    """The material ``SplatDiff Splat``, built on first use and reused afterwards."""
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None and material.get(_VERSION_KEY) == _DISPLAY_VERSION and not material.library:
        return material
    return _build_material()


def _build_material():
    material = bpy.data.materials.new(MATERIAL_NAME)
    material[_VERSION_KEY] = _DISPLAY_VERSION
    if hasattr(material, "use_nodes") and not material.use_nodes:
        material.use_nodes = True  # always on (and deprecated) in 5.0
    # Eevee: stochastic (dithered) transparency is order-independent, which
    # suits thousands of overlapping points in one object (blended mode sorts
    # per object only). 4.2+ (Eevee Next): surface_render_method; before:
    # blend_method (removed in 5.x).
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = 'DITHERED'
    elif hasattr(material, "blend_method"):  # pragma: no cover - before 4.2
        material.blend_method = 'HASHED'
    material.diffuse_color = (0.8, 0.8, 0.8, 1.0)

    tree = material.node_tree
    nodes, links = tree.nodes, tree.links
    nodes.clear()

    attribute = nodes.new('ShaderNodeAttribute')
    attribute.attribute_type = 'GEOMETRY'
    attribute.attribute_name = DISPLAY_COLOR
    attribute.location = (-600, 0)

    emission = nodes.new('ShaderNodeEmission')
    emission.inputs["Strength"].default_value = 1.0
    emission.location = (-300, -100)

    transparent = nodes.new('ShaderNodeBsdfTransparent')
    transparent.location = (-300, 100)

    mix = nodes.new('ShaderNodeMixShader')
    mix.location = (0, 0)

    output = nodes.new('ShaderNodeOutputMaterial')
    output.location = (250, 0)

    links.new(attribute.outputs["Color"], emission.inputs["Color"])
    links.new(attribute.outputs["Alpha"], mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])  # Fac = 0: fully transparent
    links.new(emission.outputs["Emission"], mix.inputs[2])  # Fac = 1: the splat's colour
    links.new(mix.outputs["Shader"], output.inputs["Surface"])
    return material


# ------------------------------------------------------------------- export


def splat_columns(obj):
    """``(count, positions, columns)`` of a splat mesh object, ready for the native writers.

    ``positions`` are object-space centres (see the module docstring);
    ``columns`` are ``(name, float32 array)`` for every FLOAT point attribute
    that is a PLY property, in the mesh's attribute order. Raises
    :class:`NotASplatObject` if ``obj`` is not a mesh or lacks required
    properties.
    """
    if obj is None or obj.type != 'MESH':
        kind = "nothing" if obj is None else f"a {obj.type.lower()} object"
        raise NotASplatObject(f"cannot export {getattr(obj, 'name', 'splats')!r} as splats: it is {kind}, not a splat mesh")
    if obj.mode == 'EDIT':
        obj.update_from_editmode()
    mesh = obj.data
    count = len(mesh.vertices)

    columns = []
    present = set()
    for attribute in mesh.attributes:
        attr_name = attribute.name
        if (
            attribute.domain != 'POINT'
            or attribute.data_type != 'FLOAT'
            or attr_name.startswith(".")
            or attr_name in _DISPLAY_ATTRIBUTES
            or attr_name in _BLENDER_POINT_ATTRIBUTES
            or getattr(attribute, "is_internal", False)
        ):
            continue
        present.add(attr_name)
        columns.append(attr_name)

    missing = [p for p in REQUIRED_PROPERTIES if p not in present]
    if missing:
        raise NotASplatObject(
            f"cannot export {obj.name!r} as splats: the mesh lacks the FLOAT point attribute"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        )
    rest = sorted((n for n in present if n.startswith("f_rest_")))
    expected_rest = [f"f_rest_{i}" for i in range(len(rest))]
    if len(rest) not in _SH_REST_COUNTS or sorted(expected_rest) != rest:
        raise NotASplatObject(
            f"cannot export {obj.name!r} as splats: it has {len(rest)} f_rest_* attributes "
            f"({', '.join(sorted(rest, key=_rest_index)[:4])}{'..' if len(rest) > 4 else ''}); "
            "a splat needs f_rest_0.. numbered without gaps, 0, 9, 24 or 45 of them (SH degree 0..3)"
        )

    positions = np.empty(count * 3, np.float32)
    position = mesh.attributes.get("position")
    if position is not None and position.data_type == 'FLOAT_VECTOR' and position.domain == 'POINT':
        position.data.foreach_get("vector", positions)
    else:  # pragma: no cover
        mesh.vertices.foreach_get("co", positions)
    arrays = []
    for attr_name in columns:
        values = np.empty(count, np.float32)
        # Looked up by name each time: no reference is held across calls.
        mesh.attributes[attr_name].data.foreach_get("value", values)
        arrays.append((attr_name, values))
    return count, positions, arrays


def _rest_index(attr_name):
    try:
        return int(attr_name[len("f_rest_"):])
    except ValueError:
        return -1


def export_splats(obj, path):
    """Writes the splat mesh object ``obj`` to ``path``: ``.splat`` -> the web
    ``.splat`` format, anything else -> a standard 3DGS PLY. Returns the
    number of splats written. Centres are written in object space (see the
    module docstring)."""
    path = os.fspath(path)
    count, positions, columns = splat_columns(obj)
    module = native.load()
    if path.lower().endswith(".splat"):
        module.write_splat(path, count, positions, columns)
    else:
        module.write_ply(path, count, positions, columns)
    return count
