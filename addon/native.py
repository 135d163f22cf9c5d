"""Access to ``splatdiff_native``, the Rust backend.

The extension ships it as a wheel (see ``blender_manifest.toml``); in a
development checkout ``cargo xtask test`` installs it into ``.venv``. Import
it through :func:`load` so that a missing or broken build gives one clear
message instead of a traceback deep inside an operator.
"""

_module = None


class NativeMissing(RuntimeError):
    pass


def load():
    """Returns the ``splatdiff_native`` module or raises :class:`NativeMissing`."""
    global _module
    if _module is None:
        try:
            import splatdiff_native
        except ImportError as exc:
            raise NativeMissing(
                "splatdiff's native module (splatdiff_native) is not installed: "
                "install the add-on from its release zip, or run `cargo xtask test` "
                f"in a development checkout ({exc})"
            ) from exc
        _module = splatdiff_native
    return _module


def error_types():
    """The exception types that mean bad input rather than a bug."""
    native = load()
    return (native.SplatdiffError, OSError, ValueError)
