"""Type stub and reference of ``splatdiff_native``, the Rust module the
Blender add-on imports (built from ``rust/splatdiff-python`` with maturin).

Conventions used throughout:

* Arrays cross the boundary as Python buffers. Functions that *take* arrays
  accept any object exporting the buffer protocol with the item format named
  (``numpy.ndarray`` of that dtype, ``array.array``, ``memoryview.cast``).
  Functions that *return* arrays return ``bytes`` of little-endian values;
  wrap them with ``numpy.frombuffer(b, numpy.float32)`` (no copy) and pass
  them to Blender's ``foreach_set``.
* Every error caused by input (a bad file, a wrong length, a folder that
  cannot be written) raises :class:`SplatdiffError` whose message starts with
  the path of the file concerned.
* Long work runs in a :class:`Job` on a Rust thread with the GIL released;
  the caller polls it (from a modal timer operator in Blender).
"""

from typing import Any, Sequence

__version__: str

class SplatdiffError(Exception):
    """Bad input or a failed stage; the message names the file and the problem."""

class Cancelled(SplatdiffError):
    """Raised by :meth:`Job.result` when the job was cancelled."""

# ----------------------------------------------------------------- splat files

def read_ply(path: str) -> dict[str, Any]:
    """Reads a 3D Gaussian Splatting PLY (any property order, any numeric
    type, extra properties kept).

    Returns a dict:

    * ``"count"``: int, number of splats N;
    * ``"sh_degree"``: int, 0..3;
    * ``"positions"``: bytes, N*3 float32, interleaved x, y, z (for
      ``mesh.vertices.foreach_set("co", ...)``);
    * ``"columns"``: list of ``(name, bytes)``: every vertex property of the
      file except x, y, z, each N float32, in file order (``f_dc_0``,
      ``f_rest_0``.., ``opacity``, ``scale_0``.., ``rot_0``.., extras; ``nx``,
      ``ny``, ``nz`` are included when present);
    * ``"display_color"``: bytes, N*4 float32, linear RGBA for viewport display
      (colour from the SH DC term as sRGB converted to linear, alpha =
      sigmoid(opacity));
    * ``"display_radius"``: bytes, N float32, world-space radius for display
      (2 x exp(mean log-scale)).
    """

def write_ply(path: str, count: int, positions: Any, columns: Sequence[tuple[str, Any]]) -> None:
    """Writes a standard-layout 3DGS PLY atomically.

    ``positions``: float32 buffer of count*3 values. ``columns``: ``(name,
    float32 buffer of count values)`` pairs; required names: ``f_dc_0..2``,
    ``opacity``, ``scale_0..2``, ``rot_0..3``; ``f_rest_*`` give the SH degree
    (0, 9, 24 or 45 of them); ``nx ny nz`` are ignored (written as zeros);
    other names are kept as extra properties after the standard ones.
    """

def write_splat(path: str, count: int, positions: Any, columns: Sequence[tuple[str, Any]]) -> None:
    """Like :func:`write_ply` but writes the 32-byte-per-splat ``.splat`` web format."""

# --------------------------------------------------------- work folder / runs

def stage_begin(work_dir: str, stage: str, config_json: str) -> str:
    """Starts (or restarts) a stage in a run's work folder and returns an empty
    staging folder to write the stage's outputs into.

    Raises if the stage already finished with a *different* config (a
    finished result is never overwritten silently: the caller must
    :func:`stage_discard` it first). If it finished with the same config,
    raises too: check :func:`stage_state` first to resume instead.
    """

def stage_commit(work_dir: str, stage: str, outputs_json: str) -> str:
    """Marks a stage finished: moves its staging folder to its final place
    atomically, records ``outputs_json`` in the manifest, returns the final
    folder."""

def stage_state(work_dir: str, stage: str, config_json: str) -> str:
    """``"finished"`` (done with this config; reuse it), ``"stale"`` (done
    with another config), or ``"pending"``."""

def stage_discard(work_dir: str, stage: str) -> None:
    """Deletes a finished or half-done stage and every stage after it."""

def stage_dir(work_dir: str, stage: str) -> str:
    """Final folder of a stage (whether or not it exists yet)."""

def manifest(work_dir: str) -> str:
    """The run's manifest as JSON text (``{"stages": [...]}``)."""

# ------------------------------------------------------------------------ jobs

class Job:
    """A native task on a Rust thread. Poll it; never blocks the caller."""

    @staticmethod
    def render_passes(transforms_path: str, positions: Any, triangles: Any, corner_normals: Any) -> "Job":
        """Rasterizes exact geometry passes of a triangle mesh for every frame
        of ``transforms_path`` (its cameras must be written already; images
        need not exist yet) and writes, at each frame's paths:
        ``depth_file_path`` (float32 EXR, channel Y, metres along the view
        axis, 0 = background), ``normal_file_path`` (float32 EXR, RGB =
        world-space unit normal, 0 = background), ``mask_file_path`` (8-bit
        PNG, 255 = object).

        ``positions``: float32 buffer V*3, world space. ``triangles``: int32
        or uint32 buffer T*3 vertex indices. ``corner_normals``: float32
        buffer T*3*3, world-space normal at each triangle corner (smooth or
        flat shading as Blender computed it).
        """

    @staticmethod
    def pipeline(work_dir: str, config_json: str) -> "Job":
        """Runs the native stages after capture in ``work_dir`` (whose
        ``capture`` stage must be finished), resuming finished ones.
        ``config_json`` is the run config (see README). The result JSON lists
        each stage with ``"status"``: ``"done"``, ``"reused"`` or
        ``"not_built"`` and its outputs."""

    @property
    def progress(self) -> float:
        """Fraction done, 0..1."""
    @property
    def stage(self) -> str:
        """Name of the stage running now."""
    @property
    def message(self) -> str:
        """Human-readable status line (step counts, time left)."""
    @property
    def done(self) -> bool:
        """True once finished, failed or cancelled."""
    def cancel(self) -> None:
        """Asks the job to stop at the next safe point; finished stages are kept."""
    def take_log(self) -> list[str]:
        """Log lines produced since the last call."""
    def result(self) -> str:
        """The result as JSON text once done. Raises :class:`SplatdiffError`
        with the job's error if it failed, :class:`Cancelled` if cancelled,
        and RuntimeError if called before ``done``."""
