//! `splatdiff_native`: the Python module the Blender add-on imports.
//!
//! Built as an abi3 (Python ≥ 3.11) extension, so one wheel loads in Blender
//! 4.2, 4.5 and 5.x. `python/splatdiff_native.pyi` documents every function
//! for Python callers. Arrays come in through the buffer protocol and go out
//! as `bytes`, so the add-on moves them into Blender with `foreach_set`
//! without a per-element Python loop. Long work runs in a [`Job`] on a Rust
//! thread; nothing here holds the GIL while it works.

use std::path::PathBuf;
use std::sync::Mutex;

use glam::Vec3;
use pyo3::buffer::{Element, PyBuffer};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde_json::Value;
use splatdiff_pipeline::{passes, run_pipeline, PipelineError, RunConfig, StageState, WorkDir};
use splatdiff_scene::ply::{
    display_radius, display_rgba_linear, read_ply_table, write_splats, GaussianSplats, PlyTable,
};
use splatdiff_scene::raster::TriangleMesh;
use splatdiff_scene::splat_file::write_splat_file;
use splatdiff_scene::SceneError;

create_exception!(
    splatdiff_native,
    SplatdiffError,
    PyException,
    "Bad input or a failed stage; the message names the file."
);
create_exception!(splatdiff_native, Cancelled, SplatdiffError, "The job was cancelled.");

fn scene_err(e: SceneError) -> PyErr {
    SplatdiffError::new_err(e.to_string())
}

fn pipeline_err(e: PipelineError) -> PyErr {
    match e {
        PipelineError::Cancelled => Cancelled::new_err("cancelled"),
        other => SplatdiffError::new_err(other.to_string()),
    }
}

/// Little-endian bytes of `values`, written straight into the Python object.
fn f32_bytes<'py>(py: Python<'py>, values: impl ExactSizeIterator<Item = f32>) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * 4, |buf| {
        for (out, v) in buf.chunks_exact_mut(4).zip(values) {
            out.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    })
}

/// Copies a buffer of `T` with exactly `expected` items (when given).
fn buffer_vec<T: Element + Copy>(obj: &Bound<'_, PyAny>, what: &str, expected: Option<usize>) -> PyResult<Vec<T>> {
    let buffer = PyBuffer::<T>::get(obj).map_err(|e| {
        SplatdiffError::new_err(format!("{what}: expected a buffer of {} ({e})", std::any::type_name::<T>()))
    })?;
    let values = buffer.to_vec(obj.py())?;
    if let Some(n) = expected {
        if values.len() != n {
            return Err(SplatdiffError::new_err(format!("{what}: {} values, expected {n}", values.len())));
        }
    }
    Ok(values)
}

/// Reads a 3DGS PLY: see the .pyi for the returned dict. The columns go
/// to Python as they were read, with no typed copy in between: this is the
/// hot path of importing a million splats into Blender.
#[pyfunction]
fn read_ply<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let (table, sh_degree) = py
        .detach(|| -> Result<(PlyTable, u32), SceneError> {
            let table = read_ply_table(&path)?;
            let sh_degree = GaussianSplats::check_table(&table, &path)?;
            Ok((table, sh_degree))
        })
        .map_err(scene_err)?;
    let n = table.count;
    let column = |name: &str| table.column(name).expect("checked by check_table");
    let [x, y, z] = ["x", "y", "z"].map(column);
    let [dc0, dc1, dc2, opacity] = ["f_dc_0", "f_dc_1", "f_dc_2", "opacity"].map(column);
    let [s0, s1, s2] = ["scale_0", "scale_1", "scale_2"].map(column);
    let out = PyDict::new(py);
    out.set_item("count", n)?;
    out.set_item("sh_degree", sh_degree)?;
    out.set_item("positions", f32_bytes(py, (0..n * 3).map(|i| [x, y, z][i % 3][i / 3]))?)?;
    let columns = PyList::empty(py);
    for (name, values) in &table.columns {
        if !matches!(name.as_str(), "x" | "y" | "z") {
            columns.append((name.as_str(), f32_bytes(py, values.iter().copied())?))?;
        }
    }
    out.set_item("columns", columns)?;
    let rgba: Vec<f32> = (0..n).flat_map(|i| display_rgba_linear([dc0[i], dc1[i], dc2[i]], opacity[i])).collect();
    out.set_item("display_color", f32_bytes(py, rgba.into_iter())?)?;
    out.set_item("display_radius", f32_bytes(py, (0..n).map(|i| display_radius([s0[i], s1[i], s2[i]])))?)?;
    Ok(out)
}

