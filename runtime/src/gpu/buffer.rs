//! A pooled device buffer that goes back to its context's pool when the last tensor using it drops.

use std::sync::Arc;

use super::GpuContext;

/// A driver buffer with the id the context gave it, unique for the context's lifetime (bind groups are
/// cached by these ids).
pub(crate) struct RawBuffer {
    pub id: u64,
    pub buffer: wgpu::Buffer,
}

pub struct GpuBuffer {
    ctx: Arc<GpuContext>,
    buffer: Option<RawBuffer>,
    class: u64,
    /// Bytes requested (rounded to 16), which is what kernels bind.
    bytes: u64,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer({} bytes on gpu:{})",
            self.bytes,
            self.ctx.index()
        )
    }
}

impl GpuBuffer {
    pub(crate) fn new(ctx: Arc<GpuContext>, buffer: RawBuffer, class: u64, bytes: u64) -> Self {
        GpuBuffer {
            ctx,
            buffer: Some(buffer),
            class,
            bytes,
        }
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn raw(&self) -> &wgpu::Buffer {
        &self.held().buffer
    }

    /// The underlying driver buffer's id: equal ids mean the same buffer.
    pub fn id(&self) -> u64 {
        self.held().id
    }

    fn held(&self) -> &RawBuffer {
        self.buffer
            .as_ref()
            .expect("a GpuBuffer holds its buffer until dropped")
    }

    /// The bound size: the request rounded up to 16 bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.ctx.release(buffer, self.class);
        }
    }
}
