//! Device set-up, error capture and buffer helpers.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::{RenderError, Result};

/// A wgpu device and queue on the best adapter found.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Whether the device has native `atomic<f32>` adds (else a CAS loop is used).
    pub(crate) float_atomics: bool,
    /// Errors reported by wgpu outside any error scope (validation, device loss).
    errors: Arc<Mutex<Vec<String>>>,
}

/// Options for [`GpuContext::with_options`].
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Use `SHADER_FLOAT32_ATOMIC` when the adapter has it (else a compare-exchange loop).
    pub float_atomics: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self { float_atomics: std::env::var_os("SPLATDIFF_GPU_NO_FLOAT_ATOMICS").is_none() }
    }
}

const NO_ADAPTER: &str =
    "no Vulkan, Metal or DX12 adapter: install your GPU driver, or Mesa's software driver: apt-get install mesa-vulkan-drivers";

impl GpuContext {
    /// Picks a high-performance adapter (Vulkan/Metal/DX12; Mesa's lavapipe counts).
    pub fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default())
    }

    pub fn with_options(options: GpuOptions) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        }
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| RenderError::NoAdapter(format!("{NO_ADAPTER} ({e})")))?;
        let info = adapter.get_info();
        let have = adapter.limits();
        let mut limits = wgpu::Limits::default();
        // Everything here needs at most 8 storage buffers and 14 KiB of workgroup memory per stage.
        let need = [
            ("storage buffers per stage", have.max_storage_buffers_per_shader_stage, 8),
            ("workgroup storage bytes", have.max_compute_workgroup_storage_size, 14 * 1024),
            ("invocations per workgroup", have.max_compute_invocations_per_workgroup, 256),
        ];
        for (what, got, want) in need {
            if got < want {
                return Err(RenderError::Device(format!(
                    "adapter {} allows {got} {what}, the rasterizer needs {want}",
                    info.name
                )));
            }
        }
        limits.max_storage_buffers_per_shader_stage = 8;
        limits.max_buffer_size = have.max_buffer_size;
        limits.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size;
        let float_atomics = options.float_atomics && adapter.features().contains(wgpu::Features::SHADER_FLOAT32_ATOMIC);
        let required_features =
            if float_atomics { wgpu::Features::SHADER_FLOAT32_ATOMIC } else { wgpu::Features::empty() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("splatdiff"),
            required_features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| RenderError::Device(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        Ok(Self { device, queue, info, float_atomics, errors })
    }

    /// The adapter's name, e.g. "llvmpipe (LLVM 19.1.7, 256 bits)".
    pub fn adapter_name(&self) -> String {
        self.info.name.clone()
    }

    /// The adapter's name, backend and driver.
    pub fn adapter_description(&self) -> String {
        format!("{} ({:?}, {} {})", self.info.name, self.info.backend, self.info.driver, self.info.driver_info)
    }

    /// Whether float atomic adds are native (`SHADER_FLOAT32_ATOMIC`) rather than a CAS loop.
    pub fn native_float_atomics(&self) -> bool {
        self.float_atomics
    }

    /// Fails with the first error wgpu reported outside an error scope since the last check.
    pub(crate) fn check(&self) -> Result<()> {
        let mut v = self.errors.lock().map_err(|_| RenderError::Device("error log poisoned".into()))?;
        if v.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *v).join("; ");
        if all.to_lowercase().contains("out of memory") {
            Err(RenderError::OutOfMemory(all))
        } else {
            Err(RenderError::Device(all))
        }
    }

    pub(crate) fn max_buffer(&self) -> u64 {
        let l = self.device.limits();
        l.max_buffer_size.min(l.max_storage_buffer_binding_size)
    }

    /// A storage buffer of at least `bytes` (at least 16), zero-filled, inside an out-of-memory scope.
    pub(crate) fn storage(&self, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let size = bytes.max(16).next_multiple_of(4);
        if size > self.max_buffer() {
            return Err(RenderError::OutOfMemory(format!(
                "{label} needs {size} bytes, above the adapter's largest storage buffer ({} bytes)",
                self.max_buffer()
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC | extra,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RenderError::OutOfMemory(format!("{label} ({size} bytes): {e}")));
        }
        Ok(buffer)
    }

    /// A storage buffer holding `data` (padded to at least 16 bytes).
    pub(crate) fn storage_init(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let buffer = self.storage(label, data.len() as u64, wgpu::BufferUsages::empty())?;
        if !data.is_empty() {
            self.queue.write_buffer(&buffer, 0, data);
        }
        Ok(buffer)
    }

    pub(crate) fn uniform(&self, data: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: data,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Copies `bytes` from `buffer` at `offset` to the host (submitting `encoder` first if given).
    pub(crate) fn read(
        &self,
        encoder: Option<wgpu::CommandEncoder>,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let mut encoder = encoder.unwrap_or_else(|| self.encoder());
        if bytes == 0 {
            self.queue.submit([encoder.finish()]);
            return Ok(Vec::new());
        }
        let size = bytes.next_multiple_of(4);
        let staging = {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(RenderError::OutOfMemory(format!("readback of {size} bytes: {e}")));
            }
            b
        };
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        self.map_read(&staging, bytes)
    }

    fn map_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RenderError::Device(format!("waiting for the GPU: {e}")))?;
        self.check()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RenderError::Device(format!("reading back from the GPU: {e}"))),
            Err(_) => return Err(RenderError::Device("reading back from the GPU: mapping never completed".into())),
        }
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| RenderError::Device(format!("reading back from the GPU: {e}")))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("splatdiff") })
    }

    /// Waits for all queued GPU work, then reports any error wgpu raised.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RenderError::Device(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Workgroup grid for `groups` workgroups (2D past the 65535 per-dimension limit).
    pub(crate) fn grid(&self, groups: u32) -> (u32, u32) {
        let max = self.device.limits().max_compute_workgroups_per_dimension.max(1);
        if groups <= max {
            (groups, 1)
        } else {
            (max, groups.div_ceil(max))
        }
    }
}

/// Bytes of an f32 slice.
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub(crate) fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub(crate) fn to_u32(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
