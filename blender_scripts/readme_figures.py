"""Makes the README's pictures from the demo's results. Run first::

    cargo xtask demo
    cargo run --release -p splatdiff-cli -- render --model out/demo/train/model.ply \
        --cameras out/demo/capture/transforms.json --out out/demo/renders --max-side 256
    .venv/bin/python blender_scripts/readme_figures.py [--demo out/demo] [--out tests/figures]

* ``demo_capture.png``: four turntable views of the demo capture, each as
  colour, depth, normals and mask (the files the capture stage wrote);
* ``demo_splats.png``: the same four views as captured (top) and as the
  trained splats render them with splatdiff's own rasterizer (bottom);
* ``demo_import.png``: a Cycles render of ``demo.blend``: the demo object
  and, beside it, the imported splat object, shown through the add-on's
  Geometry Nodes display (coloured points, not Gaussian blending).
"""

import argparse
import json
import math
import os
import sys

import bpy
import numpy as np
from mathutils import Vector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pixels(path):
    """RGBA float pixels, top row first, as Blender reads the file."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        w, h = image.size
        pixels = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(h, w, 4)[::-1]
    finally:
        bpy.data.images.remove(image)


def save_pixels(pixels, path):
    h, w, _ = pixels.shape
    image = bpy.data.images.new("figure", w, h, alpha=True)
    image.pixels.foreach_set(np.ascontiguousarray(pixels[::-1]).ravel())
    image.filepath_raw = path
    image.file_format = 'PNG'
    image.save()
    bpy.data.images.remove(image)


def capture_sheet(capture_dir, out_path, views=4):
    with open(os.path.join(capture_dir, "transforms.json")) as f:
        frames = json.load(f)["frames"]
    picked = [frames[i * len(frames) // views] for i in range(views)]
    rows = []
    for frame in picked:
        colour = load_pixels(os.path.join(capture_dir, frame["file_path"]))
        background = np.array([0.16, 0.16, 0.17, 1.0], np.float32)
        colour = colour * colour[..., 3:] + background * (1.0 - colour[..., 3:])
        depth = load_pixels(os.path.join(capture_dir, frame["depth_file_path"]))[..., 0]
        hit = depth > 0
        near, far = depth[hit].min(), depth[hit].max()
        shade = np.where(hit, 1.0 - 0.8 * (depth - near) / max(far - near, 1e-6), 0.0)
        depth_rgba = np.dstack([shade, shade, shade, np.ones_like(shade)])
        normal = load_pixels(os.path.join(capture_dir, frame["normal_file_path"]))
        normal_rgba = np.dstack([np.where(hit[..., None], 0.5 + 0.5 * normal[..., :3], 0.0), np.ones_like(shade)])
        mask = load_pixels(os.path.join(capture_dir, frame["mask_file_path"]))[..., 0]
        mask_rgba = np.dstack([mask, mask, mask, np.ones_like(mask)])
        rows.append(np.hstack([colour, depth_rgba, normal_rgba, mask_rgba]))
    sheet = np.vstack(rows)[::2, ::2]  # half size keeps the repository small
    # Display-referred PNGs were read as linear; write them back the same way.
    save_pixels(np.clip(sheet, 0.0, 1.0), out_path)


def splat_strip(capture_dir, renders_dir, out_path, views=4):
    """Captured colour (top row) against the splats' own renders (bottom row)."""
    with open(os.path.join(capture_dir, "transforms.json")) as f:
        frames = json.load(f)["frames"]
    picked = [frames[i * len(frames) // views] for i in range(views)]
    background = np.array([0.16, 0.16, 0.17, 1.0], np.float32)

    def over(pixels):
        return pixels * pixels[..., 3:] + background * (1.0 - pixels[..., 3:])

    top, bottom = [], []
    for frame in picked:
        name = os.path.splitext(os.path.basename(frame["file_path"]))[0]
        render = over(load_pixels(os.path.join(renders_dir, name + ".png")))
        h, w, _ = render.shape
        captured = over(load_pixels(os.path.join(capture_dir, frame["file_path"])))
        step = captured.shape[0] // h
        top.append(captured[::step, ::step][:h, :w])
        bottom.append(render)
    save_pixels(np.clip(np.vstack([np.hstack(top), np.hstack(bottom)]), 0.0, 1.0), out_path)


def render_import(blend, out_path, size=(720, 360)):
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    points = next(o for o in scene.objects if o.name.startswith("splatdiff ") and o.type == 'MESH')  # the splats
    source = next(o for o in scene.objects if o.type == 'MESH' and o is not points)
    points.location.x += 2.4
    bpy.context.view_layer.update()
    corners = [o.matrix_world @ Vector(c) for o in (source, points) for c in o.bound_box]
    centre = sum(corners, Vector()) / len(corners)
    cam_data = bpy.data.cameras.new("figure")
    cam_data.lens = 50
    camera = bpy.data.objects.new("figure", cam_data)
    scene.collection.objects.link(camera)
    camera.location = centre + Vector((0.0, -7.5, 1.2))
    direction = centre - camera.location
    camera.rotation_euler = direction.to_track_quat('-Z', 'Y').to_euler()
    scene.camera = camera
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 32
    scene.cycles.device = 'CPU'
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = 'PNG'
    scene.render.filepath = out_path
    bpy.ops.render.render(write_still=True)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", default=os.path.join(ROOT, "out", "demo"))
    p.add_argument("--out", default=os.path.join(ROOT, "tests", "figures"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    blend = os.path.join(args.demo, "demo.blend")
    if not os.path.isfile(blend):
        print(f"{blend}: not found; run `cargo xtask demo` first", file=sys.stderr)
        return 1
    capture_sheet(os.path.join(args.demo, "capture"), os.path.join(args.out, "demo_capture.png"))
    renders = os.path.join(args.demo, "renders")
    if not os.path.isdir(renders):
        print(f"{renders}: not found; render the trained splats first (see this script's docstring)", file=sys.stderr)
        return 1
    splat_strip(os.path.join(args.demo, "capture"), renders, os.path.join(args.out, "demo_splats.png"))
    render_import(blend, os.path.join(args.out, "demo_import.png"))
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
