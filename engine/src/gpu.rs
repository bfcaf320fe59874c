//! The GPU context: adapter choice, device, pipeline cache, buffer pool and the command recorder.
//!
//! One `Gpu` is built per process and passed around as `&Gpu`. Work is recorded into one open
//! compute pass of one command encoder; nothing is submitted until somebody needs a result on the
//! CPU (`read_*`), writes host data into a buffer (`write`), or calls [`Gpu::flush`]. A training
//! step therefore costs one submit.
//!
//! Kernel parameters (shapes, scalars) travel as immediate data (push constants), so a dispatch
//! allocates nothing; bind groups are cached per (pipeline, buffers) so a warm step creates none.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::kernels::Shader;

/// Environment variable that picks the adapter: an index from `cifs-wgpu info`, a device type
/// (`discrete`, `integrated`, `cpu`, `virtual`) or a case-insensitive part of the adapter name.
pub use wgpu::Features;

pub const ADAPTER_ENV: &str = "CIFS_WGPU_ADAPTER";

/// Workgroup size of every 1-D element-wise kernel; mirrored by `WG` in the WGSL files.
pub const WG_1D: u32 = 256;
/// Largest workgroup count of one grid dimension that every backend accepts.
const MAX_GRID_DIM: u32 = 65535;

/// A pooled storage buffer. Dropping it returns the wgpu buffer to the pool for reuse.
/// Safe because GPU work runs in recording order: a later writer is recorded after the last reader.
pub struct GpuBuffer {
    buf: Option<wgpu::Buffer>,
    /// Size in bytes, a multiple of 4 (at least 4).
    pub size: u64,
    id: u64,
    pool: Rc<RefCell<Pool>>,
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

#[derive(Default)]
struct Pool {
    free: HashMap<u64, Vec<(u64, wgpu::Buffer)>>,
    allocated_bytes: u64,
    allocations: u64,
}

impl Pool {
    /// Free lists are kept in descending id order and `alloc` takes the lowest id. So the choice
    /// depends only on which buffers are free, not on the order they came back: a step that
    /// starts with the same free buffers as the last gets the same buffer in every role, and
    /// the bind groups cached for the last step serve this one.
    fn give_back(&mut self, size: u64, id: u64, buf: wgpu::Buffer) {
        let list = self.free.entry(size).or_default();
        let pos = list.partition_point(|(other, _)| *other > id);
        list.insert(pos, (id, buf));
    }
}

/// Bind groups kept at most; past this the cache is dropped and rebuilt (a guard against a
/// workload whose buffers never settle into fixed roles).
const MAX_CACHED_BIND_GROUPS: usize = 65_536;

/// A compiled kernel: pipeline plus the bind-group layout derived from its WGSL.
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    id: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct KernelKey {
    shader: Shader,
    entry: &'static str,
    /// Pipeline-overridable constants, rendered as "name=value" pairs (the specialisation).
    constants: Vec<(&'static str, u64)>,
}

#[derive(Default)]
struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: u64,
}

/// Counters for tests and benchmarks: proof that a warm step allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub buffer_allocations: u64,
    pub allocated_bytes: u64,
    pub pipelines: u64,
    pub bind_groups_created: u64,
    pub submits: u64,
    pub dispatches: u64,
}

/// Description of one adapter, for `cifs-wgpu info` and errors.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    kernels: RefCell<HashMap<KernelKey, Rc<Kernel>>>,
    modules: RefCell<HashMap<Shader, wgpu::ShaderModule>>,
    bind_groups: RefCell<HashMap<(u64, Vec<u64>), wgpu::BindGroup>>,
    pool: Rc<RefCell<Pool>>,
    rec: RefCell<Recorder>,
    grad_enabled: Cell<bool>,
    next_id: Cell<u64>,
    stats: Cell<GpuStats>,
    timer: RefCell<Option<Timer>>,
    staging: RefCell<HashMap<u64, wgpu::Buffer>>,
}

/// Timestamp queries around recorded work: two slots, a resolve buffer and a readback buffer.
struct Timer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

