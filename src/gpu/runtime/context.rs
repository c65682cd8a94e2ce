//! Choosing an adapter and opening a device with the limits crosspool needs.

use super::buffer::{Binding, GpuBuffer};
use super::cache::{ContextCaches, Counters, GpuCounters, Kernel};
use super::plan::BandLimits;
use super::shaders::Shader;
use crate::error::{Error, Result};
use crate::tune::Autotune;
use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `m`, taking over the data if another thread panicked while holding it (the caches
/// hold nothing a half-done update could make unsafe to use).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

crate::choice! {
    /// Which wgpu backend to use.
    pub enum BackendChoice: default Auto {
        /// The best adapter on any native backend (Vulkan, Metal, DX12 preferred over GL).
        Auto = "auto",
        /// Vulkan (including software Vulkan: lavapipe).
        Vulkan = "vulkan",
        /// Metal (macOS, iOS).
        Metal = "metal",
        /// Direct3D 12 (Windows).
        Dx12 = "dx12",
        /// OpenGL / GLES.
        Gl = "gl",
    }
}

impl BackendChoice {
    fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Auto => wgpu::Backends::PRIMARY | wgpu::Backends::GL,
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }

    /// Backend groups to enumerate, in order, stopping at the first that has an adapter.
    fn probe_order(self) -> Vec<wgpu::Backends> {
        match self {
            BackendChoice::Auto => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
            other => vec![other.backends()],
        }
    }

    fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Metal => "metal",
            BackendChoice::Dx12 => "dx12",
            BackendChoice::Gl => "gl",
        }
    }
}

/// How to pick and configure the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backend filter.
    pub backend: BackendChoice,
    /// The adapter to use: its index in [`GpuContext::list_adapters`] (`crosspool info
    /// --list`), or a case-insensitive substring of its name (e.g. "llvmpipe", "nvidia").
    pub adapter: Option<String>,
    /// Cap the bytes bound to one storage binding below the adapter's limit. Kernels split
    /// their work to fit whatever cap is in force; tests lower it to exercise that splitting.
    pub max_binding_bytes: Option<u64>,
    /// Compile shaders without wgpu's injected runtime checks (index clamping, integer
    /// division guards, loop bounding). Every kernel checks its own bounds and is tested
    /// against the reference, but a kernel bug would then be undefined behaviour on the GPU
    /// rather than a clamped read, so this is off unless asked for.
    pub unchecked_shaders: bool,
    /// Leave cooperative matrices off even where the adapter has them
    /// (`CROSSPOOL_NO_COOPERATIVE_MATRIX=1`): f16 then runs the scalar f16 kernels.
    pub no_cooperative_matrix: bool,
    /// Whether convolution tiles are chosen by timing (`CROSSPOOL_AUTOTUNE`).
    pub autotune: Autotune,
    /// Where the timed choices are kept (`CROSSPOOL_AUTOTUNE_CACHE`; default
    /// [`crate::tune::default_cache_path`]).
    pub autotune_cache: Option<std::path::PathBuf>,
}

impl GpuOptions {
    /// Options from `CROSSPOOL_BACKEND` (auto|vulkan|metal|dx12|gl) and `CROSSPOOL_ADAPTER`,
    /// the same variables the CLI reads; unset variables leave the defaults.
    pub fn from_env() -> Result<Self> {
        use crate::choice::Choice;
        let backend = match std::env::var("CROSSPOOL_BACKEND") {
            Ok(v) if !v.is_empty() => BackendChoice::parse(&v, true).ok_or_else(|| {
                Error::Config(format!(
                    "CROSSPOOL_BACKEND={v} is not one of {}",
                    BackendChoice::names()
                ))
            })?,
            _ => BackendChoice::Auto,
        };
        Ok(GpuOptions {
            backend,
            adapter: std::env::var("CROSSPOOL_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            max_binding_bytes: None,
            unchecked_shaders: std::env::var("CROSSPOOL_UNCHECKED_SHADERS").is_ok_and(|v| v == "1"),
            no_cooperative_matrix: std::env::var("CROSSPOOL_NO_COOPERATIVE_MATRIX")
                .is_ok_and(|v| v == "1"),
            autotune: match std::env::var("CROSSPOOL_AUTOTUNE") {
                Ok(v) if !v.is_empty() => Autotune::parse(&v, true).ok_or_else(|| {
                    Error::Config(format!(
                        "CROSSPOOL_AUTOTUNE={v} is not one of {}",
                        Autotune::names()
                    ))
                })?,
                _ => Autotune::Auto,
            },
            autotune_cache: std::env::var_os("CROSSPOOL_AUTOTUNE_CACHE")
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from),
        })
    }
}

