//! What a context builds once and reuses: compute pipelines by (shader, entry point), bind
//! groups (each with its uniform block) by what they bind, and download staging buffers.
//!
//! A stream of equal-sized batches records the same dispatches with the same parameters on
//! the same buffers every time, so after the first batch nothing is created per dispatch.

use super::buffer::Binding;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bind groups kept at most; the least recently used go first beyond that. Entries also go
/// as soon as a buffer they bind is dropped, so this only bounds unusual workloads.
const MAX_BIND_GROUPS: usize = 4096;

/// Staging buffers kept for reuse between downloads.
const MAX_STAGING: usize = 4;

/// A compiled kernel: one entry point of one shader, shared by every user on the context.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    /// (shader file, entry point).
    pub(crate) id: KernelId,
}

/// (shader file, entry point).
pub(crate) type KernelId = (&'static str, &'static str);

/// How many GPU objects the context has created, for checking that steady-state work
/// creates none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Compute pipelines compiled.
    pub pipelines: u64,
    /// Bind groups created (each with one uniform buffer).
    pub bind_groups: u64,
    /// Storage buffers allocated.
    pub storage_buffers: u64,
    /// Download staging buffers allocated.
    pub staging_buffers: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub pipelines: AtomicU64,
    pub bind_groups: AtomicU64,
    pub storage_buffers: AtomicU64,
    pub staging_buffers: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> GpuCounters {
        GpuCounters {
            pipelines: self.pipelines.load(Ordering::Relaxed),
            bind_groups: self.bind_groups.load(Ordering::Relaxed),
            storage_buffers: self.storage_buffers.load(Ordering::Relaxed),
            staging_buffers: self.staging_buffers.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: KernelId,
    params: Vec<u8>,
    bindings: Vec<(u64, u64, u64)>,
}

/// A cached bind group (it keeps its uniform buffer alive) and when it was last used.
struct Entry {
    group: wgpu::BindGroup,
    last_used: u64,
}

/// Bind groups by (kernel, parameter bytes, bound buffer ranges).
#[derive(Default)]
pub(crate) struct BindGroupCache {
    entries: HashMap<BindKey, Entry>,
    clock: u64,
}

impl BindGroupCache {
    /// Drops every entry that binds buffer `id` (called when the buffer is dropped).
    pub fn forget(&mut self, id: u64) {
        self.entries
            .retain(|k, _| !k.bindings.iter().any(|b| b.0 == id));
    }

    /// The bind group for `kernel` with `params` at binding 0 and `storage[i]` at binding
    /// i + 1, created (with its uniform buffer) on first use.
    pub fn get(
        &mut self,
        device: &wgpu::Device,
        counters: &Counters,
        kernel: &Kernel,
        params: &[u8],
        storage: &[Binding<'_>],
    ) -> wgpu::BindGroup {
        self.clock += 1;
        let key = BindKey {
            kernel: kernel.id,
            params: params.to_vec(),
            bindings: storage.iter().map(Binding::key).collect(),
        };
        if let Some(e) = self.entries.get_mut(&key) {
            e.last_used = self.clock;
            return e.group.clone();
        }
        if self.entries.len() >= MAX_BIND_GROUPS {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        use wgpu::util::DeviceExt;
        let label = Some(kernel.id.0);
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label,
            contents: params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(
            storage
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.resource(),
                }),
        );
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label,
            layout: &kernel.pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Counters::bump(&counters.bind_groups);
        self.entries.insert(
            key,
            Entry {
                group: group.clone(),
                last_used: self.clock,
            },
        );
        group
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Compiled pipelines by kernel id.
#[derive(Default)]
pub(crate) struct PipelineCache {
    pub kernels: HashMap<KernelId, Kernel>,
}

/// Mappable buffers reused for downloads.
#[derive(Default)]
pub(crate) struct StagingPool {
    free: Vec<wgpu::Buffer>,
}

impl StagingPool {
    /// The smallest free buffer of at least `bytes`, if any.
    pub fn take(&mut self, bytes: u64) -> Option<wgpu::Buffer> {
        let i = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= bytes)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i)?;
        Some(self.free.swap_remove(i))
    }

    /// Returns `b` (unmapped) for reuse; the smallest buffer goes when the pool is full.
    pub fn give(&mut self, b: wgpu::Buffer) {
        self.free.push(b);
        if self.free.len() > MAX_STAGING {
            let smallest = self
                .free
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.size())
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.free.swap_remove(smallest);
        }
    }
}

/// Everything the context caches, behind locks so that a context can be shared by threads.
#[derive(Default)]
pub(crate) struct ContextCaches {
    pub pipelines: std::sync::Mutex<PipelineCache>,
    pub bind_groups: std::sync::Arc<std::sync::Mutex<BindGroupCache>>,
    pub staging: std::sync::Mutex<StagingPool>,
    pub counters: Counters,
    pub next_buffer_id: AtomicU64,
    /// Kernel families' per-device state, by type (`GpuContext::kernel_state`).
    pub kernel_state: std::sync::Mutex<KernelState>,
}

/// Per-device state of kernel families, keyed by its type.
pub(crate) type KernelState =
    std::collections::HashMap<std::any::TypeId, std::sync::Arc<dyn std::any::Any + Send + Sync>>;