/// Builds typed splats from the add-on's columns.
fn splats_from_columns(
    path: &std::path::Path,
    count: usize,
    positions: &Bound<'_, PyAny>,
    columns: &Bound<'_, PyAny>,
) -> PyResult<GaussianSplats> {
    let positions = buffer_vec::<f32>(positions, "positions", Some(count * 3))?;
    let mut table = PlyTable { count, columns: Vec::new() };
    for (axis, name) in ["x", "y", "z"].iter().enumerate() {
        table.columns.push((name.to_string(), positions.iter().skip(axis).step_by(3).copied().collect()));
    }
    for item in columns.try_iter()? {
        let (name, buffer): (String, Bound<'_, PyAny>) = item?.extract()?;
        if matches!(name.as_str(), "x" | "y" | "z") {
            continue;
        }
        let values = buffer_vec::<f32>(&buffer, &name, Some(count))?;
        table.columns.push((name, values));
    }
    GaussianSplats::from_table(&table, path).map_err(scene_err)
}

/// Writes a standard-layout 3DGS PLY atomically.
#[pyfunction]
fn write_ply(path: PathBuf, count: usize, positions: &Bound<'_, PyAny>, columns: &Bound<'_, PyAny>) -> PyResult<()> {
    let splats = splats_from_columns(&path, count, positions, columns)?;
    positions.py().detach(|| write_splats(&path, &splats)).map_err(scene_err)
}

/// Writes the `.splat` web format atomically.
#[pyfunction]
fn write_splat(path: PathBuf, count: usize, positions: &Bound<'_, PyAny>, columns: &Bound<'_, PyAny>) -> PyResult<()> {
    let splats = splats_from_columns(&path, count, positions, columns)?;
    positions.py().detach(|| write_splat_file(&path, &splats)).map_err(scene_err)
}

fn parse_json(text: &str, what: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| SplatdiffError::new_err(format!("{what} is not valid JSON: {e}")))
}

fn work_dir(path: PathBuf) -> PyResult<WorkDir> {
    WorkDir::open(path).map_err(pipeline_err)
}

#[pyfunction]
fn stage_begin(work: PathBuf, stage: &str, config_json: &str) -> PyResult<PathBuf> {
    let config = parse_json(config_json, "stage config")?;
    work_dir(work)?.begin(stage, &config).map_err(pipeline_err)
}

#[pyfunction]
fn stage_commit(work: PathBuf, stage: &str, outputs_json: &str) -> PyResult<PathBuf> {
    let outputs = parse_json(outputs_json, "stage outputs")?;
    work_dir(work)?.commit(stage, outputs).map_err(pipeline_err)
}

#[pyfunction]
fn stage_state(work: PathBuf, stage: &str, config_json: &str) -> PyResult<&'static str> {
    let config = parse_json(config_json, "stage config")?;
    Ok(match work_dir(work)?.state(stage, &config).map_err(pipeline_err)? {
        StageState::Finished(_) => "finished",
        StageState::Stale(_) => "stale",
        StageState::Pending => "pending",
    })
}

#[pyfunction]
fn stage_discard(work: PathBuf, stage: &str) -> PyResult<()> {
    work_dir(work)?.discard(stage).map_err(pipeline_err)
}

#[pyfunction]
fn stage_dir(work: PathBuf, stage: &str) -> PathBuf {
    work.join(stage)
}

#[pyfunction]
fn manifest(work: PathBuf) -> PyResult<String> {
    let manifest = work_dir(work)?.manifest().map_err(pipeline_err)?;
    Ok(serde_json::to_string_pretty(&manifest).expect("manifest serialises"))
}

/// A native task on a Rust thread; see the .pyi.
#[pyclass(module = "splatdiff_native")]
struct Job {
    inner: Mutex<splatdiff_pipeline::Job>,
    outcome: Mutex<Option<Result<Value, PipelineError>>>,
}

impl Job {
    fn wrap(job: splatdiff_pipeline::Job) -> Self {
        Self { inner: Mutex::new(job), outcome: Mutex::new(None) }
    }
}

