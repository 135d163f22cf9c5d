"""Runs splatdiff headless: turntable capture, geometry passes and the native
pipeline (points; per iteration stylize, propagate, train, render; report),
the same code the add-on's Run, Continue and Resume buttons use.

In Blender::

    blender --background scene.blend --python blender_scripts/run_pipeline.py -- \\
        --object NAME --out DIR [--frames 36 --elevations "15" --resolution 512 \\
        --engine CYCLES --samples 32 --keyframes 8 --stylizer diffusion --model DIR \\
        --prompt "..." --seed 0 --steps 3000 --iterations 2 --save scene.blend]

With the ``bpy`` module in plain Python::

    python blender_scripts/run_pipeline.py --blend scene.blend --object NAME --out DIR
    python blender_scripts/run_pipeline.py --demo --out DIR    # exemplar stylizer, procedural style image
    # one more iteration of a saved run; resuming a paused one after external edits:
    python blender_scripts/run_pipeline.py --blend scene.blend --run run-001 --save scene.blend
    python blender_scripts/run_pipeline.py --blend scene.blend --run run-001 --resume --save scene.blend

Every new run gets its own folder ``DIR/run-NNN``. ``--save`` imports the
splats of every finished iteration and saves the scene, with the run's
record, so that ``--run`` can continue it later.

Exit codes: 0 the run finished; 1 bad input or a failed stage (one line
``splatdiff: error: ...`` on stderr); 2 bad arguments; 3 the run paused for
keyframes edited outside Blender (the edit folder is printed; edit them and
rerun with ``--run NAME --resume``).
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

EXIT_OK, EXIT_ERROR, EXIT_PAUSED = 0, 1, 3


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
    p.add_argument("--out", help="output folder: each run gets its own folder in it (run-001, ...)")
    p.add_argument("--run", metavar="NAME",
                   help="continue the run NAME recorded in the --blend file, with its recorded settings "
                        "(only --iterations, --resume and --save apply)")
    p.add_argument("--resume", action="store_true", help="with --run: resume a paused run after external edits")
    cap = p.add_argument_group("capture")
    cap.add_argument("--frames", type=int, default=36, help="views per elevation ring (36)")
    cap.add_argument("--elevations", default="15", help='elevation rings in degrees, e.g. "0, 30" (15)')
    cap.add_argument("--resolution", type=int, default=512, help="square image size in pixels (512)")
    cap.add_argument("--engine", default="CYCLES", help="CYCLES, EEVEE or WORKBENCH (CYCLES)")
    cap.add_argument("--samples", type=int, default=32, help="render samples (32)")
    cap.add_argument("--fov", type=float, default=40.0, help="camera field of view in degrees (40)")
    cap.add_argument("--no-isolate", action="store_true", help="keep other objects visible in the renders")
    cap.add_argument("--recapture", action="store_true",
                     help="render again even if another run in --out has a matching capture")
    sty = p.add_argument_group("stylize")
    sty.add_argument("--keyframes", type=int, default=8, help="keyframes, evenly spaced (8)")
    sty.add_argument("--keyframe-frames", default="", help='pick the keyframes: 0-based frames, e.g. "0, 9, 18"')
    sty.add_argument("--prompt", default="")
    sty.add_argument("--negative-prompt", default="")
    sty.add_argument("--stylizer", choices=("diffusion", "exemplar", "external", "command"),
                     help="default: diffusion; with --demo and no --model: exemplar (no downloads)")
    sty.add_argument("--style-image", default="",
                     help="exemplar: the style image (with --demo: default the demo's procedural one)")
    sty.add_argument("--command", default="",
                     help="command: restyles {in} into {out} (also {prompt} {seed} {strength} {frame})")
    sty.add_argument("--command-timeout", type=int, default=600, help="command: seconds per keyframe (600)")
    sty.add_argument("--model", default="", help="diffusion: model file or diffusers folder")
    sty.add_argument("--steps-diffusion", type=int, default=20, help="diffusion: denoising steps (20)")
    sty.add_argument("--guidance", type=float, default=7.5, help="diffusion: guidance scale (7.5)")
    sty.add_argument("--scheduler", default="dpmpp-2m", choices=("ddim", "euler-a", "dpmpp-2m", "lcm"))
    sty.add_argument("--consistency", default="cross-frame", choices=("none", "grid", "cross-frame"))
    sty.add_argument("--controlnet-depth", default="", metavar="DIR", help="diffusion: a depth ControlNet folder")
    sty.add_argument("--strength", type=float, default=0.6)
    sty.add_argument("--strength-falloff", type=float, default=0.5,
                     help="iteration i restyles at strength * falloff^(i-1) (0.5)")
    sty.add_argument("--seed", type=int, default=0)
    tr = p.add_argument_group("train")
    tr.add_argument("--steps", type=int, default=3000, help="training steps (3000)")
    tr.add_argument("--train-side", type=int, default=256, help="longer side of the training images (256)")
    tr.add_argument("--iterations", type=int,
                    help="restyle/train rounds in all (new run: 2; --run: one more than it has)")
    p.add_argument("--capture-only", action="store_true", help="stop after the capture stage")
    p.add_argument("--save", help="import the splats of every finished iteration and save the scene to this .blend")
    args = p.parse_args(argv)
    args.stylizer = args.stylizer or ("exemplar" if args.demo and not args.model else "diffusion")
    if args.blend and args.demo:
        p.error("--blend and --demo exclude each other")
    if args.run:
        if not args.blend:
            p.error("--run needs the --blend file the run is recorded in")
    elif args.resume:
        p.error("--resume needs --run NAME")
    else:
        if not args.object and not args.demo:
            p.error("give --object NAME (or --demo)")
        if not args.out:
            p.error("give --out DIR")
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
    return EXIT_ERROR


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
        if args.stylizer == "exemplar" and not args.style_image:
            try:
                args.style_image = demo_scene.write_style_image(os.path.abspath(args.out))
            except (OSError, RuntimeError) as exc:
                return _fail(f"{args.out}: cannot write the demo style image ({exc})")

    addon, registered = load_addon()
    try:
        return run(bpy, addon, args)
    finally:
        if registered:
            addon.unregister()


def settings_from_args(addon, args):
    """The RunSettings of a new run; raises ValueError for bad values."""
    capture = addon.capture
    engine = addon.properties.ENGINE_ALIASES.get(args.engine.upper())
    if engine is None:
        raise ValueError(f"unknown render engine {args.engine!r} (use CYCLES, EEVEE or WORKBENCH)")
    try:
        elevations = capture.parse_elevations(args.elevations)
    except ValueError as exc:
        raise ValueError(f"--elevations: {exc}") from None

    def path(value):
        return os.path.abspath(value) if value else ""

    return addon.run.RunSettings(
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
        keyframe_frames=addon.run.parse_keyframe_frames(args.keyframe_frames),
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        stylizer=args.stylizer,
        style_image=path(args.style_image),
        command=args.command,
        command_timeout=args.command_timeout,
        model=path(args.model),
        diffusion_steps=args.steps_diffusion,
        guidance_scale=args.guidance,
        scheduler=args.scheduler,
        consistency=args.consistency,
        controlnet_depth=path(args.controlnet_depth),
        strength=args.strength,
        strength_falloff=args.strength_falloff,
        seed=args.seed,
        train_steps=args.steps,
        train_side=args.train_side,
        iterations=args.iterations or 2,
        reuse_capture=not args.recapture,
    )


def make_run(bpy, addon, args):
    """The new, continued or resumed Run the arguments ask for."""
    options = dict(pipeline=not args.capture_only, import_result=bool(args.save),
                   log=lambda line: print(line, flush=True))
    if args.run:
        return addon.run.Run.proceed(bpy.context, args.run, iterations=args.iterations, resume=args.resume,
                                     **options)
    return addon.run.Run.new(bpy.context, settings_from_args(addon, args), **options)


def print_result(addon, result):
    """Stage statuses, per-iteration metrics, the report and a pause."""
    for name, status in result.stages:
        print(f"stage {name}: {status}")
    for info in result.iterations:
        metrics = info.get("metrics") or {}
        values = "  ".join(f"{key} {addon.history.format_metric(metrics.get(key), fmt)}"
                           for key, _label, fmt in addon.history.METRICS)
        print(f"iteration {info.get('index')}: strength {info.get('strength', 0.0):.3f}  {values}")
        print(f"iteration {info.get('index')} splats: {info.get('splats', '')}")
    if result.report:
        print(f"report: {result.report}")
    if result.splats_path:
        print(f"splats: {result.splats_path}")
    if result.paused:
        print(f"paused: {result.paused.get('message', '')}")
        print(f"edit folder: {result.paused.get('folder', '')}")
        print(f"then resume: --blend FILE.blend --run {result.name} --resume --save FILE.blend")


def save(bpy, path):
    """Saves the scene (with the run's record) to ``path``."""
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(path))
    print(f"saved: {os.path.abspath(path)}", flush=True)


def run(bpy, addon, args):
    errors = [addon.run.RunError, OSError, ValueError, RuntimeError]
    try:
        errors.extend(addon.native.error_types())
    except addon.native.NativeMissing:
        pass
    job = None
    try:
        job = make_run(bpy, addon, args)
        print(f"run: {job.name} in {job.work_dir}", flush=True)
        result = job.run_blocking(on_status=Progress())
    except tuple(errors) as exc:
        if args.save and job is not None and job.record() is not None:
            save(bpy, args.save)  # the failed run's record, so that --run can retry it
        return _fail(" ".join(str(exc).split()) or type(exc).__name__)

    print(f"capture: {result.capture_dir}" + (" (reused)" if result.capture_reused else ""))
    if not args.capture_only:
        print_result(addon, result)
    if args.save:
        save(bpy, args.save)
    if result.paused:
        print("splatdiff: paused", flush=True)
        return EXIT_PAUSED
    print("splatdiff: done", flush=True)
    return EXIT_OK


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
