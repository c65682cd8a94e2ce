//! Activations living in GPU storage buffers, and moving them to and from the host.

use super::buffer::GpuBuffer;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::shape::Shape4;

/// How a tensor's values are stored. Arithmetic is f32 either way; f16 storage (with the
/// device's SHADER_F16) halves the memory traffic of activations and weights.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16: 11 significant bits, largest finite value 65504.
    F16,
}

impl Dtype {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// Whether this is f32 (for serde's `skip_serializing_if`).
    pub fn is_f32(&self) -> bool {
        *self == Dtype::F32
    }

    /// The WGSL scalar type.
    pub fn wgsl(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// An NHWC activation in one GPU storage buffer; clones are views of the same buffer.
#[derive(Clone)]
pub struct GpuTensor {
    /// The storage buffer, at least `shape.len() * dtype.bytes()` long.
    pub buffer: GpuBuffer,
    /// Logical shape.
    pub shape: Shape4,
    /// How the values are stored.
    pub dtype: Dtype,
}

impl GpuTensor {
    /// An uninitialised (zeroed by wgpu) f32 tensor of `shape`.
    pub fn new(ctx: &GpuContext, shape: Shape4, label: &str) -> Result<Self> {
        Self::with_dtype(ctx, shape, Dtype::F32, label)
    }

    /// An uninitialised (zeroed by wgpu) tensor of `shape` stored as `dtype`.
    pub fn with_dtype(ctx: &GpuContext, shape: Shape4, dtype: Dtype, label: &str) -> Result<Self> {
        let buffer = create_storage(ctx, shape.len() as u64 * dtype.bytes(), label)?;
        Ok(GpuTensor {
            buffer,
            shape,
            dtype,
        })
    }

    /// A view of `shape` stored as `dtype` at the start of `buffer` (which must hold it).
    pub fn view(buffer: &GpuBuffer, shape: Shape4, dtype: Dtype) -> Self {
        GpuTensor {
            buffer: buffer.clone(),
            shape,
            dtype,
        }
    }

    /// Fails unless the tensor is stored as f32 (for kernels that read only f32).
    pub fn expect_f32(&self, op: &'static str) -> Result<()> {
        match self.dtype {
            Dtype::F32 => Ok(()),
            Dtype::F16 => Err(Error::shape(op, "takes f32 tensors, not f16".to_string())),
        }
    }

    /// Copies `data` (NHWC) to a new tensor.
    pub fn upload(ctx: &GpuContext, data: &[f32], shape: Shape4, label: &str) -> Result<Self> {
        shape.check_values("upload", data.len())?;
        let t = Self::new(ctx, shape, label)?;
        t.write(ctx, data)?;
        Ok(t)
    }

    /// Copies `data` (NHWC) to a new tensor stored as `dtype` (f16 rounds to nearest).
    pub fn upload_as(
        ctx: &GpuContext,
        data: &[f32],
        shape: Shape4,
        dtype: Dtype,
        label: &str,
    ) -> Result<Self> {
        shape.check_values("upload", data.len())?;
        match dtype {
            Dtype::F32 => Self::upload(ctx, data, shape, label),
            Dtype::F16 => {
                ctx.require_f16("f16 tensors")?;
                Ok(GpuTensor {
                    buffer: storage_from_f16(ctx, data, label)?,
                    shape,
                    dtype,
                })
            }
        }
    }

    /// Overwrites the tensor with `data` (NHWC, exactly its length), before the next
    /// submission runs.
    pub fn write(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        self.shape.check_values("upload", data.len())?;
        self.expect_f32("upload")?;
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Reads the tensor back to the host, waiting for all work submitted before.
    pub fn download(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        match self.dtype {
            Dtype::F32 => download_f32(ctx, &self.buffer, self.shape.len()),
            Dtype::F16 => {
                let words: Vec<u16> = download_pod(ctx, &self.buffer, self.shape.len())?;
                Ok(words
                    .into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect())
            }
        }
    }
}

/// Per-image feature matrices `[images][rows][cols]` of f32 in one GPU buffer (cross-layer
/// features: rows are pooling channels).
pub struct GpuFeatures {
    /// The storage buffer.
    pub buffer: GpuBuffer,
    /// Images (or groups of images).
    pub images: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per row.
    pub cols: usize,
}

impl GpuFeatures {
    /// A zeroed buffer for `images` matrices of `rows` x `cols`.
    pub fn new(
        ctx: &GpuContext,
        images: usize,
        rows: usize,
        cols: usize,
        label: &str,
    ) -> Result<Self> {
        let bytes = (images * rows * cols) as u64 * 4;
        Ok(GpuFeatures {
            buffer: create_storage(ctx, bytes, label)?,
            images,
            rows,
            cols,
        })
    }

    /// Values per image.
    pub fn len_per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// Reads all values back, waiting for submitted work.
    pub fn download(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        download_f32(ctx, &self.buffer, self.images * self.len_per_image())
    }
}

/// Bit-packed features `[images][rows][words_per_row]` of u32 (see `pooling::Quantization`).
pub struct GpuPacked {
    /// The storage buffer.
    pub buffer: GpuBuffer,
    /// Images.
    pub images: usize,
    /// Rows per image.
    pub rows: usize,
    /// u32 words per row.
    pub words_per_row: usize,
}

impl GpuPacked {
    /// Zeroed codes for features like `f` packed under `q`.
    pub fn for_features(
        ctx: &GpuContext,
        f: &GpuFeatures,
        q: crate::pooling::Quantization,
        label: &str,
    ) -> Result<Self> {
        let words_per_row = q.words_per_row(f.cols);
        Ok(GpuPacked {
            buffer: create_storage(ctx, (f.images * f.rows * words_per_row) as u64 * 4, label)?,
            images: f.images,
            rows: f.rows,
            words_per_row,
        })
    }

    /// Reads all words back, waiting for submitted work.
    pub fn download(&self, ctx: &GpuContext) -> Result<Vec<u32>> {
        download_pod(
            ctx,
            &self.buffer,
            self.images * self.rows * self.words_per_row,
        )
    }
}

/// A storage buffer kept by a kernel for its temporary data and grown when too small, so that
/// repeated calls bind the same buffer (and reuse their bind groups). Submissions run in
/// order, so calls on one context never overlap on the GPU.
pub struct Scratch {
    label: &'static str,
    buffer: std::sync::Mutex<Option<GpuBuffer>>,
}

impl Scratch {
    /// An empty scratch buffer named `label`.
    pub fn new(label: &'static str) -> Self {
        Scratch {
            label,
            buffer: std::sync::Mutex::new(None),
        }
    }

    /// A buffer of at least `bytes`: the one held, or a new one that replaces it.
    pub fn at_least(&self, ctx: &GpuContext, bytes: u64) -> Result<GpuBuffer> {
        let mut held = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        match &*held {
            Some(b) if b.size() >= bytes => Ok(b.clone()),
            _ => {
                let b = create_storage(ctx, bytes, self.label)?;
                *held = Some(b.clone());
                Ok(b)
            }
        }
    }
}

impl GpuContext {
    /// A zeroed storage buffer of `bytes` (for callers that lay out their own tensors in it).
    pub fn storage_buffer(&self, bytes: u64, label: &str) -> Result<GpuBuffer> {
        create_storage(self, bytes, label)
    }
}

/// Creates a storage buffer of `bytes`, checking the device's buffer size limit first.
pub(crate) fn create_storage(ctx: &GpuContext, bytes: u64, label: &str) -> Result<GpuBuffer> {
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
                // Storage bindings are whole 4-byte words, so an odd count of f16 is rounded up.
                size: bytes.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }))
        },
    )
    .map(|b| ctx.track(b))
}

