//! The CPU reference as a [`Backend`]: the same pipelines (`Network`, `Extractor`,
//! `Moments`) run on the reference ops, computing at once instead of recording. It shows
//! that the pipelines depend on the kernel entry points alone, and holds the GPU pipeline
//! to the CPU one stage for stage. Slow (plain loops, f64 sums): for tests and small inputs.

use super::{conv2d_add, cross_layer, field_pool, max_pool2d, normalize, region_pool};
use crate::cpu::tensor::lock;
use crate::cpu::{HostFeatures, HostTensor};
use crate::error::{Error, Result};
use crate::pipeline::{CrossLayer, Guide, HostMemory};
use crate::pooling::{LocalWindow, Normalization, RegionPoolMode};
use crate::shape::{Conv2dSpec, MaxPool2dSpec, Shape4};
use crate::weights::Conv2dWeights;

/// The CPU reference backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// An NHWC tensor in shared storage: the CPU backend's host tensor, so the two backends'
/// tensors are interchangeable.
pub type CpuTensor = HostTensor;

/// `[images][rows][cols]` features in shared storage.
pub type CpuFeatures = HostFeatures;

impl HostMemory for ReferenceBackend {
    type Conv = Conv2dWeights;

    fn conv_layer(&self, w: &Conv2dWeights) -> Result<Conv2dWeights> {
        Ok(w.clone())
    }

    fn conv_spec(c: &Conv2dWeights) -> Conv2dSpec {
        c.spec
    }

    fn conv(
        &self,
        layer: &Conv2dWeights,
        input: &CpuTensor,
        shortcut: Option<&CpuTensor>,
        output: &CpuTensor,
    ) -> Result<()> {
        let shortcut = shortcut.map(|s| (s.shape, s.values()));
        let shortcut = shortcut.as_ref().map(|(s, v)| (*s, v.as_slice()));
        let (shape, r) = conv2d_add(&input.values(), input.shape, layer, shortcut)?;
        Shape4::check_output("conv2d", shape, output.shape)?;
        output.write(&r.values)
    }

    fn max_pool(&self, spec: MaxPool2dSpec, input: &CpuTensor, output: &CpuTensor) -> Result<()> {
        let (shape, v) = max_pool2d(&input.values(), input.shape, spec)?;
        Shape4::check_output("max_pool2d", shape, output.shape)?;
        output.write(&v)
    }

    fn cross_layer(&self, op: CrossLayer<'_, CpuTensor>, out: &CpuFeatures) -> Result<()> {
        let CrossLayer {
            guide,
            x,
            x_win,
            group,
            mode,
        } = op;
        let xv = x.values();
        let r = match guide {
            Guide::Layer(a, a_win) => cross_layer(
                &a.values(),
                a.shape,
                a_win,
                &xv,
                x.shape,
                x_win,
                group,
                mode,
            )?,
            Guide::Ones => {
                let ones = Shape4::new(x.shape.n, x.shape.h, x.shape.w, 1);
                let a = vec![1.0; ones.len()];
                let unit = LocalWindow::UNIT;
                cross_layer(&a, ones, unit, &xv, x.shape, x_win, group, mode)?
            }
        };
        set_features("cross_layer", out, &r.values)
    }

    fn region_pool(
        &self,
        x: &CpuTensor,
        regions: &[[u32; 4]],
        mode: RegionPoolMode,
        out: &CpuFeatures,
    ) -> Result<()> {
        let v = region_pool(&x.values(), x.shape, regions, mode);
        set_features("region_pool", out, &v)
    }

    fn field_pool(&self, x: &CpuTensor, fields: &[[u32; 4]], out: &CpuTensor) -> Result<()> {
        out.write(&field_pool(&x.values(), x.shape, fields).0)
    }

    fn normalize(&self, f: &CpuFeatures, norm: Normalization) -> Result<()> {
        let (images, rows, cols) = f.dims;
        let mut data = lock(&f.data);
        for img in data.chunks_mut((rows * cols).max(1)).take(images) {
            normalize(img, rows, cols, norm);
        }
        Ok(())
    }
}

fn set_features(op: &'static str, out: &CpuFeatures, values: &[f32]) -> Result<()> {
    let mut data = lock(&out.data);
    if data.len() != values.len() {
        return Err(Error::shape(
            op,
            format!("{} values for features of {}", values.len(), data.len()),
        ));
    }
    data.copy_from_slice(values);
    Ok(())
}
