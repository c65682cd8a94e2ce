//! Backends that compute in host memory, at once (the native CPU backend and the CPU
//! reference): they implement [`HostMemory`], the operations without kernels or recorders,
//! and get [`Storage`] (host tensors and features, submissions run on the spot) and
//! [`Backend`] from it.

use super::backend::{Backend, CrossLayer, Storage};
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
    /// See [`Backend::conv`].
    fn conv(&self, layer: &Self::Conv, input: &HostTensor, output: &HostTensor) -> Result<()>;
    /// See [`Backend::max_pool`].
    fn max_pool(&self, spec: MaxPool2dSpec, input: &HostTensor, output: &HostTensor) -> Result<()>;
    /// See [`Backend::cross_layer`].
    fn cross_layer(&self, op: CrossLayer<'_, HostTensor>, out: &HostFeatures) -> Result<()>;
    /// See [`Backend::region_pool`].
    fn region_pool(
        &self,
        x: &HostTensor,
        regions: &[[u32; 4]],
        mode: RegionPoolMode,
        out: &HostFeatures,
    ) -> Result<()>;
    /// See [`Backend::field_pool`]; `out`'s shape has been checked.
    fn field_pool(&self, x: &HostTensor, fields: &[[u32; 4]], out: &HostTensor) -> Result<()>;
    /// See [`Backend::normalize`].
    fn normalize(&self, f: &HostFeatures, norm: Normalization) -> Result<()>;
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
        images: usize,
        rows: usize,
        cols: usize,
        _label: &str,
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

/// [`Backend::quantize`] in host memory: [`Quantization::pack`], the definition the GPU
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

    fn conv(&self, _: &(), _: &mut (), l: &T::Conv, i: &HostTensor, o: &HostTensor) -> Result<()> {
        HostMemory::conv(self, l, i, o)
    }

    fn max_pool(
        &self,
        _: &(),
        _: &mut (),
        spec: MaxPool2dSpec,
        input: &HostTensor,
        output: &HostTensor,
    ) -> Result<()> {
        HostMemory::max_pool(self, spec, input, output)
    }

    fn cross_layer(
        &self,
        _: &(),
        _: &mut (),
        op: CrossLayer<'_, HostTensor>,
        out: &HostFeatures,
    ) -> Result<()> {
        HostMemory::cross_layer(self, op, out)
    }

    fn region_pool(
        &self,
        _: &(),
        _: &mut (),
        x: &HostTensor,
        regions: &Vec<[u32; 4]>,
        mode: RegionPoolMode,
        out: &HostFeatures,
    ) -> Result<()> {
        HostMemory::region_pool(self, x, regions, mode, out)
    }

    fn field_pool(
        &self,
        _: &(),
        _: &mut (),
        x: &HostTensor,
        fields: &Vec<[u32; 4]>,
        out: &HostTensor,
    ) -> Result<()> {
        let (s, o) = (x.shape, out.shape);
        if (o.n, o.h * o.w, o.c) != (s.n, fields.len(), s.c) {
            return Err(Error::shape(
                "field_pool",
                format!("output {o} for {s} pooled over {} fields", fields.len()),
            ));
        }
        HostMemory::field_pool(self, x, fields, out)
    }

    fn normalize(&self, _: &(), _: &mut (), f: &HostFeatures, norm: Normalization) -> Result<()> {
        HostMemory::normalize(self, f, norm)
    }

    fn quantize(
        &self,
        _: &(),
        _: &mut (),
        f: &HostFeatures,
        q: Quantization,
        out: &HostCodes,
    ) -> Result<()> {
        quantize_on_host(f, q, out)
    }
}
