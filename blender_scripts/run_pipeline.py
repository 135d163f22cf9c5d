"""Runs splatdiff headless: turntable capture, geometry passes and the native
pipeline, the same code the add-on's Run button uses.

In Blender::

    blender --background scene.blend --python blender_scripts/run_pipeline.py -- \\
        --object NAME --out DIR [--frames 36 --elevations "15" --resolution 512 \\
        --engine CYCLES --samples 32 --keyframes 8 --prompt "..." --seed 0 \\
        --steps 3000 --iterations 2]

With the ``bpy`` module in plain Python::

    python blender_scripts/run_pipeline.py --blend scene.blend --object NAME --out DIR
    python blender_scripts/run_pipeline.py --demo --out DIR

Exits 0 on success, 1 with a one-line ``splatdiff: error: ...`` on bad input
or a failed stage, 2 on bad arguments.
"""

import argparse
import importlib.util
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ADDON_DIR = os.path.join(ROOT, "addon")


def _script_args(argv):
    if "--" in argv:  # blender ... --python run_pipeline.py -- ARGS
        return argv[argv.index("--") + 1:]
    return argv[1:]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("scene")
    src.add_argument("--blend", help="open this .blend file first")
    src.add_argument("--demo", action="store_true", help="build the built-in demo scene instead of opening a file")
    src.add_argument("--object", help="name of the mesh object to restyle (default with --demo: the demo object)")
    p.add_argument("--out", required=True, help="output (work) folder of the run")
    cap = p.add_argument_group("capture")
    cap.add_argument("--frames", type=int, default=36, help="views per elevation ring (36)")
    cap.add_argument("--elevations", default="15", help='elevation rings in degrees, e.g. "0, 30" (15)')
    cap.add_argument("--resolution", type=int, default=512, help="square image size in pixels (512)")
    cap.add_argument("--engine", default="CYCLES", help="CYCLES, EEVEE or WORKBENCH (CYCLES)")
    cap.add_argument("--samples", type=int, default=32, help="render samples (32)")
    cap.add_argument("--fov", type=float, default=40.0, help="camera field of view in degrees (40)")
    cap.add_argument("--no-isolate", action="store_true", help="keep other objects visible in the renders")
    cap.add_argument("--recapture", action="store_true", help="render again even if a matching capture exists")
    sty = p.add_argument_group("stylize")
    sty.add_argument("--keyframes", type=int, default=8)
    sty.add_argument("--prompt", default="")
    sty.add_argument("--negative-prompt", default="")
    sty.add_argument("--stylizer", default="diffusion", choices=("diffusion", "exemplar", "external", "command"))
    sty.add_argument("--style-image", default="")
    sty.add_argument("--command", default="")
    sty.add_argument("--model", default="")
    sty.add_argument("--strength", type=float, default=0.6)
    sty.add_argument("--seed", type=int, default=0)
    tr = p.add_argument_group("train")
    tr.add_argument("--steps", type=int, default=3000, help="training steps (3000)")
    tr.add_argument("--train-side", type=int, default=256, help="longer side of the training images (256)")
    tr.add_argument("--iterations", type=int, default=2, help="restyle/train rounds (2)")
    p.add_argument("--capture-only", action="store_true", help="stop after the capture stage")
    p.add_argument("--save", help="import the trained splats and save the scene to this .blend")
    args = p.parse_args(argv)
    if not args.object and not args.demo:
        p.error("give --object NAME (or --demo)")
    if args.blend and args.demo:
        p.error("--blend and --demo exclude each other")
    return args


def load_addon():
    """The enabled splatdiff extension, or the repository copy registered as
    package ``splatdiff``; returns ``(module, registered_here)``."""
    import bpy

    for name in bpy.context.preferences.addons.keys():
        if (name == "splatdiff" or name.endswith(".splatdiff")) and name in sys.modules:
            return sys.modules[name], False
    module = sys.modules.get("splatdiff")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "splatdiff", os.path.join(ADDON_DIR, "__init__.py"), submodule_search_locations=[ADDON_DIR]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["splatdiff"] = module
        spec.loader.exec_module(module)
    if hasattr(bpy.types.Scene, "splatdiff"):
        return module, False
    module.register()
    return module, True


def _fail(message):
    print(f"splatdiff: error: {message}", file=sys.stderr, flush=True)
    return 1


class Progress:
    """Prints a line when the stage changes, or at most once a second."""

    def __init__(self):
        self.last = None
        self.time = 0.0

    def __call__(self, status):
        now = time.monotonic()
        key = (status.stage, status.message)
        if key == self.last or (self.last and status.stage == self.last[0] and now - self.time < 1.0):
            return
        self.last, self.time = key, now
        print(f"[{status.stage:>10}] {100.0 * status.progress:5.1f}%  {status.message}", flush=True)


def main(argv):
    args = parse_args(_script_args(argv))
    import bpy

    if args.blend:
        if not os.path.isfile(args.blend):
            return _fail(f"{args.blend}: no such .blend file")
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
    if args.demo:
        sys.path.insert(0, HERE)
        import demo_scene

        demo = demo_scene.build()
        args.object = args.object or demo.name

    addon, registered = load_addon()
    try:
        return run(bpy, addon, args)
    finally:
        if registered:
            addon.unregister()


def run(bpy, addon, args):
    capture = addon.capture
    runmod = addon.run
    engine = addon.properties.ENGINE_ALIASES.get(args.engine.upper())
    if engine is None:
        return _fail(f"unknown render engine {args.engine!r} (use CYCLES, EEVEE or WORKBENCH)")
    try:
        elevations = capture.parse_elevations(args.elevations)
    except ValueError as exc:
        return _fail(f"--elevations: {exc}")
    settings = runmod.RunSettings(
        object_name=args.object,
        output_dir=os.path.abspath(args.out),
        capture=capture.CaptureOptions(
            frames=args.frames,
            elevations=elevations,
            resolution=args.resolution,
            engine=engine,
            samples=args.samples,
            fov=math.radians(args.fov),
            isolate=not args.no_isolate,
        ),
        keyframes=args.keyframes,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        stylizer=args.stylizer,
        style_image=os.path.abspath(args.style_image) if args.style_image else "",
        command=args.command,
        model=os.path.abspath(args.model) if args.model else "",
        strength=args.strength,
        seed=args.seed,
        train_steps=args.steps,
        train_side=args.train_side,
        iterations=args.iterations,
        reuse_capture=not args.recapture,
    )
    errors = [runmod.RunError, OSError, ValueError, RuntimeError]
    try:
        errors.extend(addon.native.error_types())
    except addon.native.NativeMissing:
        pass
    try:
        job = runmod.Run(bpy.context, settings, pipeline=not args.capture_only,
                         import_result=bool(args.save), log=lambda line: print(line, flush=True))
        result = job.run_blocking(on_status=Progress())
    except tuple(errors) as exc:
        return _fail(" ".join(str(exc).split()) or type(exc).__name__)

    print(f"capture: {result.capture_dir}" + (" (reused)" if result.capture_reused else ""))
    if not args.capture_only:
        for name, status in result.stages:
            print(f"stage {name}: {status}")
        if result.not_built:
            print("stages not built yet: " + ", ".join(result.not_built))
        else:
            print("stages not built yet: none")
        if result.splats_path:
            print(f"splats: {result.splats_path}")
    if args.save:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save))
        print(f"saved: {os.path.abspath(args.save)}")
    print("splatdiff: done", flush=True)
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    import bpy

    if not bpy.app.binary_path:
        # The bpy module can hang at interpreter exit when classes were
        # registered; nothing is left to clean up here.
        os._exit(code)
    sys.exit(code)
