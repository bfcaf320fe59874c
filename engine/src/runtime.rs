//! The runtime every op receives as `&Runtime`: an open [`Gpu`] plus the buffer pool, the kernel
//! cache and the command recorder, each its own type. Built once per process (tests build their
//! own), it is the only way work reaches the device.
//!
//! Kernel parameters (shapes, scalars) travel as immediate data (push constants), so a dispatch
//! allocates nothing; bind groups and pipelines are cached, buffers pooled, and recorded work is
//! submitted only when the host needs a result.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::gpu::Gpu;
use crate::grid::Work;
use crate::kernels::Shader;
use crate::options::{KernelOptions, RuntimeOptions, Tuning};
use crate::pipelines::KernelCache;
use crate::pool::{BufferPool, GpuBuffer};
use crate::precision::Precision;
use crate::recorder::Recorder;
use crate::tensor::Tensor;
use crate::timer::{Clock, Timer};
use crate::tune::{Choice, Tuner};

/// Counters for tests and benchmarks: proof that a warm step allocates nothing, and how many
/// dispatches and submits a step costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    pub buffer_allocations: u64,
    pub allocated_bytes: u64,
    pub pipelines: u64,
    pub bind_groups_created: u64,
    pub submits: u64,
    pub dispatches: u64,
}

/// An open device and how its kernels compute. The settings ([`KernelOptions`], the tuning mode)
/// are fixed when it is made; what changes inside is state: buffers, compiled kernels, recorded
/// work, tuned choices, and the scopes [`Runtime::weights_frozen`] and
/// [`Runtime::with_replica_sum`] open and close. [`Runtime::with_kernels`] makes another runtime
/// on the same device, sharing all of that state, with other kernel settings.
pub struct Runtime {
    pub(crate) gpu: Rc<Gpu>,
    pool: Rc<BufferPool>,
    /// Compiled with this runtime's `zero_init_workgroup_memory`: one cache per runtime.
    kernels: KernelCache,
    recorder: Rc<RefCell<Recorder>>,
    timer: Rc<RefCell<Option<Timer>>>,
    /// A (1,) tensor holding 1.0, filled once: the seed of every scalar backward.
    one: RefCell<Option<Tensor>>,
    /// Tile configurations of the GEMM kernels: the tuning mode fixed at opening, the choices
    /// made so far and their cache file (`crate::tune`).
    pub(crate) tuner: Rc<RefCell<Tuner>>,
    /// Told of each shape as it is tuned (the CLI's progress display); it changes no result.
    pub(crate) tune_observer: Rc<RefCell<Option<TuneObserver>>>,
    /// Inside [`Runtime::weights_frozen`]: layouts derived from weights (the backward-data
    /// pass's flipped weights), by (weight buffer, variant), each with the weight it came from.
    derived: Rc<RefCell<Option<Derived>>>,
    /// Inside [`Runtime::with_replica_sum`] (a data-parallel run with synchronised batch norm):
    /// the sum over the replicas.
    replica_sum: Rc<RefCell<Option<crate::ops::batchnorm_sync::ReplicaSum>>>,
    /// The kernel settings, `precision` resolved (never `Auto`) and `subgroup_reductions` on only
    /// where the adapter has subgroup operations.
    settings: KernelOptions,
}

type Derived = std::collections::HashMap<(u64, u64), (Tensor, Tensor)>;

