"""Builds splatdiff's demo scene procedurally (no external files): a smooth,
subdivided Suzanne painted with rainbow vertex colours and a procedural
stripe texture, lit by a key and a rim light, on a neutral world; and a
procedural style image for the exemplar stylizer.

Use it from Python (``demo_scene.build()``, ``demo_scene.write_style_image(folder)``)
or run it in Blender::

    blender --python blender_scripts/demo_scene.py
"""

import colorsys
import math
import os

import bmesh
import bpy
import numpy as np

DEMO_OBJECT = "Suzanne"
STYLE_IMAGE_NAME = "demo_style.png"


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


def style_pixels(size=256):
    """A colourful painterly pattern, (size, size, 4) RGBA in 0..1 (row 0 at the
    bottom, as Blender stores images): swirling hue bands over soft brush strokes."""
    y, x = np.mgrid[0:size, 0:size] / float(size) - 0.5
    radius = np.hypot(x, y)
    angle = np.arctan2(y, x)
    hue = (angle / (2.0 * np.pi) + 2.5 * radius + 0.15 * np.sin(14.0 * x) * np.cos(11.0 * y)) % 1.0
    strokes = 0.5 + 0.5 * np.sin(40.0 * (x * np.cos(0.7) + y * np.sin(0.7)) + 6.0 * np.sin(9.0 * y))
    value = 0.55 + 0.4 * strokes
    saturation = 0.65 + 0.3 * np.cos(6.0 * radius)
    rgb = _hsv_to_rgb(hue, saturation, value)
    return np.concatenate([rgb, np.ones((size, size, 1))], axis=2).astype(np.float32)


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB (arrays in 0..1); returns (..., 3)."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    channels = [np.choose(i, [c[k] for c in choices]) for k in range(3)]
    return np.stack(channels, axis=-1)


def write_style_image(folder, size=256):
    """Writes the demo style image (a PNG, no downloads) into ``folder``; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, STYLE_IMAGE_NAME)
    image = bpy.data.images.new("splatdiff demo style", size, size, alpha=True)
    try:
        image.pixels.foreach_set(style_pixels(size).ravel())
        image.filepath_raw = path
        image.file_format = 'PNG'
        image.save()
    finally:
        bpy.data.images.remove(image)
    return path


if __name__ == "__main__":
    build()
