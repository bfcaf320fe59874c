//! GPU timestamps around recorded work: two query slots, a resolve buffer and a readback buffer.

/// How a measured duration was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamps written before and after the work, on the queue's timeline.
    GpuTimestamps,
    /// Host wall clock around submit and wait (adapters without timestamp queries).
    Wall,
}

pub struct Timer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    pub readback: wgpu::Buffer,
}

impl Timer {
    pub fn new(device: &wgpu::Device) -> Timer {
        let buffer =
            |label, usage| device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: 16, usage, mapped_at_creation: false });
        Timer {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("timer"), ty: wgpu::QueryType::Timestamp, count: 2 }),
            resolve: buffer("timer resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer("timer readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
        }
    }

    /// Writes timestamp `index` (0: start, 1: end); after the end, resolves both for readback.
    pub fn stamp(&self, enc: &mut wgpu::CommandEncoder, index: u32) {
        enc.write_timestamp(&self.queries, index);
        if index == 1 {
            enc.resolve_query_set(&self.queries, 0..2, &self.resolve, 0);
            enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, 16);
        }
    }
}
