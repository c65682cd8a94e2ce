//! Activations living in GPU storage buffers, and moving them to and from the host.

use super::GpuContext;
use crate::error::{Error, Result};
use crate::shape::Shape4;

/// An NHWC f32 activation in one GPU storage buffer.
pub struct GpuTensor {
    /// The storage buffer, `shape.bytes_f32()` long.
    pub buffer: wgpu::Buffer,
    /// Logical shape.
    pub shape: Shape4,
}

impl GpuTensor {
    /// An uninitialised (zeroed by wgpu) tensor of `shape`.
    pub fn new(ctx: &GpuContext, shape: Shape4, label: &str) -> Result<Self> {
        let buffer = create_storage(ctx, shape.bytes_f32(), label)?;
        Ok(GpuTensor { buffer, shape })
    }

    /// Copies `data` (NHWC) to a new tensor.
    pub fn upload(ctx: &GpuContext, data: &[f32], shape: Shape4, label: &str) -> Result<Self> {
        if data.len() != shape.len() {
            return Err(Error::shape(
                "upload",
                format!(
                    "{} values for shape {shape} ({} needed)",
                    data.len(),
                    shape.len()
                ),
            ));
        }
        let t = Self::new(ctx, shape, label)?;
        ctx.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Reads the tensor back to the host, waiting for all work submitted before.
    pub fn download(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        download_f32(ctx, &self.buffer, self.shape.len())
    }
}

/// Creates a storage buffer of `bytes`, checking the device's buffer size limit first.
pub(crate) fn create_storage(ctx: &GpuContext, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
    if bytes > ctx.limits.max_buffer_size {
        return Err(Error::DeviceLimit {
            what: format!("buffer '{label}'"),
            needed: bytes,
            limit: ctx.limits.max_buffer_size,
            limit_name: "max_buffer_size",
            hint: "use a smaller batch or image size",
        });
    }
    ctx.checked(
        &format!("allocating buffer '{label}' ({bytes} bytes)"),
        || {
            Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                // wgpu rejects zero-sized bindings; a 4-byte minimum keeps empty tensors legal.
                size: bytes.max(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }))
        },
    )
}

/// Uploads `data` to a new read-only-by-convention storage buffer.
pub(crate) fn storage_from_slice(
    ctx: &GpuContext,
    data: &[f32],
    label: &str,
) -> Result<wgpu::Buffer> {
    let buffer = create_storage(ctx, data.len() as u64 * 4, label)?;
    ctx.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    Ok(buffer)
}

/// Copies the first `len` f32 of `src` to the host.
pub(crate) fn download_f32(ctx: &GpuContext, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let bytes = len as u64 * 4;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let staging = ctx.checked("allocating download buffer", || {
        Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    })?;
    ctx.checked("downloading", || {
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("download"),
            });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        ctx.queue.submit([enc.finish()]);
        Ok(())
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.wait("download")?;
    rx.recv()
        .map_err(|e| Error::Gpu {
            during: "download".into(),
            message: e.to_string(),
        })?
        .map_err(|e| Error::Gpu {
            during: "mapping download buffer".into(),
            message: e.to_string(),
        })?;
    let view = staging.get_mapped_range(..).map_err(|e| Error::Gpu {
        during: "reading download buffer".into(),
        message: e.to_string(),
    })?;
    let out = bytemuck::pod_collect_to_vec::<u8, f32>(&view);
    drop(view);
    staging.unmap();
    Ok(out)
}
