//! The buffer pool: storage buffers reused by size, so a warm training step allocates nothing.
//!
//! A [`GpuBuffer`] returns its wgpu buffer to the pool when dropped. That is safe because GPU
//! work runs in recording order: a later writer of a reused buffer is recorded after its last
//! reader.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{EngineError, Result};

/// A pooled storage buffer.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    /// Size in bytes, a multiple of 4 (at least 4).
    pub size: u64,
    id: u64,
    pool: Rc<RefCell<Free>>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer present until drop")
    }
    /// Identity used by the bind-group cache; stable for the life of the underlying wgpu buffer.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.borrow_mut().give_back(self.size, self.id, buf);
        }
    }
}

/// Free buffers by size.
#[derive(Default)]
struct Free {
    by_size: HashMap<u64, Vec<(u64, wgpu::Buffer)>>,
}

impl Free {
    /// Free lists are kept in descending id order and `take` returns the lowest id. So the choice
    /// depends only on which buffers are free, not on the order they came back: a step that
    /// starts with the same free buffers as the last gets the same buffer in every role, and
    /// the bind groups cached for the last step serve this one.
    fn give_back(&mut self, size: u64, id: u64, buf: wgpu::Buffer) {
        let list = self.by_size.entry(size).or_default();
        let pos = list.partition_point(|(other, _)| *other > id);
        list.insert(pos, (id, buf));
    }

    fn take(&mut self, size: u64) -> Option<(u64, wgpu::Buffer)> {
        self.by_size.get_mut(&size).and_then(Vec::pop)
    }
}

/// Counters: proof that a warm step allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub allocations: u64,
    pub allocated_bytes: u64,
}

#[derive(Default)]
pub struct BufferPool {
    free: Rc<RefCell<Free>>,
    stats: std::cell::Cell<PoolStats>,
    next_id: std::cell::Cell<u64>,
}

impl BufferPool {
    /// A storage buffer of at least `bytes` bytes; contents are undefined. Fails when the size
    /// exceeds what the device can bind (`limit`).
    pub fn alloc(&self, device: &wgpu::Device, bytes: u64, limit: u64) -> Result<GpuBuffer> {
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > limit {
            return Err(EngineError::TooLarge { bytes: size, limit });
        }
        let reused = self.free.borrow_mut().take(size);
        let (id, buf) = match reused {
            Some(b) => b,
            None => {
                let mut s = self.stats.get();
                s.allocations += 1;
                s.allocated_bytes += size;
                self.stats.set(s);
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let id = self.next_id.get() + 1;
                self.next_id.set(id);
                (id, buf)
            }
        };
        Ok(GpuBuffer { buf: Some(buf), size, id, pool: self.free.clone() })
    }

    pub fn stats(&self) -> PoolStats {
        self.stats.get()
    }
}