/// An adapter as `crosspool info --list` shows it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Its index, which `--adapter` accepts.
    pub index: usize,
    /// Name, backend, type and driver.
    pub info: wgpu::AdapterInfo,
}

/// An open device with its queue and what we know about the adapter.
pub struct GpuContext {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Adapter name, backend, driver.
    pub info: wgpu::AdapterInfo,
    /// Features the adapter offers (not all are enabled on the device).
    pub adapter_features: wgpu::Features,
    /// Limits in force on the device (the adapter's own, not WebGPU's defaults).
    pub limits: wgpu::Limits,
    binding_cap: u64,
    pub(crate) unchecked_shaders: bool,
    /// Whether the device has cooperative matrices enabled in the one configuration the
    /// runtime enables (see [`coop_matrix_fits`]).
    pub(crate) cooperative_matrix: bool,
    /// Where timed tile choices are kept, if convolution tiles are chosen by timing here.
    pub(crate) autotune: Option<Option<std::path::PathBuf>>,
    pub(crate) caches: ContextCaches,
}

/// What to tell a user who has no adapter at all.
const INSTALL_HINT: &str = "Install a GPU driver, or software Vulkan where there is no GPU: \
    `sudo apt-get install mesa-vulkan-drivers` on Debian/Ubuntu (the package is \
    `mesa-vulkan-drivers` on Fedora and `vulkan-swrast` on Arch)";

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    // GL lacks some compute features and is slower for the same hardware.
    u8::from(b == wgpu::Backend::Gl)
}

