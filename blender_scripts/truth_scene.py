"""Builds the ground-truth scene of the propagation benchmark: the scanned
Lee Perry-Smith head from ``../shared/data/lps_head`` with one of two looks.

* ``capture``: the scan's own colour texture (what the turntable captures);
* ``restyled``: a different texture on the same UVs, made here from the scan's
  one (posterised into a warm/cool palette, with hatching in texture space),
  standing in for a restyled look whose every view is known exactly.

Both render with Workbench in texture colour mode with world-space studio
lighting and no specular, so shading is fixed on the surface (as with real
lights) and renders are noise-free and fast. Rendering the same turntable
with both looks gives a propagation benchmark with exact ground truth
(``tests/benchmarks/bench_propagation.py`` runs it).

    .venv/bin/python blender_scripts/truth_scene.py --look capture --save out/truth/capture.blend
"""

import argparse
import math
import os
import sys

import bpy
import numpy as np

HEAD_OBJECT = "LeePerrySmith"


def restyled_texture(src, path):
    """Writes the 'restyled' texture made from the scan's colour texture."""
    w, h = src.size
    px = np.array(src.pixels[:], dtype=np.float32).reshape(h, w, 4)
    lum = 0.2126 * px[..., 0] + 0.7152 * px[..., 1] + 0.0722 * px[..., 2]
    # Posterise into five bands of a warm/cool palette.
    palette = np.array([[0.10, 0.12, 0.35], [0.20, 0.45, 0.60], [0.85, 0.55, 0.25],
                        [0.95, 0.80, 0.45], [1.00, 0.95, 0.85]], dtype=np.float32)
    lo, hi = np.percentile(lum, 5), np.percentile(lum, 95)
    t = np.clip((lum - lo) / max(hi - lo, 1e-6), 0.0, 0.999) * (len(palette) - 1)
    i0 = np.floor(t).astype(int)
    f = (t - i0)[..., None]
    f = np.clip((f - 0.35) / 0.3, 0.0, 1.0)  # soft steps between bands
    rgb = palette[i0] * (1 - f) + palette[np.minimum(i0 + 1, len(palette) - 1)] * f
    # Hatching in texture space: detail the propagation must carry.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hatch = 0.5 + 0.5 * np.sin((xx + yy) * (2 * math.pi / 24.0))
    rgb *= (0.8 + 0.2 * hatch)[..., None]
    out = bpy.data.images.new("restyled", w, h, alpha=True)
    out.pixels[:] = np.concatenate([rgb, np.ones((h, w, 1), np.float32)], axis=2).ravel()
    out.filepath_raw = path
    out.file_format = 'PNG'
    out.save()
    return out


def build(look, data_dir, work_dir):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    glb = os.path.join(data_dir, "LeePerrySmith.glb")
    if not os.path.isfile(glb):
        raise SystemExit(f"{glb}: not found (the benchmark needs ../shared/data/lps_head)")
    bpy.ops.import_scene.gltf(filepath=glb)
    meshes = [o for o in bpy.context.scene.objects if o.type == 'MESH']
    obj = meshes[0]
    obj.name = HEAD_OBJECT
    colour = bpy.data.images.load(os.path.join(data_dir, "textures", "color.jpg"))
    image = colour if look == "capture" else restyled_texture(colour, os.path.join(work_dir, "restyled_texture.png"))
    mat = bpy.data.materials.new(f"Head {look}")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    links.new(tex.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    nodes.active = tex
    obj.data.materials.clear()
    obj.data.materials.append(mat)
    scene = bpy.context.scene
    scene.render.engine = 'BLENDER_WORKBENCH'
    shading = scene.display.shading
    shading.light = 'STUDIO'
    shading.color_type = 'TEXTURE'
    shading.use_world_space_lighting = True
    shading.show_specular_highlight = False
    scene.view_settings.view_transform = 'Standard'
    return obj


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--look", choices=("capture", "restyled"), required=True)
    p.add_argument("--save", required=True, help="where to save the .blend")
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "lps_head"))
    args = p.parse_args(argv)
    work = os.path.dirname(os.path.abspath(args.save))
    os.makedirs(work, exist_ok=True)
    build(args.look, os.path.abspath(args.data), work)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save))
    print(f"saved {args.save}")


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:])