/// How a measured duration was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamps written before and after the work, on the queue's timeline.
    GpuTimestamps,
    /// Host wall clock around submit and wait (adapters without timestamp queries).
    Wall,
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn summarize(index: usize, info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: device_type_name(info.device_type).to_string(),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // GL has no compute-capable storage-buffer guarantees we rely on; Vulkan/Metal/DX12 only.
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

fn enumerate() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
}

/// Every adapter wgpu can see, in the order `info` prints (and `CIFS_WGPU_ADAPTER=<index>` uses).
pub fn list_adapters() -> Vec<AdapterSummary> {
    enumerate().iter().enumerate().map(|(i, a)| summarize(i, &a.get_info())).collect()
}

/// Rank for the default choice: discrete > integrated > virtual > cpu > other.
fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn choose(adapters: Vec<wgpu::Adapter>, preference: Option<&str>) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(EngineError::NoAdapter(String::new()));
    }
    let Some(pref) = preference.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(adapters.into_iter().min_by_key(|a| rank(a.get_info().device_type)).unwrap());
    };
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    let pos = if let Ok(i) = pref.parse::<usize>() {
        (i < adapters.len()).then_some(i)
    } else {
        let p = pref.to_lowercase();
        adapters.iter().position(|a| {
            let info = a.get_info();
            device_type_name(info.device_type) == p || info.name.to_lowercase().contains(&p)
        })
    };
    match pos {
        Some(i) => Ok(adapters.into_iter().nth(i).unwrap()),
        None => Err(EngineError::AdapterNotFound { wanted: pref.to_string(), available: names.join(", ") }),
    }
}

/// Splits `n` work items of `wg` threads each into a grid no dimension of which exceeds the
/// backend limit. Kernels rebuild the linear index as `gid.x + gid.y * nwg.x * WG`.
pub fn grid_1d(n: u64, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as u64).max(1);
    if groups <= MAX_GRID_DIM as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GRID_DIM as u64);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

impl Gpu {
    /// Opens the adapter named by `CIFS_WGPU_ADAPTER`, or the best one.
    pub fn new() -> Result<Self> {
        let pref = std::env::var(ADAPTER_ENV).ok();
        Self::with_preference(pref.as_deref())
    }