impl GpuContext {
    /// Opens the best adapter matching `opts`, requesting the adapter's full limits
    /// (WebGPU's defaults would cap buffers at 256 MiB and bindings at 128 MiB).
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(opts))
    }

    /// The adapters `backend` reaches, in the order wgpu enumerates them: the order of
    /// `crosspool info --list`, whose indices `--adapter` accepts. For `auto`, GL is only a
    /// fallback: initialising EGL is slow and noisy where Vulkan works, so each group gets its
    /// own instance, created only if needed.
    async fn enumerate(backend: BackendChoice) -> Vec<wgpu::Adapter> {
        for group in backend.probe_order() {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = group;
            let adapters = wgpu::Instance::new(desc).enumerate_adapters(group).await;
            if !adapters.is_empty() {
                return adapters;
            }
        }
        Vec::new()
    }

    /// Every adapter `backend` reaches, with its index for `--adapter`.
    pub fn list_adapters(backend: BackendChoice) -> Vec<AdapterSummary> {
        pollster::block_on(Self::enumerate(backend))
            .iter()
            .enumerate()
            .map(|(index, a)| AdapterSummary {
                index,
                info: a.get_info(),
            })
            .collect()
    }

    async fn new_async(opts: &GpuOptions) -> Result<Self> {
        let adapters = Self::enumerate(opts.backend).await;
        let seen: Vec<String> = adapters
            .iter()
            .enumerate()
            .map(|(n, a)| {
                let i = a.get_info();
                format!("{n}: {} ({:?})", i.name, i.backend)
            })
            .collect();
        let wanted = opts.adapter.as_ref().map(|s| s.to_lowercase());
        let index = wanted.as_ref().and_then(|w| w.trim().parse::<usize>().ok());
        let adapter = adapters
            .into_iter()
            .enumerate()
            .filter(|(n, a)| match (&wanted, index) {
                (_, Some(i)) => *n == i,
                (Some(w), None) => a.get_info().name.to_lowercase().contains(w),
                (None, None) => true,
            })
            .map(|(_, a)| a)
            .min_by_key(|a| {
                let i = a.get_info();
                (type_rank(i.device_type), backend_rank(i.backend))
            })
            .ok_or_else(|| Error::NoAdapter {
                backend: opts.backend.name().to_string(),
                detail: match (&wanted, index) {
                    _ if seen.is_empty() => format!(". {INSTALL_HINT}"),
                    (_, Some(i)) => format!(" with index {i} (found: {})", seen.join(", ")),
                    (Some(w), None) => {
                        format!(" with a name containing '{w}' (found: {})", seen.join(", "))
                    }
                    (None, None) => format!(" (found: {})", seen.join(", ")),
                },
            })?;
        let info = adapter.get_info();
        let adapter_features = adapter.features();
        let coop = coop_matrix_fits(&adapter, &info) && !opts.no_cooperative_matrix;
        let mut required = adapter_features & wgpu::Features::SHADER_F16;
        if coop {
            required |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("crosspool"),
                // f16 storage where the adapter has it: `--precision f16` needs it, and
                // enabling it changes nothing for f32 kernels; cooperative matrices where
                // `conv2d_coop.wgsl` can run.
                required_features: required,
                required_limits: limits.clone(),
                experimental_features: if coop {
                    // SAFETY: wgpu marks cooperative matrices experimental: its validation does
                    // not check a shader's matrix configuration against the device's. Ours
                    // uses only the configuration `coop_matrix_fits` found listed, and its
                    // results are compared with the scalar f16 kernel's on this device before
                    // any layer uses it (`Conv2dKernel`).
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|reason| Error::RequestDevice {
                adapter: info.name.clone(),
                reason,
            })?;
        let autotune = match opts.autotune {
            Autotune::Off => None,
            Autotune::Auto if info.device_type == wgpu::DeviceType::Cpu => None,
            Autotune::Auto | Autotune::On => Some(
                opts.autotune_cache
                    .clone()
                    .or_else(crate::tune::default_cache_path),
            ),
        };
        let adapter_cap = limits.max_storage_buffer_binding_size;
        let binding_cap = opts
            .max_binding_bytes
            .map_or(adapter_cap, |c| c.min(adapter_cap))
            .min(limits.max_buffer_size);
        Ok(GpuContext {
            device,
            queue,
            info,
            adapter_features,
            limits,
            binding_cap,
            unchecked_shaders: opts.unchecked_shaders,
            cooperative_matrix: coop,
            autotune,
            caches: ContextCaches::default(),
        })
    }

    /// Whether the device runs shaders with f16 types (`SHADER_F16`).
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Fails, naming `what`, unless the device has f16 shaders.
    pub fn require_f16(&self, what: &str) -> Result<()> {
        if self.has_f16() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{what} need the shader-f16 feature, which {} ({:?}) lacks; use --precision f32",
            self.info.name, self.info.backend
        )))
    }

    /// Largest number of bytes one storage binding may cover, a multiple of 4.
    pub fn binding_cap(&self) -> u64 {
        self.binding_cap & !3
    }

    /// Required alignment in bytes of a storage binding's offset.
    pub fn binding_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    /// The binding limits a band or chunk planner splits work by; `max_out_rows` caps the flat
    /// output rows of one dispatch (0 where the planner does not split by rows).
    pub fn band_limits(&self, max_out_rows: usize) -> BandLimits {
        BandLimits {
            binding_cap: self.binding_cap(),
            align: self.binding_alignment(),
            max_out_rows,
        }
    }

    /// Workgroups allowed along one dispatch dimension.
    pub fn max_workgroups(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// One-line description: adapter name, backend and type.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// Waits for the submission `index` (and the work before it on the queue), not for
    /// later submissions from other threads: a batch's readback need not wait for the next
    /// batch another thread has already submitted.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex, during: &str) -> Result<()> {
        self.poll_until(Some(index), during)
    }

    /// Waits for all submitted work and reports any error the device raised.
    pub fn wait(&self, during: &str) -> Result<()> {
        self.poll_until(None, during)
    }

    /// Blocks until `submission` (or, without one, the latest) has completed.
    fn poll_until(&self, submission: Option<wgpu::SubmissionIndex>, during: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: submission,
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                during: during.to_string(),
                message: e.to_string(),
            })
    }
}

