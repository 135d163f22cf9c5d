//! One model component's tensors under diffusers' names, whatever file
//! layout they came from.
//!
//! [`Weights`] maps each diffusers name (`down_blocks.0.resnets.0.conv1.weight`)
//! to where the tensor lives: a tensor of a memory-mapped safetensors file,
//! possibly under another name (LDM checkpoints) and possibly after a
//! reshape (LDM's 1x1-conv attention projections) or a slice (OpenCLIP's
//! fused q/k/v), or a tensor held in memory (a LoRA-merged weight). Tensors
//! are read from the mapping only when a module asks for them, so peak
//! memory stays near the size of the built model.
//!
//! Modules are built from [`Weights::var_builder`], a `candle_nn::VarBuilder`
//! whose missing or misshapen tensors are reported with the file and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{DiffusionError, Result};

/// How a stored tensor becomes the diffusers tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transform {
    /// Used as stored.
    AsIs,
    /// A 1x1 convolution `(out, in, 1, 1)` used as a linear weight `(out, in)`.
    Conv1x1ToLinear,
    /// Part `index` of `parts` equal slices along dim 0 (fused q/k/v).
    Slice { index: usize, parts: usize },
}

#[derive(Debug, Clone)]
enum Entry {
    Stored { file: usize, key: String, transform: Transform },
    Held(Tensor),
}

/// A safetensors file, memory-mapped, with the path it came from.
#[derive(Clone)]
pub(crate) struct MappedFile {
    path: PathBuf,
    tensors: Arc<MmapedSafetensors>,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedFile({})", self.path.display())
    }
}

impl MappedFile {
    /// Memory-maps `path`; a missing or malformed file is reported by path.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(DiffusionError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")));
        }
        // SAFETY: the file is mapped read-only; like every mmap-based
        // loader we rely on it not being truncated while the model loads.
        let tensors = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
            if ["ckpt", "pt", "pth", "bin"].contains(&ext.as_str()) {
                DiffusionError::Unsupported(format!(
                    "{}: PyTorch pickle files are not loaded (unpickling can run code); convert it to .safetensors",
                    path.display()
                ))
            } else {
                DiffusionError::format(path, format!("not a safetensors file: {e}"))
            }
        })?;
        Ok(Self { path: path.to_path_buf(), tensors: Arc::new(tensors) })
    }

    /// Every tensor name with its shape, sorted by name.
    pub(crate) fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect()
    }

    /// Reads one tensor as f32 on the CPU.
    pub(crate) fn load_f32(&self, key: &str) -> Result<Tensor> {
        let t = self.tensors.load(key, &Device::Cpu).map_err(|_| DiffusionError::missing_key(&self.path, key))?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// One component's tensors (UNet, VAE, text encoder, ControlNet) under
/// diffusers' names. Cheap to clone: files are shared, tensors are read on
/// demand.
#[derive(Debug, Clone)]
pub struct Weights {
    origin: PathBuf,
    files: Vec<MappedFile>,
    entries: BTreeMap<String, Entry>,
}

impl Weights {
    /// All tensors of one safetensors file, under their stored names
    /// (a diffusers component file such as `unet/diffusion_pytorch_model.safetensors`).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_files(path, &[path.to_path_buf()])
    }

    /// All tensors of several safetensors files (a sharded component),
    /// reported in errors as `origin`.
    pub fn from_files(origin: &Path, paths: &[PathBuf]) -> Result<Self> {
        let mut weights = Weights::empty(origin);
        for path in paths {
            let file = MappedFile::open(path)?;
            let index = weights.files.len();
            for key in file.shapes().into_keys() {
                weights.entries.insert(key.clone(), Entry::Stored { file: index, key, transform: Transform::AsIs });
            }
            weights.files.push(file);
        }
        Ok(weights)
    }

    /// No tensors yet; errors name `origin`.
    pub(crate) fn empty(origin: &Path) -> Self {
        Self { origin: origin.to_path_buf(), files: Vec::new(), entries: BTreeMap::new() }
    }

    /// Adds a file whose tensors are then exposed through [`Self::map`].
    pub(crate) fn add_file(&mut self, file: MappedFile) -> usize {
        self.files.push(file);
        self.files.len() - 1
    }

    /// Exposes stored tensor `key` of file `file` as `name`.
    pub(crate) fn map(&mut self, name: String, file: usize, key: &str, transform: Transform) {
        self.entries.insert(name, Entry::Stored { file, key: key.to_string(), transform });
    }

    /// Renames tensor `old` to `new` (no-op when `old` is absent).
    pub(crate) fn alias(&mut self, old: &str, new: String) {
        if let Some(entry) = self.entries.remove(old) {
            self.entries.insert(new, entry);
        }
    }

    /// The diffusers names available, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a tensor is available under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of tensor `name`, read from the file header without loading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        match self.entries.get(name) {
            None => Err(DiffusionError::missing_key(&self.origin, name)),
            Some(Entry::Held(t)) => Ok(t.dims().to_vec()),
            Some(Entry::Stored { file, key, transform }) => {
                let view = self.files[*file]
                    .tensors
                    .get(key)
                    .map_err(|_| DiffusionError::missing_key(&self.files[*file].path, key))?;
                let mut shape = view.shape().to_vec();
                match transform {
                    Transform::AsIs => {}
                    Transform::Conv1x1ToLinear => shape.truncate(2),
                    Transform::Slice { parts, .. } => {
                        if let Some(rows) = shape.first_mut() {
                            *rows /= parts
                        }
                    }
                }
                Ok(shape)
            }
        }
    }

    /// Every tensor's name and shape, read from the file headers.
    pub fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        self.names().map(|n| Ok((n.to_string(), self.shape(n)?))).collect()
    }

    /// Tensor `name` as f32 on the CPU (for merging and inspection).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        match self.entries.get(name) {
            None => Err(DiffusionError::missing_key(&self.origin, name)),
            Some(Entry::Held(t)) => Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?),
            Some(Entry::Stored { file, key, transform }) => {
                let file = &self.files[*file];
                let t = file.load_f32(key)?;
                apply(&t, *transform, &file.path, key)
            }
        }
    }

    /// Replaces (or adds) tensor `name` with `tensor`, held in memory:
    /// how merged LoRA weights enter the model before it is built.
    pub fn insert(&mut self, name: &str, tensor: Tensor) {
        self.entries.insert(name.to_string(), Entry::Held(tensor));
    }

    /// A `VarBuilder` over these weights that yields tensors in `dtype` on
    /// `device`; modules built from it ask for diffusers names relative to
    /// the component root (`conv_in.weight`, `text_model.embeddings...`).
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }
}