    /// Opens the adapter matching `preference` (see [`ADAPTER_ENV`]), or the best one if `None`.
    pub fn with_preference(preference: Option<&str>) -> Result<Self> {
        let adapter = choose(enumerate(), preference)?;
        let info = adapter.get_info();
        let features = adapter.features();
        if !features.contains(wgpu::Features::IMMEDIATES) {
            return Err(EngineError::MissingFeature { adapter: info.name, feature: "IMMEDIATES (push constants)" });
        }
        let adapter_limits = adapter.limits();
        let mut limits = adapter_limits.clone();
        limits.max_immediate_size = adapter_limits.max_immediate_size.min(128);
        let wanted = features & (wgpu::Features::IMMEDIATES | wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cifs-wgpu"),
            required_features: wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| EngineError::RequestDevice(e.to_string()))?;
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features: wanted,
            kernels: RefCell::default(),
            modules: RefCell::default(),
            bind_groups: RefCell::default(),
            pool: Rc::default(),
            rec: RefCell::default(),
            grad_enabled: Cell::new(true),
            next_id: Cell::new(1),
            stats: Cell::new(GpuStats::default()),
            timer: RefCell::new(None),
            staging: RefCell::default(),
        })
    }

    pub fn summary(&self) -> AdapterSummary {
        summarize(usize::MAX, &self.info)
    }

    pub fn stats(&self) -> GpuStats {
        let mut s = self.stats.get();
        let pool = self.pool.borrow();
        s.buffer_allocations = pool.allocations;
        s.allocated_bytes = pool.allocated_bytes;
        s.dispatches = self.rec.borrow().dispatches;
        s
    }

    fn bump(&self, f: impl FnOnce(&mut GpuStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// A fresh id for tensors and buffers (identity for caches and the autodiff tape).
    pub fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    // ---- autodiff switch -------------------------------------------------------------------

    /// Whether ops record themselves for backward. Off inside [`Gpu::no_grad`].
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled.get()
    }

    /// Runs `f` with recording off: evaluation and attack bookkeeping that needs no gradients.
    pub fn no_grad<T>(&self, f: impl FnOnce() -> T) -> T {
        let prev = self.grad_enabled.replace(false);
        let out = f();
        self.grad_enabled.set(prev);
        out
    }

    // ---- buffers ---------------------------------------------------------------------------

    /// A storage buffer of at least `bytes` bytes from the pool; contents are undefined.
    pub fn alloc(&self, bytes: u64) -> Result<GpuBuffer> {
        let size = bytes.max(4).div_ceil(4) * 4;
        let limit = self.limits.max_storage_buffer_binding_size;
        if size > limit {
            return Err(EngineError::TooLarge { op: "alloc", bytes: size, limit });
        }
        let reused = self.pool.borrow_mut().free.get_mut(&size).and_then(Vec::pop);
        let (id, buf) = match reused {
            Some(b) => b,
            None => {
                let mut pool = self.pool.borrow_mut();
                pool.allocations += 1;
                pool.allocated_bytes += size;
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (self.fresh_id(), buf)
            }
        };
        Ok(GpuBuffer { buf: Some(buf), size, id, pool: self.pool.clone() })
    }

    /// Writes host bytes into `buf` at offset 0. Pending recorded work is submitted first, because
    /// a queue write lands before any command recorded but not yet submitted.
    pub fn write(&self, buf: &GpuBuffer, data: &[u8]) {
        self.flush();
        let len = data.len() as u64;
        assert!(len <= buf.size, "write of {len} bytes into a buffer of {}", buf.size);
        if len.is_multiple_of(4) {
            self.queue.write_buffer(buf.raw(), 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(len.div_ceil(4) as usize * 4, 0);
            self.queue.write_buffer(buf.raw(), 0, &padded);
        }
    }

    /// Records an encoder-level command (copy, timestamp) after closing the open compute pass.
    fn on_encoder(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut rec = self.rec.borrow_mut();
        rec.pass = None;
        f(rec.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default())));
    }

    /// Maps a MAP_READ buffer after the work submitted so far and returns its contents.
    fn map_read(&self, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
        let err = |e: &dyn std::fmt::Display| EngineError::Readback(e.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| err(&e))?;
        rx.recv().map_err(|e| err(&e))?.map_err(|e| err(&e))?;
        let out = buf.get_mapped_range(..).map_err(|e| err(&e))?.to_vec();
        buf.unmap();
        Ok(out)
    }

    /// Records a GPU-side copy of `bytes` bytes from `src` to `dst`.
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) {
        self.on_encoder(|enc| enc.copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, bytes.div_ceil(4) * 4));
    }

    /// Reads `bytes` bytes of `buf` back to the host. Submits pending work and waits for it.
    /// The staging buffers are kept per size (a read is synchronous, so one per size serves), so
    /// the per-step loss and logits readbacks of a training loop allocate nothing.
    pub fn read_bytes(&self, buf: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        let padded = bytes.max(4).div_ceil(4) * 4;
        let staging = self
            .staging
            .borrow_mut()
            .entry(padded)
            .or_insert_with(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: padded,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .clone();
        self.on_encoder(|enc| enc.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, padded));
        self.flush();
        let mut out = self.map_read(&staging)?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// Submits everything recorded so far (one command buffer). Cheap when nothing is pending.
    pub fn flush(&self) {
        let mut rec = self.rec.borrow_mut();
        rec.pass = None;
        if let Some(enc) = rec.encoder.take() {
            self.queue.submit([enc.finish()]);
            self.bump(|s| s.submits += 1);
        }
    }

    /// Submits pending work and blocks until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| EngineError::Gpu(e.to_string()))
    }

    // ---- timing ---------------------------------------------------------------------------

    fn timestamp(&self, index: u32) {
        let mut timer = self.timer.borrow_mut();
        let t = timer.get_or_insert_with(|| Timer {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("timer"), ty: wgpu::QueryType::Timestamp, count: 2 }),
            resolve: self.device.create_buffer(&wgpu::BufferDescriptor { label: Some("timer resolve"), size: 16, usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false }),
            readback: self.device.create_buffer(&wgpu::BufferDescriptor { label: Some("timer readback"), size: 16, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false }),
        });
        self.on_encoder(|enc| {
            enc.write_timestamp(&t.queries, index);
            if index == 1 {
                enc.resolve_query_set(&t.queries, 0..2, &t.resolve, 0);
                enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
            }
        });
    }

    /// Runs `f` (which records GPU work) and returns its result with the GPU time it took, in
    /// seconds: from timestamps written before and after the work where the adapter supports
    /// them inside encoders, else the wall clock around submit and wait. Waits for idle first.
    pub fn timed<T>(&self, f: impl FnOnce() -> T) -> Result<(T, f64, Clock)> {
        self.sync()?;
        let gpu_clock = self.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);
        if gpu_clock {
            self.timestamp(0);
        }
        let start = std::time::Instant::now();
        let out = f();
        if gpu_clock {
            self.timestamp(1);
        }
        self.sync()?;
        let wall = start.elapsed().as_secs_f64();
        if !gpu_clock {
            return Ok((out, wall, Clock::Wall));
        }
        let readback = self.timer.borrow().as_ref().expect("timer created by timestamp()").readback.clone();
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&readback)?);
        let ns = ticks[1].wrapping_sub(ticks[0]) as f64 * self.queue.get_timestamp_period() as f64;
        Ok((out, ns * 1e-9, Clock::GpuTimestamps))
    }

    // ---- kernels ---------------------------------------------------------------------------

    fn kernel(&self, key: &KernelKey) -> Rc<Kernel> {
        if let Some(k) = self.kernels.borrow().get(key) {
            return k.clone();
        }
        let mut modules = self.modules.borrow_mut();
        let module = modules.entry(key.shader).or_insert_with(|| {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key.shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(key.shader.source().into()),
            })
        });
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|(n, v)| (*n, *v as f64)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: None,
            module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let k = Rc::new(Kernel { pipeline, layout, id: self.fresh_id() });
        self.kernels.borrow_mut().insert(key.clone(), k.clone());
        self.bump(|s| s.pipelines += 1);
        k
    }

    /// Records one dispatch of `shader::entry` with `buffers` bound at 0..n (inputs first, then
    /// outputs, as the WGSL declares them), `params` as immediate data and `grid` workgroups.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        buffers: &[&GpuBuffer],
        params: &P,
        grid: [u32; 3],
    ) {
        let key = KernelKey { shader, entry, constants: constants.to_vec() };
        let kernel = self.kernel(&key);
        let bg_key = (kernel.id, buffers.iter().map(|b| b.id()).collect::<Vec<_>>());
        let mut bgs = self.bind_groups.borrow_mut();
        if bgs.len() >= MAX_CACHED_BIND_GROUPS {
            bgs.clear();
        }
        if !bgs.contains_key(&bg_key) {
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.raw().as_entire_binding() })
                .collect();
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(entry),
                layout: &kernel.layout,
                entries: &entries,
            });
            bgs.insert(bg_key.clone(), bg);
            self.bump(|s| s.bind_groups_created += 1);
        }
        let bg = &bgs[&bg_key];
        let mut rec = self.rec.borrow_mut();
        if rec.pass.is_none() {
            let enc = rec.encoder.get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
            let pass = enc.begin_compute_pass(&Default::default()).forget_lifetime();
            rec.pass = Some(pass);
        }
        rec.dispatches += 1;
        let pass = rec.pass.as_mut().unwrap();
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, bg, &[]);
        let bytes = bytemuck::bytes_of(params);
        if !bytes.is_empty() {
            pass.set_immediates(0, bytes);
        }
        if grid.iter().all(|&g| g > 0) {
            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        }
    }

    /// Number of cached bind groups; they reference pooled buffers, which live as long as the pool.
    pub fn cached_bind_groups(&self) -> usize {
        self.bind_groups.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::grid_1d;

    #[test]
    fn grid_splits_large_counts_within_the_dimension_limit() {
        assert_eq!(grid_1d(1, 256), [1, 1, 1]);
        assert_eq!(grid_1d(256 * 65535, 256), [65535, 1, 1]);
        let [x, y, _] = grid_1d(256 * 65536 + 1, 256);
        assert!(x <= 65535 && y >= 2 && x as u64 * y as u64 * 256 > 256 * 65536);
    }
}