/// Uploads `data` to a new read-only-by-convention storage buffer.
pub(crate) fn storage_from_slice(ctx: &GpuContext, data: &[f32], label: &str) -> Result<GpuBuffer> {
    let buffer = create_storage(ctx, data.len() as u64 * 4, label)?;
    ctx.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    Ok(buffer)
}

/// Uploads `data` as f16 (rounded to nearest) to a new storage buffer.
pub(crate) fn storage_from_f16(ctx: &GpuContext, data: &[f32], label: &str) -> Result<GpuBuffer> {
    let mut halves: Vec<u16> = data
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    // Writes move whole 4-byte words.
    if halves.len() % 2 == 1 {
        halves.push(0);
    }
    let buffer = create_storage(ctx, halves.len() as u64 * 2, label)?;
    ctx.queue
        .write_buffer(&buffer, 0, bytemuck::cast_slice(&halves));
    Ok(buffer)
}

/// Copies the first `len` f32 of `src` to the host.
pub(crate) fn download_f32(ctx: &GpuContext, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    download_pod(ctx, src, len)
}

/// Copies the first `len` values of type `T` of `src` to the host.
pub(crate) fn download_pod<T: bytemuck::Pod>(
    ctx: &GpuContext,
    src: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    // Copies move whole 4-byte words (buffers are sized to match: `create_storage`).
    let copied = bytes.next_multiple_of(4);
    let staging = ctx.staging(copied)?;
    let submitted = ctx.checked("downloading", || {
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("download"),
            });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, copied);
        Ok(ctx.queue.submit([enc.finish()]))
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.wait_for(submitted, "download")?;
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
    let out = bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize]);
    drop(view);
    staging.unmap();
    ctx.return_staging(staging);
    Ok(out)
}
