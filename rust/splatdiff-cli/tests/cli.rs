//! The `splatdiff` binary as a user runs it.

use std::process::Command;

use splatdiff_scene::{read_splats, write_splats, GaussianSplats};

fn splatdiff(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_splatdiff")).args(args).output().unwrap()
}

#[test]
fn convert_writes_both_formats_and_info_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let splats = GaussianSplats {
        positions: vec![[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        sh_dc: vec![[0.1, 0.2, 0.3]; 2],
        opacity: vec![0.5, -0.5],
        scales: vec![[-2.0; 3]; 2],
        rotations: vec![[1.0, 0.0, 0.0, 0.0]; 2],
        ..Default::default()
    };
    let input = dir.path().join("in.ply");
    write_splats(&input, &splats).unwrap();
    for name in ["out.ply", "out.splat"] {
        let out = dir.path().join(name);
        let run = splatdiff(&["convert".as_ref(), input.as_os_str(), out.as_os_str()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(out.exists());
    }
    assert_eq!(read_splats(&dir.path().join("out.ply")).unwrap(), splats);
    let info = splatdiff(&["info".as_ref(), input.as_os_str()]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("2 splats, SH degree 0"));
}

#[test]
fn bad_input_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.ply");
    std::fs::write(
        &bad,
        b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\0\0",
    )
    .unwrap();
    let run = splatdiff(&["info".as_ref(), bad.as_os_str()]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("broken.ply"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let config = dir.path().join("run.json");
    std::fs::write(&config, r#"{"stylize": {"kind": "external"}}"#).unwrap();
    let run = splatdiff(&[
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--work".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no finished capture"));
}
