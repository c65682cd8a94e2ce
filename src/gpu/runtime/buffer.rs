//! Storage buffers with an identity, so that cached bind groups can name them and be dropped
//! with them.

use super::cache::BindGroupCache;
use std::sync::{Arc, Mutex, Weak};

/// A GPU storage buffer created by crosspool. Clones share the buffer. When the last clone is
/// dropped, the bind groups cached for it are dropped too, so a cache entry never keeps a
/// dead tensor's memory alive.
#[derive(Clone, Debug)]
pub struct GpuBuffer(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    buffer: wgpu::Buffer,
    id: u64,
    cache: Weak<Mutex<BindGroupCache>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.upgrade() {
            // A poisoned lock means another thread panicked mid-update; the entries are then
            // dropped with the context instead.
            if let Ok(mut c) = cache.lock() {
                c.forget(self.id);
            }
        }
    }
}

impl GpuBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, id: u64, cache: Weak<Mutex<BindGroupCache>>) -> Self {
        GpuBuffer(Arc::new(Inner { buffer, id, cache }))
    }

    /// This buffer's identity within its context (stable while any clone lives).
    pub fn id(&self) -> u64 {
        self.0.id
    }
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.0.buffer
    }
}

/// A byte range of a [`GpuBuffer`] bound to one storage binding of a dispatch.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// The buffer.
    pub buffer: &'a GpuBuffer,
    /// Byte offset (aligned to the device's storage offset alignment).
    pub offset: u64,
    /// Bytes bound.
    pub size: u64,
}

impl<'a> Binding<'a> {
    /// The whole buffer.
    pub fn whole(buffer: &'a GpuBuffer) -> Self {
        Binding {
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }

    pub(crate) fn key(&self) -> (u64, u64, u64) {
        (self.buffer.id(), self.offset, self.size)
    }

    pub(crate) fn resource(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }
}
