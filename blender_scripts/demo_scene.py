"""Builds splatdiff's demo scene procedurally (no external files): a smooth,
subdivided Suzanne painted with rainbow vertex colours and a procedural
stripe texture, lit by a key and a rim light, on a neutral world.

Use it from Python (``demo_scene.build()``) or run it in Blender::

    blender --python blender_scripts/demo_scene.py
"""

import colorsys
import math

import bmesh
import bpy

DEMO_OBJECT = "Suzanne"


def _clear(scene):
    for obj in list(scene.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    for datablocks in (bpy.data.meshes, bpy.data.lights, bpy.data.cameras):
        for block in list(datablocks):
            if block.users == 0:
                datablocks.remove(block)


def _suzanne_mesh(name):
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    try:
        bmesh.ops.create_monkey(bm)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    # Rainbow around the head, lighter towards the top: recognisable from every side.
    colors = mesh.color_attributes.new("Color", 'FLOAT_COLOR', 'POINT')
    values = []
    for v in mesh.vertices:
        x, y, z = v.co
        hue = (math.atan2(y, x) / (2.0 * math.pi)) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.55 + 0.4 * max(0.0, min(1.0, (z + 0.8) / 1.6)))
        values.extend((r, g, b, 1.0))
    colors.data.foreach_set("color", values)
    mesh.color_attributes.active_color = colors
    mesh.shade_smooth()
    return mesh


def _material(name):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    links = mat.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    attr = nodes.new("ShaderNodeAttribute")
    attr.attribute_type = 'GEOMETRY'
    attr.attribute_name = "Color"
    attr.location = (-700, 300)
    wave = nodes.new("ShaderNodeTexWave")
    wave.inputs["Scale"].default_value = 3.0
    wave.inputs["Distortion"].default_value = 4.0
    wave.location = (-700, 0)
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = 'RGBA'
    mix.blend_type = 'MULTIPLY'
    mix.inputs["Factor"].default_value = 0.35
    mix.location = (-400, 200)
    links.new(attr.outputs["Color"], mix.inputs["A"])
    links.new(wave.outputs["Color"], mix.inputs["B"])
    links.new(mix.outputs["Result"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.45
    mat.diffuse_color = (0.8, 0.35, 0.2, 1.0)  # Workbench / viewport
    return mat


def _light(scene, name, kind, energy, location, rotation, color=(1.0, 1.0, 1.0)):
    light = bpy.data.lights.new(name, kind)
    light.energy = energy
    light.color = color
    obj = bpy.data.objects.new(name, light)
    obj.location = location
    obj.rotation_euler = rotation
    scene.collection.objects.link(obj)
    return obj


def build(scene=None, clear=True, name=DEMO_OBJECT):
    """Adds the demo object (and lights) to ``scene``; returns the object."""
    scene = scene or bpy.context.scene
    if clear:
        _clear(scene)
    mesh = _suzanne_mesh(name)
    mesh.materials.append(_material(name + " Paint"))
    obj = bpy.data.objects.new(name, mesh)
    obj.location = (0.0, 0.0, 1.0)
    obj.rotation_euler = (math.radians(-10.0), 0.0, 0.0)
    scene.collection.objects.link(obj)
    subsurf = obj.modifiers.new("Subdivision", 'SUBSURF')
    subsurf.levels = 1
    subsurf.render_levels = 2

    _light(scene, "Key Light", 'SUN', 3.0, (3.0, -3.0, 5.0), (math.radians(45), 0.0, math.radians(45)))
    _light(scene, "Rim Light", 'SUN', 1.5, (-3.0, 3.0, 4.0), (math.radians(-50), 0.0, math.radians(35)),
           color=(0.7, 0.8, 1.0))

    world = scene.world or bpy.data.worlds.new("World")
    scene.world = world
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (0.25, 0.25, 0.27, 1.0)
        background.inputs["Strength"].default_value = 1.0
    if hasattr(scene.display, "shading"):  # Workbench renders: show the vertex colours
        scene.display.shading.color_type = 'VERTEX'
    bpy.context.view_layer.update()
    return obj


if __name__ == "__main__":
    build()