fn apply(t: &Tensor, transform: Transform, path: &Path, key: &str) -> Result<Tensor> {
    let bad = |what: &str| DiffusionError::format(path, format!("tensor `{key}` of shape {:?} {what}", t.dims()));
    match transform {
        Transform::AsIs => Ok(t.clone()),
        Transform::Conv1x1ToLinear => match t.dims() {
            [o, i, 1, 1] => Ok(t.reshape((*o, *i))?),
            [_, _] => Ok(t.clone()),
            _ => Err(bad("is not a 1x1 convolution")),
        },
        Transform::Slice { index, parts } => {
            let rows = t.dim(0)?;
            if rows % parts != 0 {
                return Err(bad(&format!("cannot be split into {parts} equal parts")));
            }
            Ok(t.narrow(0, index * rows / parts, rows / parts)?.contiguous()?)
        }
    }
}

impl SimpleBackend for Weights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = SimpleBackend::get_unchecked(self, name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "{}: tensor `{name}` has shape {:?}, the model expects {:?}",
                self.origin.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match self.entries.get(name) {
            None => candle_core::bail!("{}: missing key `{name}`", self.origin.display()),
            Some(Entry::Held(t)) => t.clone(),
            Some(Entry::Stored { file, key, transform }) => {
                let file = &self.files[*file];
                // Load in the stored dtype and convert once, on the target device.
                let t = file
                    .tensors
                    .load(key, dev)
                    .map_err(|e| candle_core::Error::Msg(format!("{}: `{key}`: {e}", file.path.display())))?;
                apply(&t, *transform, &file.path, key).map_err(|e| candle_core::Error::Msg(e.to_string()))?
            }
        };
        t.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}
