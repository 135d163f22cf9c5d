//! Project automation: `cargo xtask <command>`.
//!
//! * `test`: set up, then run every test (Rust, and Python tests driving real Blender).
//! * `demo`: set up, then run the whole loop headless on the built-in demo scene into `out/demo/`:
//!   two iterations with the exemplar stylizer, the report, turntable GIFs and splats, saved in `out/demo/demo.blend`.
//! * `setup`: only the set-up: a Python 3.11 venv in `.venv` with Blender
//!   (the `bpy` module) and the test tools, a Vulkan driver check, and the
//!   native module built with maturin and installed into the venv.
//! * `package`: the installable extension zip in `dist/` (add-on + wheel).
//! * `bench-import`: the splat import benchmark (1,000,000 splats).
//!
//! Everything is idempotent: a second run skips what is already in place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("setup") => setup(&root).map(|_| ()),
        Some("test") => test(&root, &args[1..]),
        Some("demo") => demo(&root, &args[1..]),
        Some("package") => package(&root).map(|_| ()),
        Some("bench-import") => {
            let py = setup(&root)?;
            let mut cmd = Command::new(&py);
            cmd.arg("tests/benchmarks/bench_import.py").args(&args[1..]);
            run_cmd(&mut cmd)
        }
        _ => {
            eprintln!("usage: cargo xtask <test|demo|setup|package|bench-import> [args]");
            std::process::exit(2);
        }
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("rust/xtask is two levels down").to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: running {shown}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Everything the tests and the demo need; returns the venv's python.
fn setup(root: &Path) -> Result<PathBuf> {
    let python = ensure_venv(root)?;
    ensure_vulkan();
    build_native(root, &python)?;
    Ok(python)
}

/// A Python 3.11 interpreter (Blender 4.2 to 4.5 embed 3.11; bpy 4.5 needs it).
fn find_python311() -> Result<PathBuf> {
    for candidate in ["python3.11", "python3", "python"] {
        let version =
            output_ok(Command::new(candidate).args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]));
        if version.as_deref() == Some("3.11") {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "Python 3.11 is needed (Blender 4.5's bpy module is built for it) but none was found on PATH: \
         install it (Debian: apt-get install python3.11 python3.11-venv) and run again"
    )
}

fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let base = find_python311()?;
        run_cmd(Command::new(base).args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = std::fs::read_to_string(root.join("tests/requirements.txt"))?;
    let stamp = venv.join(".splatdiff-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(requirements.as_str()) {
        run_cmd(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--upgrade", "pip"]))?;
        run_cmd(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r", "tests/requirements.txt"]))?;
        std::fs::write(&stamp, requirements)?;
    }
    Ok(python)
}

/// The splat trainer runs on wgpu, which needs a Vulkan (or Metal/DX12)
/// driver; on a machine without a GPU, Mesa's lavapipe runs it on the CPU.
fn ensure_vulkan() {
    if cfg!(not(target_os = "linux")) || vulkan_driver_present() {
        return;
    }
    let is_root = output_ok(Command::new("id").arg("-u")).as_deref() == Some("0");
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    if is_root && has_apt {
        eprintln!("xtask: no Vulkan driver found; installing Mesa's (lavapipe runs Vulkan on the CPU)");
        let updated = run_cmd(Command::new("apt-get").args(["-qq", "update"]));
        let installed = updated.and_then(|_| {
            run_cmd(
                Command::new("apt-get")
                    .args(["-qq", "install", "-y", "--no-install-recommends", "mesa-vulkan-drivers", "libvulkan1"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        });
        if let Err(e) = installed {
            eprintln!("xtask: warning: could not install a Vulkan driver ({e:#})");
        }
    }
    if !vulkan_driver_present() {
        eprintln!(
            "xtask: warning: no Vulkan driver found. GPU stages need one: install your GPU's driver, \
             or Mesa's software driver (Debian/Ubuntu: `sudo apt-get install mesa-vulkan-drivers libvulkan1`)"
        );
    }
}

fn vulkan_driver_present() -> bool {
    if std::env::var_os("VK_ICD_FILENAMES").is_some() || std::env::var_os("VK_DRIVER_FILES").is_some() {
        return true;
    }
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"].iter().any(|dir| {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "json")))
            .unwrap_or(false)
    })
}

/// Builds the native module's wheel with maturin and installs it into the venv.
fn build_native(root: &Path, python: &Path) -> Result<PathBuf> {
    let wheels = root.join("target/wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    run_cmd(
        Command::new(python)
            .args(["-m", "maturin", "build", "--quiet", "--release", "--manifest-path"])
            .arg(root.join("rust/splatdiff-python/Cargo.toml"))
            .arg("--out")
            .arg(&wheels),
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("maturin built no wheel")?;
    run_cmd(
        Command::new(python).args(["-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps"]).arg(&wheel),
    )?;
    Ok(wheel)
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let python = setup(root)?;
    run_cmd(cargo().args(["test", "--workspace", "--exclude", "splatdiff-python"]))?;
    run_cmd(Command::new(&python).args(["-m", "pytest", "tests/python", "-q", "-rs"]).args(extra))
}

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    let python = setup(root)?;
    let out = root.join("out/demo");
    let blend = out.join("demo.blend");
    run_cmd(
        Command::new(&python)
            .args(["blender_scripts/run_pipeline.py", "--demo", "--out"])
            .arg(&out)
            .arg("--save")
            .arg(&blend)
            // Two iterations with the exemplar stylizer (the demo writes its
            // own style image: no model needed). Sized to finish in minutes
            // on a CPU (lavapipe); a GPU takes the defaults easily.
            .args(["--stylizer", "exemplar", "--iterations", "2", "--steps", "800", "--train-side", "128"])
            .args(extra),
    )?;
    eprintln!("xtask: demo results are in {} (open {} in Blender)", out.display(), blend.display());
    Ok(())
}

/// `dist/splatdiff-VERSION-PLATFORM.zip`: the add-on with the native wheel,
/// installable in Blender 4.2+ (Edit > Preferences > Get Extensions > Install from Disk).
fn package(root: &Path) -> Result<PathBuf> {
    let python = ensure_venv(root)?;
    let wheel = build_native(root, &python)?;
    let dist = root.join("dist");
    let stage = dist.join("splatdiff");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("wheels"))?;
    for entry in std::fs::read_dir(root.join("addon"))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "py") {
            std::fs::copy(&path, stage.join(entry.file_name()))?;
        }
    }
    let wheel_name = wheel.file_name().context("wheel has a name")?.to_string_lossy().into_owned();
    std::fs::copy(&wheel, stage.join("wheels").join(&wheel_name))?;
    let manifest = std::fs::read_to_string(root.join("addon/blender_manifest.toml"))?;
    std::fs::write(stage.join("blender_manifest.toml"), with_wheel(&manifest, &wheel_name))?;
    let tag = wheel_name.trim_end_matches(".whl").rsplit('-').next().unwrap_or("any").to_string();
    let zip = dist.join(format!("splatdiff-{}-{tag}.zip", env!("CARGO_PKG_VERSION")));
    let _ = std::fs::remove_file(&zip);
    run_cmd(
        Command::new(&python)
            .args(["-c", "import shutil, sys; shutil.make_archive(sys.argv[1], 'zip', sys.argv[2])"])
            .arg(zip.with_extension(""))
            .arg(&stage),
    )?;
    eprintln!("xtask: extension written to {}", zip.display());
    Ok(zip)
}

/// The manifest with a top-level `wheels` key, placed before the first table
/// so TOML does not read it as part of that table.
fn with_wheel(manifest: &str, wheel_name: &str) -> String {
    let line = format!("wheels = [\"./wheels/{wheel_name}\"]\n");
    match manifest.find("\n[") {
        Some(i) => format!("{}\n{line}{}", &manifest[..i], &manifest[i..]),
        None => format!("{manifest}\n{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_wheel;

    #[test]
    fn wheels_key_goes_before_the_first_table() {
        let manifest = "id = \"splatdiff\"\n\n[permissions]\nfiles = \"x\"\n";
        let out = with_wheel(manifest, "w.whl");
        let wheels = out.find("wheels = [\"./wheels/w.whl\"]").unwrap();
        assert!(wheels < out.find("[permissions]").unwrap(), "{out}");
        assert!(with_wheel("id = \"a\"\n", "w.whl").ends_with("wheels = [\"./wheels/w.whl\"]\n"));
    }
}
