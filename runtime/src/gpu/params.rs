//! Uniform parameter blocks of one submission, packed into one buffer and bound at dynamic offsets.
//! The buffer and its host copy live as long as the context, so a dispatch allocates nothing here.

/// Room for `MAX_DISPATCHES_PER_SUBMIT` slots of 256 bytes; a batch that fills it is submitted early.
pub(crate) const PARAMS_BYTES: u64 = 1 << 20;
/// Every slot is at least this big (the usual uniform offset alignment, so it costs no space), which
/// covers any parameter struct up to that size without launchers padding by hand.
pub(crate) const MIN_SLOT_BYTES: usize = 256;

pub(crate) struct ParamsArena {
    buffer: wgpu::Buffer,
    /// This submission's parameters, uploaded in one write when it is submitted.
    bytes: Vec<u8>,
    align: usize,
}

impl ParamsArena {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Self {
        ParamsArena {
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln params"),
                size: PARAMS_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            bytes: Vec::with_capacity(PARAMS_BYTES as usize),
            align: limits.min_uniform_buffer_offset_alignment as usize,
        }
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The bound size of a parameter block of `len` bytes.
    pub fn slot_size(len: usize) -> usize {
        len.max(MIN_SLOT_BYTES).next_multiple_of(16)
    }

    /// Copies `params` into the next slot and returns its offset, or None when the buffer is full
    /// (submit, then try again).
    pub fn push(&mut self, params: &[u8]) -> Option<u32> {
        let offset = self.bytes.len().next_multiple_of(self.align);
        let end = offset + Self::slot_size(params.len());
        if end as u64 > PARAMS_BYTES {
            return None;
        }
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(params);
        self.bytes.resize(end, 0);
        Some(offset as u32)
    }

    /// Uploads this submission's parameters; they land before the submission's commands run.
    pub fn upload(&mut self, queue: &wgpu::Queue) {
        if !self.bytes.is_empty() {
            queue.write_buffer(&self.buffer, 0, &self.bytes);
        }
        self.bytes.clear();
    }
}