impl Runtime {
    /// A runtime on the adapter `options` name (or the best one), with its tuning and kernel
    /// settings. With [`Tuning::Tune`], the warnings about the cache file are in
    /// [`Runtime::tuning`].
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let gpu = Rc::new(Gpu::open(options.adapter.as_deref(), options.limits)?);
        let device = device_key(&gpu);
        let tuner = match &options.tuning {
            Tuning::Heuristic => Tuner::heuristic(&device),
            Tuning::Tune { cache } => Tuner::with_cache(&device, cache.path(&gpu.summary().name)),
        };
        let shared = Runtime {
            gpu,
            pool: Rc::default(),
            kernels: KernelCache::default(),
            recorder: Rc::default(),
            timer: Rc::default(),
            one: RefCell::new(None),
            tuner: Rc::new(RefCell::new(tuner)),
            tune_observer: Rc::default(),
            derived: Rc::default(),
            replica_sum: Rc::default(),
            settings: KernelOptions::default(),
        };
        Ok(shared.with_kernels(options.kernels))
    }

    /// A runtime on this one's device with other kernel settings: tensors pass freely between
    /// the two, their work goes into one command stream, and they share the buffer pool, the
    /// tuned choices and the open scopes; only the kernels each compiles, and which run, follow
    /// its own settings. Tests compare settings this way within one computation (a forward in
    /// f32, its backward in f16; one model under each tile configuration).
    pub fn with_kernels(&self, settings: KernelOptions) -> Runtime {
        let kernels = KernelCache::default();
        kernels.set_zero_init(settings.zero_init_workgroup_memory);
        let settings = KernelOptions {
            precision: settings.precision.resolve(&self.gpu),
            subgroup_reductions: settings.subgroup_reductions && self.gpu.has_subgroups(),
            ..settings
        };
        Runtime {
            gpu: self.gpu.clone(),
            pool: self.pool.clone(),
            kernels,
            recorder: self.recorder.clone(),
            timer: self.timer.clone(),
            one: RefCell::new(None),
            tuner: self.tuner.clone(),
            tune_observer: self.tune_observer.clone(),
            derived: self.derived.clone(),
            replica_sum: self.replica_sum.clone(),
            settings,
        }
    }

    /// The kernel settings this runtime runs with (precision resolved; subgroup reductions on only
    /// where the adapter has them).
    pub fn kernels(&self) -> KernelOptions {
        self.settings
    }

    /// The adapter this runtime runs on.
    pub fn adapter(&self) -> crate::gpu::AdapterSummary {
        self.gpu.summary()
    }

    /// The limits of the open device.
    pub fn limits(&self) -> crate::gpu::DeviceLimits {
        self.gpu.device_limits()
    }

    /// Runs `f` with `sum` installed: the train-mode batch norms inside it normalise over every
    /// replica's part of the batch (`ops::batchnorm_sync`). Removed when `f` returns or unwinds.
    pub fn with_replica_sum<T>(&self, sum: crate::ops::batchnorm_sync::ReplicaSum, f: impl FnOnce() -> T) -> T {
        struct Scope<'a>(&'a Runtime, Option<crate::ops::batchnorm_sync::ReplicaSum>);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                *self.0.replica_sum.borrow_mut() = self.1.take();
            }
        }
        let previous = self.replica_sum.borrow_mut().replace(sum);
        let _restore = Scope(self, previous);
        f()
    }

    /// The replica sum installed by [`Runtime::with_replica_sum`], if any.
    pub fn replica_sum(&self) -> Option<crate::ops::batchnorm_sync::ReplicaSum> {
        self.replica_sum.borrow().clone()
    }

    /// Whether the device has subgroup operations (wgpu's SUBGROUP feature).
    pub fn has_subgroups(&self) -> bool {
        self.gpu.has_subgroups()
    }

    /// Whether batch norm's sums run on subgroup operations (`info` and the bench report it).
    pub fn uses_subgroup_reductions(&self) -> bool {
        self.settings.subgroup_reductions
    }

    /// The GEMMs' precision: `F32` or `F16`.
    pub fn precision(&self) -> Precision {
        self.settings.precision
    }

    /// What the adapter offers the GEMMs' precision (see [`crate::precision::PrecisionSupport`]).
    pub fn precision_support(&self) -> crate::precision::PrecisionSupport {
        crate::precision::support(&self.gpu)
    }

    /// Runs `f` with the promise that no weight is overwritten in place while it runs (no tensor
    /// whose storage serves as a convolution's weights: other tensors may change, new ones be
    /// made): an attack's iterations and the training pass after them, which run the same
    /// weights forward and backward many times before the optimizer step. Layouts derived from a
    /// weight (the flipped weights of the input-gradient convolution) are then made once per
    /// weight and reused, instead of once per backward pass; they are dropped when `f` returns
    /// (or unwinds). Nests.
    pub fn weights_frozen<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Scope<'a>(&'a Runtime, bool);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.derived.borrow_mut().take();
                }
            }
        }
        let outermost = self.derived.borrow().is_none();
        if outermost {
            *self.derived.borrow_mut() = Some(Derived::new());
        }
        let _scope = Scope(self, outermost);
        f()
    }

    /// `make()`, or inside [`Runtime::weights_frozen`] the tensor it made for the same weight
    /// storage and `variant` earlier in the scope (a parameter and its detached view share
    /// storage). The weight is kept alive with it, so its buffer (the key) cannot go back to the
    /// pool and serve another tensor while the scope lasts.
    pub(crate) fn derived_from(&self, weight: &Tensor, variant: u64, make: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        let key = (weight.buffer().id(), variant);
        if let Some(hit) = self.derived.borrow().as_ref().and_then(|d| d.get(&key)) {
            return Ok(hit.1.clone());
        }
        let made = make()?;
        if let Some(d) = self.derived.borrow_mut().as_mut() {
            d.insert(key, (weight.clone(), made.clone()));
        }
        Ok(made)
    }

    pub fn stats(&self) -> RuntimeStats {
        let (p, k, r) = (self.pool.stats(), self.kernels.stats(), self.recorder.borrow().stats());
        RuntimeStats {
            buffer_allocations: p.allocations,
            allocated_bytes: p.allocated_bytes,
            pipelines: k.pipelines,
            bind_groups_created: k.bind_groups_created,
            submits: r.submits,
            dispatches: r.dispatches,
        }
    }

    /// Dispatches so far per kernel entry point (where a step's dispatches go).
    pub fn dispatches_by_entry(&self) -> std::collections::HashMap<&'static str, u64> {
        self.recorder.borrow().dispatches_by_entry()
    }

    /// A (1,) tensor holding 1.0, filled on the GPU once and shared: never write into it.
    pub(crate) fn one(&self) -> Result<Tensor> {
        if let Some(t) = self.one.borrow().as_ref() {
            return Ok(t.clone());
        }
        let t = Tensor::empty(self, &[1])?;
        crate::ops::arith::fill_into(self, &t, 1.0)?;
        *self.one.borrow_mut() = Some(t.clone());
        Ok(t)
    }

    // ---- buffers ---------------------------------------------------------------------------

    /// A storage buffer of at least `bytes` bytes from the pool; contents are undefined.
    pub(crate) fn alloc(&self, bytes: u64) -> Result<GpuBuffer> {
        self.pool.alloc(&self.gpu.device, bytes, self.gpu.limits.max_storage_buffer_binding_size)
    }

    /// Writes host bytes into `buf` at offset 0. Pending recorded work is submitted first, because
    /// a queue write lands before any command recorded but not yet submitted.
    pub(crate) fn write(&self, buf: &GpuBuffer, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        if len > buf.size {
            return Err(EngineError::WriteTooLong { bytes: len, size: buf.size });
        }
        self.flush();
        if len.is_multiple_of(4) {
            self.gpu.queue.write_buffer(buf.raw(), 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(len.div_ceil(4) as usize * 4, 0);
            self.gpu.queue.write_buffer(buf.raw(), 0, &padded);
        }
        Ok(())
    }

    /// Records a GPU-side copy of `bytes` bytes from `src` to `dst` ([`Tensor::copy_from`] checks
    /// the sizes).
    pub(crate) fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) {
        let mut rec = self.recorder.borrow_mut();
        rec.encoder(&self.gpu.device).copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, bytes.div_ceil(4) * 4);
    }

    /// Reads `bytes` bytes of `buf` back to the host. Submits pending work and waits for it.
    pub(crate) fn read_bytes(&self, buf: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        let padded = bytes.max(4).div_ceil(4) * 4;
        let staging = {
            let mut rec = self.recorder.borrow_mut();
            let staging = rec.staging(&self.gpu.device, padded);
            rec.encoder(&self.gpu.device).copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, padded);
            rec.flush(&self.gpu.queue);
            staging
        };
        let mut out = self.map_read(&staging, None)?;
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// Starts reading each tensor back without waiting: records the copies, submits everything
    /// recorded so far, and returns at once. Work recorded afterwards runs on the GPU while the
    /// host has not yet asked for these results, so a training loop can read step i's loss while
    /// step i+1 runs ([`Runtime::finish_read_f32`] waits for this submission only).
    pub fn read_later(&self, tensors: &[&Tensor]) -> Result<Vec<PendingRead>> {
        let mut rec = self.recorder.borrow_mut();
        let mut staged = Vec::new();
        for t in tensors {
            let (buf, bytes) = (t.buffer(), t.numel() as u64 * 4);
            let size = bytes.max(4).div_ceil(4) * 4;
            let staging = rec.take_spare(&self.gpu.device, size);
            rec.encoder(&self.gpu.device).copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, size);
            staged.push((staging, size, bytes));
        }
        let submission = rec.flush(&self.gpu.queue);
        Ok(staged.into_iter().map(|(staging, size, bytes)| PendingRead { staging, size, bytes, submission: submission.clone() }).collect())
    }

    /// The f32 values of a readback started by [`Runtime::read_later`], once its submission is
    /// done.
    pub fn finish_read_f32(&self, p: PendingRead) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.finish_read(p)?))
    }

    fn finish_read(&self, p: PendingRead) -> Result<Vec<u8>> {
        let mut out = self.map_read(&p.staging, p.submission)?;
        out.truncate(p.bytes as usize);
        self.recorder.borrow_mut().return_spare(p.size, p.staging);
        Ok(out)
    }

    /// Maps a MAP_READ buffer once `submission` (default: all work submitted so far) is done and
    /// returns its contents.
    fn map_read(&self, buf: &wgpu::Buffer, submission: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
        let err = |e: &dyn std::fmt::Display| EngineError::Readback(e.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu.device.poll(wgpu::PollType::Wait { submission_index: submission, timeout: None }).map_err(|e| err(&e))?;
        rx.recv().map_err(|e| err(&e))?.map_err(|e| err(&e))?;
        let out = buf.get_mapped_range(..).map_err(|e| err(&e))?.to_vec();
        buf.unmap();
        Ok(out)
    }

    /// Submits everything recorded so far (one command buffer). Cheap when nothing is pending.
    pub fn flush(&self) {
        self.recorder.borrow_mut().flush(&self.gpu.queue);
    }

    /// Submits pending work and blocks until the GPU has finished it.
    pub fn sync(&self) -> Result<()> {
        self.flush();
        self.gpu.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| EngineError::Gpu(e.to_string()))
    }

    // ---- timing ---------------------------------------------------------------------------

    fn stamp(&self, index: u32) {
        let mut timer = self.timer.borrow_mut();
        let t = timer.get_or_insert_with(|| Timer::new(&self.gpu.device));
        t.stamp(self.recorder.borrow_mut().encoder(&self.gpu.device), index);
    }

    /// Runs `f` (which records GPU work) and returns its result with the GPU time it took, in
    /// seconds: from timestamps written before and after the work where the adapter supports
    /// them inside encoders, else the wall clock around submit and wait. Waits for idle first.
    pub fn timed<T>(&self, f: impl FnOnce() -> T) -> Result<(T, f64, Clock)> {
        let (out, timing) = self.timed_both(f)?;
        Ok((out, timing.gpu_s.unwrap_or(timing.wall_s), timing.clock()))
    }

    /// As [`Runtime::timed`], reporting both clocks: the wall clock from the start of recording
    /// to the end of the GPU work (host recording and submission included), and the GPU
    /// timestamps' duration where the adapter has them.
    pub fn timed_both<T>(&self, f: impl FnOnce() -> T) -> Result<(T, Timing)> {
        self.sync()?;
        let gpu_clock = self.gpu.has_timestamps();
        if gpu_clock {
            self.stamp(0);
        }
        let start = std::time::Instant::now();
        let out = f();
        if gpu_clock {
            self.stamp(1);
        }
        self.sync()?;
        let wall_s = start.elapsed().as_secs_f64();
        if !gpu_clock {
            return Ok((out, Timing { wall_s, gpu_s: None }));
        }
        let readback = self.timer.borrow().as_ref().expect("timer created by stamp()").readback.clone();
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&readback, None)?);
        let ns = ticks[1].wrapping_sub(ticks[0]) as f64 * self.gpu.queue.get_timestamp_period() as f64;
        Ok((out, Timing { wall_s, gpu_s: Some(ns * 1e-9) }))
    }

    // ---- kernels ---------------------------------------------------------------------------

    /// Records one dispatch of `shader::entry` with `buffers` bound at 0..n (inputs first, then
    /// outputs, as the WGSL declares them) and `params` as immediate data.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        buffers: &[&GpuBuffer],
        params: &P,
        work: Work,
    ) -> Result<()> {
        self.dispatch_with(shader, entry, &[], buffers, params, work)
    }

    /// As [`Runtime::dispatch`], for a kernel specialised by pipeline-overridable `constants`.
    pub(crate) fn dispatch_with<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, u32)],
        buffers: &[&GpuBuffer],
        params: &P,
        work: Work,
    ) -> Result<()> {
        let device = &self.gpu.device;
        let kernel = self.kernels.kernel(device, shader, entry, constants)?;
        let grid = work.grid(entry, kernel.workgroup_size)?;
        self.kernels.with_bind_group(device, &kernel, buffers, |group| {
            let mut rec = self.recorder.borrow_mut();
            let pass = rec.pass_for_dispatch(device, entry);
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, group, &[]);
            let bytes = bytemuck::bytes_of(params);
            if !bytes.is_empty() {
                pass.set_immediates(0, bytes);
            }
            if grid.iter().all(|&g| g > 0) {
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        });
        Ok(())
    }
}

pub(crate) type TuneObserver = Box<dyn Fn(&str, &Choice)>;

/// What a tuning cache is valid for: the adapter and its driver.
pub(crate) fn device_key(gpu: &Gpu) -> String {
    let s = gpu.summary();
    format!("{} ({}) / {} {}", s.name, s.backend, s.driver, s.driver_info)
}

/// A readback in flight (see [`Runtime::read_later`]).
pub struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    bytes: u64,
    submission: Option<wgpu::SubmissionIndex>,
}

/// Both clocks of one timed piece of work, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub wall_s: f64,
    pub gpu_s: Option<f64>,
}

impl Timing {
    pub fn clock(&self) -> Clock {
        if self.gpu_s.is_some() {
            Clock::GpuTimestamps
        } else {
            Clock::Wall
        }
    }
}