impl GpuContext {
    /// The compiled kernel for `entry` of `shader`, compiled on first use and shared after.
    pub fn kernel(&self, shader: &Shader, entry: &'static str) -> Result<Kernel> {
        let id = (shader.name, entry);
        if let Some(k) = lock(&self.caches.pipelines).kernels.get(&id) {
            return Ok(k.clone());
        }
        // Compiled outside the lock: compilation is slow and other kernels need not wait.
        let kernel = Kernel {
            pipeline: shader.compile(self, entry)?,
            id,
        };
        Counters::bump(&self.caches.counters.pipelines);
        Ok(lock(&self.caches.pipelines)
            .kernels
            .entry(id)
            .or_insert(kernel)
            .clone())
    }

    /// The state of type `T` that kernels keep per device (a verdict checked once, say),
    /// made with `T::default()` on first use: kernel state lives with its kernel family, and
    /// the context only holds it for the device's life.
    pub(crate) fn kernel_state<T: Default + Send + Sync + 'static>(&self) -> std::sync::Arc<T> {
        let mut held = lock(&self.caches.kernel_state);
        let any = held
            .entry(std::any::TypeId::of::<T>())
            .or_insert_with(|| std::sync::Arc::new(T::default()))
            .clone();
        any.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("kernel state is keyed by its type"))
    }

    /// How many pipelines, bind groups and buffers this context has created so far.
    pub fn counters(&self) -> GpuCounters {
        self.caches.counters.snapshot()
    }

    /// Bind groups cached now.
    pub fn cached_bind_groups(&self) -> usize {
        lock(&self.caches.bind_groups).len()
    }

    /// The bind group for a dispatch of `kernel` with `params` and `storage`, reused when the
    /// same dispatch was recorded before.
    pub(crate) fn bind_group(
        &self,
        kernel: &Kernel,
        params: &[u8],
        storage: &[Binding<'_>],
    ) -> wgpu::BindGroup {
        lock(&self.caches.bind_groups).get(
            &self.device,
            &self.caches.counters,
            kernel,
            params,
            storage,
        )
    }

    /// Gives `buffer` an identity on this context, so that bind groups can be cached for it.
    pub(crate) fn track(&self, buffer: wgpu::Buffer) -> GpuBuffer {
        Counters::bump(&self.caches.counters.storage_buffers);
        let id = self
            .caches
            .next_buffer_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        GpuBuffer::new(buffer, id, Arc::downgrade(&self.caches.bind_groups))
    }

    /// A mappable buffer of at least `bytes` for a download, reused when one is free.
    pub(crate) fn staging(&self, bytes: u64) -> Result<wgpu::Buffer> {
        if let Some(b) = lock(&self.caches.staging).take(bytes) {
            return Ok(b);
        }
        let b = self.checked("allocating download buffer", || {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("download"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        })?;
        Counters::bump(&self.caches.counters.staging_buffers);
        Ok(b)
    }

    /// Returns an unmapped staging buffer for reuse.
    pub(crate) fn return_staging(&self, b: wgpu::Buffer) {
        lock(&self.caches.staging).give(b);
    }
}

/// The one cooperative-matrix configuration the runtime enables: 16 x 16 x 16 products of
/// f16 into f32, in subgroups of exactly this many invocations.
pub const COOPERATIVE_SUBGROUP: u32 = 32;

/// Whether `adapter` has cooperative matrices in the configuration the runtime enables:
/// cooperative matrices and f16, subgroups of exactly [`COOPERATIVE_SUBGROUP`] invocations,
/// and the 16 x 16 x 16 f16 x f16 -> f32 configuration listed (wgpu does not check a
/// shader's configuration against the list).
fn coop_matrix_fits(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> bool {
    let f = adapter.features();
    use wgpu::CooperativeScalarType as T;
    f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
        && info.subgroup_min_size == COOPERATIVE_SUBGROUP
        && info.subgroup_max_size == COOPERATIVE_SUBGROUP
        && adapter.cooperative_matrix_properties().iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                && p.ab_type == T::F16
                && p.cr_type == T::F32
        })
}
