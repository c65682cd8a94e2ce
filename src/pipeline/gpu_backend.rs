//! The GPU as a [`Backend`]: operations are recorded into one command encoder per
//! submission, with the kernels compiled once.

use super::backend::{Backend, Op, Storage};
use crate::error::Result;
use crate::gpu::{
    Conv2dKernel, CrossLayerKernel, Dtype, GpuBuffer, GpuContext, GpuConv2d, GpuFeatures,
    GpuPacked, GpuRegions, GpuTensor, MaxPool2dKernel, NormalizeKernel, QuantizeKernel,
    RegionPoolKernel,
};
use crate::pooling::Quantization;
use crate::shape::{Conv2dSpec, Shape4};
use crate::weights::Conv2dWeights;

/// The compiled kernels the pipelines use.
pub struct GpuKernels {
    conv: Conv2dKernel,
    pool: MaxPool2dKernel,
    cross: CrossLayerKernel,
    normalize: NormalizeKernel,
    region: RegionPoolKernel,
    quantize: QuantizeKernel,
}

impl Storage for GpuContext {
    type Tensor = GpuTensor;

    type Features = GpuFeatures;

    type Regions = GpuRegions;

    type Scratch = GpuBuffer;

    type Recorder = wgpu::CommandEncoder;

    type Codes = GpuPacked;

    fn tensor(&self, shape: Shape4, label: &str) -> Result<GpuTensor> {
        GpuTensor::new(self, shape, label)
    }

    fn shape_of(t: &GpuTensor) -> Shape4 {
        t.shape
    }

    fn scratch(&self, values: usize, label: &str) -> Result<GpuBuffer> {
        self.storage_buffer(values as u64 * 4, label)
    }

    fn view(s: &GpuBuffer, shape: Shape4) -> GpuTensor {
        GpuTensor::view(s, shape, Dtype::F32)
    }

    fn view_as(s: &GpuBuffer, shape: Shape4, dtype: Dtype) -> GpuTensor {
        GpuTensor::view(s, shape, dtype)
    }

    fn features(
        &self,
        (images, rows, cols): (usize, usize, usize),
        label: &str,
    ) -> Result<GpuFeatures> {
        GpuFeatures::new(self, images, rows, cols, label)
    }

    fn dims_of(f: &GpuFeatures) -> (usize, usize, usize) {
        (f.images, f.rows, f.cols)
    }

    fn regions(&self, boxes: &[[u32; 4]]) -> Result<GpuRegions> {
        GpuRegions::upload(self, boxes)
    }

    fn submit(
        &self,
        during: &str,
        f: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        GpuContext::submit(self, during, f)
    }

    fn wait(&self, during: &str) -> Result<()> {
        GpuContext::wait(self, during)
    }

    fn write(&self, t: &GpuTensor, values: &[f32]) -> Result<()> {
        t.write(self, values)
    }

    fn download(&self, f: &GpuFeatures) -> Result<Vec<f32>> {
        f.download(self)
    }

    fn codes(&self, f: &GpuFeatures, q: Quantization, label: &str) -> Result<GpuPacked> {
        GpuPacked::for_features(self, f, q, label)
    }

    fn download_codes(&self, c: &GpuPacked) -> Result<Vec<Vec<u32>>> {
        let words = c.download(self)?;
        Ok(words
            .chunks((c.rows * c.words_per_row).max(1))
            .map(<[u32]>::to_vec)
            .collect())
    }
}

impl Backend for GpuContext {
    type Conv = GpuConv2d;
    type Kernels = GpuKernels;

    fn kernels(&self) -> Result<GpuKernels> {
        Ok(GpuKernels {
            conv: Conv2dKernel::new(self)?,
            pool: MaxPool2dKernel::new(self)?,
            cross: CrossLayerKernel::new(self)?,
            normalize: NormalizeKernel::new(self)?,
            region: RegionPoolKernel::new(self)?,
            quantize: QuantizeKernel::new(self)?,
        })
    }

    fn conv_layer(&self, w: &Conv2dWeights) -> Result<GpuConv2d> {
        GpuConv2d::upload(self, w)
    }

    fn conv_layer_as(&self, w: &Conv2dWeights, dtype: Dtype) -> Result<GpuConv2d> {
        GpuConv2d::upload_as(self, w, dtype)
    }

    fn conv_spec(c: &GpuConv2d) -> Conv2dSpec {
        c.spec
    }

    fn run(&self, k: &GpuKernels, r: &mut wgpu::CommandEncoder, op: Op<'_, Self>) -> Result<()> {
        match op {
            Op::Conv {
                layer,
                input,
                output,
                shortcut,
                overflow,
            } => k.conv.record_residual(
                self,
                r,
                layer,
                (input, shortcut, output),
                overflow.map(|f| &f.buffer),
            ),
            Op::ResetOverflow(f) => {
                r.clear_buffer(&f.buffer, 0, None);
                Ok(())
            }
            Op::MaxPool(spec, input, output) => k.pool.record(self, r, spec, input, output),
            Op::CrossLayer(op, out) => k.cross.record(self, r, op, out, false),
            Op::RegionPool(x, regions, mode, out) => {
                k.region.record(self, r, x, regions, mode, out)
            }
            Op::FieldPool(x, fields, out) => k.region.record_fields(self, r, x, fields, out),
            Op::Normalize(f, norm) => k.normalize.record(self, r, f, norm),
            Op::Quantize(f, q, out) => k.quantize.record(self, r, f, q, out),
        }
    }

    fn conv_variant(&self, k: &GpuKernels, layer: &GpuConv2d, input: Shape4) -> Option<String> {
        k.conv.tiles_run(layer.spec, input)
    }
}