#[pymethods]
impl Job {
    #[staticmethod]
    fn render_passes(
        transforms_path: PathBuf,
        positions: &Bound<'_, PyAny>,
        triangles: &Bound<'_, PyAny>,
        corner_normals: &Bound<'_, PyAny>,
    ) -> PyResult<Job> {
        let positions = buffer_vec::<f32>(positions, "positions", None)?;
        let triangles = buffer_vec::<u32>(triangles, "triangles", None).or_else(|_| {
            buffer_vec::<i32>(triangles, "triangles", None).map(|v| v.into_iter().map(|i| i as u32).collect())
        })?;
        let normals = buffer_vec::<f32>(corner_normals, "corner_normals", None)?;
        if positions.len() % 3 != 0 || triangles.len() % 3 != 0 {
            return Err(SplatdiffError::new_err("positions and triangles must hold multiples of 3 values"));
        }
        if !normals.is_empty() && normals.len() != triangles.len() * 3 {
            return Err(SplatdiffError::new_err(format!(
                "corner_normals: {} values, expected {} (3 per triangle corner)",
                normals.len(),
                triangles.len() * 3
            )));
        }
        let mesh = TriangleMesh {
            positions: positions.chunks_exact(3).map(Vec3::from_slice).collect(),
            triangles: triangles.chunks_exact(3).map(|t| [t[0], t[1], t[2]]).collect(),
            corner_normals: normals
                .chunks_exact(9)
                .map(|n| [Vec3::from_slice(&n[0..3]), Vec3::from_slice(&n[3..6]), Vec3::from_slice(&n[6..9])])
                .collect(),
        };
        Ok(Job::wrap(splatdiff_pipeline::Job::spawn("passes", move |ctx| {
            passes::render_passes(&transforms_path, &mesh, ctx)
        })))
    }

    #[staticmethod]
    fn pipeline(work: PathBuf, config_json: &str) -> PyResult<Job> {
        let config: RunConfig = serde_json::from_str(config_json)
            .map_err(|e| SplatdiffError::new_err(format!("run config is not valid: {e}")))?;
        let work = work_dir(work)?;
        Ok(Job::wrap(splatdiff_pipeline::Job::spawn("pipeline", move |ctx| run_pipeline(&work, &config, ctx))))
    }

    #[getter]
    fn progress(&self) -> f32 {
        self.inner.lock().unwrap().status().progress
    }

    #[getter]
    fn stage(&self) -> String {
        self.inner.lock().unwrap().status().stage
    }

    #[getter]
    fn message(&self) -> String {
        self.inner.lock().unwrap().status().message
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.lock().unwrap().is_done()
    }

    fn cancel(&self) {
        self.inner.lock().unwrap().cancel();
    }

    fn take_log(&self) -> Vec<String> {
        self.inner.lock().unwrap().take_log()
    }

    fn result(&self) -> PyResult<String> {
        let mut outcome = self.outcome.lock().unwrap();
        if outcome.is_none() {
            *outcome = self.inner.lock().unwrap().take_outcome();
        }
        match outcome.as_ref() {
            None => Err(PyRuntimeError::new_err("the job is still running")),
            Some(Ok(value)) => Ok(value.to_string()),
            Some(Err(PipelineError::Cancelled)) => Err(Cancelled::new_err("cancelled")),
            Some(Err(e)) => Err(SplatdiffError::new_err(e.to_string())),
        }
    }
}

#[pymodule]
fn splatdiff_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SplatdiffError", m.py().get_type::<SplatdiffError>())?;
    m.add("Cancelled", m.py().get_type::<Cancelled>())?;
    m.add_class::<Job>()?;
    m.add_function(wrap_pyfunction!(read_ply, m)?)?;
    m.add_function(wrap_pyfunction!(write_ply, m)?)?;
    m.add_function(wrap_pyfunction!(write_splat, m)?)?;
    m.add_function(wrap_pyfunction!(stage_begin, m)?)?;
    m.add_function(wrap_pyfunction!(stage_commit, m)?)?;
    m.add_function(wrap_pyfunction!(stage_state, m)?)?;
    m.add_function(wrap_pyfunction!(stage_discard, m)?)?;
    m.add_function(wrap_pyfunction!(stage_dir, m)?)?;
    m.add_function(wrap_pyfunction!(manifest, m)?)?;
    Ok(())
}
