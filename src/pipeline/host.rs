//! Backends that compute in host memory, at once (the native CPU backend and the CPU
//! reference): they implement [`HostMemory`], the operations without kernels or recorders,
//! and get [`Storage`] (host tensors and features, submissions run on the spot) and
//! [`Backend`] from it.

use super::backend::{Backend, CrossLayer, Op, Storage};
use crate::cpu::tensor::{lock as storage_lock, storage};
use crate::cpu::{HostCodes, HostFeatures, HostStorage, HostTensor};
use crate::error::{Error, Result};
use crate::pooling::{Normalization, Quantization, RegionPoolMode};
use crate::shape::{Conv2dSpec, MaxPool2dSpec, Shape4};
use crate::weights::Conv2dWeights;

/// A backend that computes in host memory, at once: [`Backend`]'s operations on host
/// tensors, without the kernels and recorder a device needs.
pub trait HostMemory {
    /// A convolution layer's weights, ready to run.
    type Conv;
    /// A convolution layer ready to run.
    fn conv_layer(&self, w: &Conv2dWeights) -> Result<Self::Conv>;
    /// Its geometry.
    fn conv_spec(c: &Self::Conv) -> Conv2dSpec;
    /// See [`Op::Conv`].
    fn conv(
        &self,
        layer: &Self::Conv,
        input: &HostTensor,
        shortcut: Option<&HostTensor>,
        output: &HostTensor,
    ) -> Result<()>;
    /// See [`Op::MaxPool`].
    fn max_pool(&self, spec: MaxPool2dSpec, input: &HostTensor, output: &HostTensor) -> Result<()>;
    /// See [`Op::CrossLayer`].
    fn cross_layer(&self, op: CrossLayer<'_, HostTensor>, out: &HostFeatures) -> Result<()>;
    /// See [`Op::RegionPool`].
    fn region_pool(
        &self,
        x: &HostTensor,
        regions: &[[u32; 4]],
        mode: RegionPoolMode,
        out: &HostFeatures,
    ) -> Result<()>;
    /// See [`Op::FieldPool`]; `out`'s shape has been checked.
    fn field_pool(&self, x: &HostTensor, fields: &[[u32; 4]], out: &HostTensor) -> Result<()>;
    /// See [`Op::Normalize`].
    fn normalize(&self, f: &HostFeatures, norm: Normalization) -> Result<()>;
    /// See [`Backend::cross_layer_normalized`].
    fn cross_layer_normalized(
        &self,
        op: CrossLayer<'_, HostTensor>,
        out: &HostFeatures,
        norm: Normalization,
    ) -> Result<()> {
        self.cross_layer(op, out)?;
        self.normalize(out, norm)
    }
}

impl<T: HostMemory> Storage for T {
    type Tensor = HostTensor;
    type Features = HostFeatures;
    type Regions = Vec<[u32; 4]>;
    type Scratch = HostStorage;
    type Recorder = ();
    type Codes = HostCodes;

    fn tensor(&self, shape: Shape4, _label: &str) -> Result<HostTensor> {
        Ok(HostTensor::zeros(shape))
    }

    fn shape_of(t: &HostTensor) -> Shape4 {
        t.shape
    }

    fn scratch(&self, values: usize, _label: &str) -> Result<HostStorage> {
        Ok(storage(values))
    }

    fn view(s: &HostStorage, shape: Shape4) -> HostTensor {
        HostTensor::view(s, shape)
    }

    fn features(
        &self,
        (images, rows, cols): (usize, usize, usize),
        _: &str,
    ) -> Result<HostFeatures> {
        Ok(HostFeatures::zeros(images, rows, cols))
    }

    fn dims_of(f: &HostFeatures) -> (usize, usize, usize) {
        f.dims
    }

    fn regions(&self, boxes: &[[u32; 4]]) -> Result<Vec<[u32; 4]>> {
        Ok(boxes.to_vec())
    }

    fn submit(&self, _during: &str, f: &mut dyn FnMut(&mut ()) -> Result<()>) -> Result<()> {
        f(&mut ())
    }

    fn wait(&self, _during: &str) -> Result<()> {
        Ok(())
    }

    fn write(&self, t: &HostTensor, values: &[f32]) -> Result<()> {
        t.write(values)
    }

    fn download(&self, f: &HostFeatures) -> Result<Vec<f32>> {
        Ok(f.values())
    }

    fn codes(&self, f: &HostFeatures, q: Quantization, _label: &str) -> Result<HostCodes> {
        let (images, rows, cols) = f.dims;
        Ok(HostCodes::zeros(images, rows * q.words_per_row(cols)))
    }

    fn download_codes(&self, c: &HostCodes) -> Result<Vec<Vec<u32>>> {
        Ok(c.per_image())
    }
}

/// [`Op::Quantize`] in host memory: [`Quantization::pack`], the definition the GPU
/// kernel is held to.
fn quantize_on_host(f: &HostFeatures, q: Quantization, out: &HostCodes) -> Result<()> {
    let (images, rows, cols) = f.dims;
    // Packed from the storage in place: no copy of the features on this per-batch path.
    let words = q.pack(&storage_lock(&f.data)[..images * rows * cols], cols);
    let mut dst = out.words.lock().unwrap_or_else(|e| e.into_inner());
    if words.len() != dst.len() {
        return Err(Error::shape(
            "quantize",
            format!("{} words for codes of {}", words.len(), dst.len()),
        ));
    }
    dst.copy_from_slice(&words);
    Ok(())
}

impl<T: HostMemory> Backend for T {
    type Conv = T::Conv;
    type Kernels = ();

    fn kernels(&self) -> Result<()> {
        Ok(())
    }

    fn conv_layer(&self, w: &Conv2dWeights) -> Result<T::Conv> {
        HostMemory::conv_layer(self, w)
    }

    fn conv_spec(c: &T::Conv) -> Conv2dSpec {
        <T as HostMemory>::conv_spec(c)
    }

    fn cross_layer_normalized(
        &self,
        _: &(),
        _: &mut (),
        op: CrossLayer<'_, HostTensor>,
        out: &HostFeatures,
        norm: Normalization,
    ) -> Result<()> {
        HostMemory::cross_layer_normalized(self, op, out, norm)
    }

    fn run(&self, _: &(), _: &mut (), op: Op<'_, Self>) -> Result<()> {
        match op {
            // Host memory is f32 only: no output can leave its range, so no flag is set.
            Op::Conv {
                layer,
                input,
                output,
                shortcut,
                overflow: _,
            } => self.conv(layer, input, shortcut, output),
            Op::ResetOverflow(_) => Ok(()),
            Op::MaxPool(spec, input, output) => self.max_pool(spec, input, output),
            Op::CrossLayer(op, out) => self.cross_layer(op, out),
            Op::RegionPool(x, regions, mode, out) => self.region_pool(x, regions, mode, out),
            Op::FieldPool(x, fields, out) => {
                let (s, o) = (x.shape, out.shape);
                if (o.n, o.h * o.w, o.c) != (s.n, fields.len(), s.c) {
                    return Err(Error::shape(
                        "field_pool",
                        format!("output {o} for {s} pooled over {} fields", fields.len()),
                    ));
                }
                self.field_pool(x, fields, out)
            }
            Op::Normalize(f, norm) => self.normalize(f, norm),
            Op::Quantize(f, q, out) => quantize_on_host(f, q, out),
        }
    }
}
