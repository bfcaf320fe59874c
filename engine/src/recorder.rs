//! The command recorder: one open compute pass of one command encoder, submitted only when
//! somebody needs a result on the host, writes host data, or flushes. A training step is
//! therefore one submit. It also keeps the MAP_READ staging buffers of readbacks, one per size
//! (a readback is synchronous, so one per size serves), so per-step reads allocate nothing.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    pub dispatches: u64,
    pub submits: u64,
}

#[derive(Default)]
pub struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    staging: HashMap<u64, wgpu::Buffer>,
    stats: RecorderStats,
    /// Dispatches per kernel entry point (where a step's dispatches go).
    by_entry: HashMap<&'static str, u64>,
    /// MAP_READ buffers of finished asynchronous readbacks, by size, for the next ones.
    spare: HashMap<u64, Vec<wgpu::Buffer>>,
}

impl Recorder {
    pub fn stats(&self) -> RecorderStats {
        self.stats
    }

    /// Dispatches so far per kernel entry point.
    pub fn dispatches_by_entry(&self) -> HashMap<&'static str, u64> {
        self.by_entry.clone()
    }

    /// The open compute pass (opened on the current encoder if needed); counts one dispatch of
    /// `entry`.
    pub fn pass_for_dispatch(&mut self, device: &wgpu::Device, entry: &'static str) -> &mut wgpu::ComputePass<'static> {
        self.stats.dispatches += 1;
        *self.by_entry.entry(entry).or_default() += 1;
        if self.pass.is_none() {
            let enc = self.encoder.get_or_insert_with(|| device.create_command_encoder(&Default::default()));
            self.pass = Some(enc.begin_compute_pass(&Default::default()).forget_lifetime());
        }
        self.pass.as_mut().expect("pass just opened")
    }

    /// The encoder, for encoder-level commands (copies, timestamps); closes the open pass first.
    pub fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| device.create_command_encoder(&Default::default()))
    }

    /// Submits everything recorded so far as one command buffer (its index; `None` when nothing
    /// was pending).
    pub fn flush(&mut self, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        self.pass = None;
        let enc = self.encoder.take()?;
        self.stats.submits += 1;
        Some(queue.submit([enc.finish()]))
    }

    /// A MAP_READ buffer of `size` bytes for an asynchronous readback: a spare one, or a new one.
    pub fn take_spare(&mut self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        self.spare.get_mut(&size).and_then(Vec::pop).unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("async readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Gives a finished asynchronous readback's buffer back for reuse.
    pub fn return_spare(&mut self, size: u64, buf: wgpu::Buffer) {
        self.spare.entry(size).or_default().push(buf);
    }

    /// A MAP_READ buffer of `size` bytes, made once per size.
    pub fn staging(&mut self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        self.staging
            .entry(size)
            .or_insert_with(|| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone()
    }
}
