//! Host storage for the CPU backend: NHWC tensors and per-image feature matrices in shared
//! vectors, so that tensors of several shapes can take turns in one buffer (the network's
//! ping-pong) as on the GPU.

use crate::error::{Error, Result};
use crate::shape::Shape4;
use std::sync::{Arc, Mutex, MutexGuard};

/// Shared f32 storage.
pub type HostStorage = Arc<Mutex<Vec<f32>>>;

/// Locks `s`; a panic in another holder cannot leave f32 values invalid, so poisoning is
/// ignored.
pub fn lock(s: &HostStorage) -> MutexGuard<'_, Vec<f32>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Zeroed storage for `values` f32.
pub fn storage(values: usize) -> HostStorage {
    Arc::new(Mutex::new(vec![0.0; values]))
}

/// An error unless `input` holds exactly `shape`'s values and `output` exactly `out`'s, for
/// the kernels that take plain slices.
pub fn check_lengths(
    op: &'static str,
    input: &[f32],
    shape: Shape4,
    output: &[f32],
    out: Shape4,
) -> Result<()> {
    if input.len() != shape.len() || output.len() != out.len() {
        return Err(Error::shape(
            op,
            format!(
                "input has {} values for {shape} ({} needed), output {} for {out} ({} needed)",
                input.len(),
                shape.len(),
                output.len(),
                out.len()
            ),
        ));
    }
    Ok(())
}

/// An NHWC tensor at the start of shared storage.
#[derive(Clone, Debug)]
pub struct HostTensor {
    /// Its storage (possibly larger than the tensor).
    pub data: HostStorage,
    /// Its shape.
    pub shape: Shape4,
}

impl HostTensor {
    /// A zeroed tensor of `shape`.
    pub fn zeros(shape: Shape4) -> Self {
        HostTensor {
            data: storage(shape.len()),
            shape,
        }
    }

    /// The tensor of `shape` at the start of `storage` (shared, not copied).
    pub fn view(storage: &HostStorage, shape: Shape4) -> Self {
        HostTensor {
            data: storage.clone(),
            shape,
        }
    }

    /// A tensor holding `values`.
    pub fn from_values(values: Vec<f32>, shape: Shape4) -> Result<Self> {
        if values.len() != shape.len() {
            return Err(Error::shape(
                "tensor",
                format!("{} values for {shape}", values.len()),
            ));
        }
        Ok(HostTensor {
            data: Arc::new(Mutex::new(values)),
            shape,
        })
    }

    /// A copy of its values.
    pub fn values(&self) -> Vec<f32> {
        lock(&self.data)[..self.shape.len()].to_vec()
    }

    /// Overwrites its values with `values` (exactly `shape.len()` of them).
    pub fn write(&self, values: &[f32]) -> Result<()> {
        if values.len() != self.shape.len() {
            return Err(Error::shape(
                "tensor",
                format!("{} values written to {}", values.len(), self.shape),
            ));
        }
        lock(&self.data)[..values.len()].copy_from_slice(values);
        Ok(())
    }
}

/// `[images][rows][cols]` features.
#[derive(Clone, Debug)]
pub struct HostFeatures {
    /// Its storage.
    pub data: HostStorage,
    /// `(images, rows, cols)`.
    pub dims: (usize, usize, usize),
}

impl HostFeatures {
    /// Zeroed features of `images` x `rows` x `cols`.
    pub fn zeros(images: usize, rows: usize, cols: usize) -> Self {
        HostFeatures {
            data: storage(images * rows * cols),
            dims: (images, rows, cols),
        }
    }

    /// A copy of its values.
    pub fn values(&self) -> Vec<f32> {
        let (i, r, c) = self.dims;
        copy_out(&lock(&self.data)[..i * r * c])
    }
}

/// Sign codes of `[images][rows]`, each row `words_per_row` u32 words.
#[derive(Clone, Debug)]
pub struct HostCodes {
    /// The words, image after image.
    pub words: Arc<Mutex<Vec<u32>>>,
    /// Words per image.
    pub per_image: usize,
}

impl HostCodes {
    /// Zeroed codes for `images` images of `per_image` words.
    pub fn zeros(images: usize, per_image: usize) -> Self {
        HostCodes {
            words: Arc::new(Mutex::new(vec![0; images * per_image])),
            per_image,
        }
    }

    /// Each image's words.
    pub fn per_image(&self) -> Vec<Vec<u32>> {
        self.words
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .chunks(self.per_image.max(1))
            .map(<[u32]>::to_vec)
            .collect()
    }
}

/// A copy of `src` in a new vector. On Linux a large one asks for transparent huge pages
/// first (`MADV_HUGEPAGE`, honoured where the system's setting is `madvise` or `always`):
/// filling 128 MiB of fresh memory (ResNet's features at batch 8) then takes a page fault per
/// 2 MiB instead of per 4 KiB, which measured twice the time of the copy itself.
pub(crate) fn copy_out(src: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(src.len());
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const HUGE: usize = 2 << 20;
        let bytes = src.len() * 4;
        if bytes >= 4 * HUGE {
            let start = (v.as_mut_ptr() as usize).next_multiple_of(4096);
            let end = (v.as_mut_ptr() as usize + bytes) & !4095;
            // SAFETY: advice on whole pages inside the vector's own allocation; it changes
            // how they are backed, never their contents (an error leaves them as they were).
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v.extend_from_slice(src);
    v
}
