//! File-format tests of splatdiff-scene: one test binary, one module per
//! format, so the suite links once.

mod maps;
mod ply;
mod splat_file;
mod transforms;

/// Asserts that `result` failed with a message naming `path` and containing
/// every one of `needles`.
#[track_caller]
fn assert_error<T: std::fmt::Debug>(result: splatdiff_scene::Result<T>, path: &std::path::Path, needles: &[&str]) {
    let err = result.expect_err("expected an error");
    let message = err.to_string();
    assert_eq!(err.path(), path, "{message}");
    assert!(message.contains(&path.display().to_string()), "error does not name the file: {message}");
    for needle in needles {
        assert!(message.contains(needle), "error lacks {needle:?}: {message}");
    }
}
