//! wgpu implementation (written by the GPU helper).
