//! The native CPU as a [`Backend`]: operations run at once, each on all cores.

use super::backend::{CrossLayer, Guide};
use super::host::HostMemory;
use crate::cpu::tensor::lock;
use crate::cpu::{ops, CpuBackend, CpuConv2d, HostFeatures, HostTensor};
use crate::error::Result;
use crate::pooling::{Normalization, RegionPoolMode};
use crate::shape::{Conv2dSpec, MaxPool2dSpec, Shape4};
use crate::weights::Conv2dWeights;

/// Runs `f` on a copy of `input`'s values and the locked storage of `output`; copies only
/// when both live in the same storage (which a correct pipeline never asks for).
fn with_io<R>(
    input: &HostTensor,
    output: &HostTensor,
    f: impl FnOnce(&[f32], &mut [f32]) -> Result<R>,
) -> Result<R> {
    if std::sync::Arc::ptr_eq(&input.data, &output.data) {
        let x = input.values();
        let mut out = lock(&output.data);
        return f(&x, &mut out[..output.shape.len()]);
    }
    let x = lock(&input.data);
    let mut out = lock(&output.data);
    f(&x[..input.shape.len()], &mut out[..output.shape.len()])
}

/// Cross-layer pooling of `op` into `out` on copies of its operands, normalised by `norm` if
/// given ([`ops::cross_layer_normalized`]).
fn cross_layer_into(
    op: CrossLayer<'_, HostTensor>,
    out: &HostFeatures,
    norm: Option<Normalization>,
) -> Result<()> {
    let xv = op.x.values();
    let a = match op.guide {
        Guide::Layer(a, w) => Some((a.values(), a.shape, w)),
        Guide::Ones => None,
    };
    let a = a.as_ref().map(|(v, s, w)| (v.as_slice(), *s, *w));
    let (i, r, c) = out.dims;
    let dst = &mut lock(&out.data)[..i * r * c];
    let (x, win, group, mode) = (op.x.shape, op.x_win, op.group, op.mode);
    match norm {
        None => ops::cross_layer(a, &xv, x, win, group, mode, dst),
        Some(n) => ops::cross_layer_normalized(a, &xv, x, win, group, mode, n, dst),
    }
}

impl HostMemory for CpuBackend {
    type Conv = CpuConv2d;

    fn conv_layer(&self, w: &Conv2dWeights) -> Result<CpuConv2d> {
        CpuConv2d::with_products(w, self.conv_kernel()?, self.products())
    }

    fn conv_spec(c: &CpuConv2d) -> Conv2dSpec {
        c.spec()
    }

    fn conv(
        &self,
        layer: &CpuConv2d,
        input: &HostTensor,
        shortcut: Option<&HostTensor>,
        output: &HostTensor,
    ) -> Result<()> {
        let shape = match shortcut {
            None => with_io(input, output, |x, y| layer.run(x, input.shape, y))?,
            Some(s) => {
                Shape4::check_output("residual addition", s.shape, output.shape)?;
                // The network never reads a shortcut that is also the layer's input or
                // output; a copy keeps such a call correct (and free of a second lock).
                let (owned, guard);
                let values: &[f32] = if std::sync::Arc::ptr_eq(&s.data, &output.data)
                    || std::sync::Arc::ptr_eq(&s.data, &input.data)
                {
                    owned = s.values();
                    &owned
                } else {
                    guard = lock(&s.data);
                    &guard
                };
                with_io(input, output, |x, y| {
                    layer.run_add(x, input.shape, Some(&values[..s.shape.len()]), y)
                })?
            }
        };
        Shape4::check_output("conv2d", shape, output.shape)
    }

    fn max_pool(&self, spec: MaxPool2dSpec, input: &HostTensor, output: &HostTensor) -> Result<()> {
        let want = spec.output_shape(input.shape)?;
        Shape4::check_output("max_pool2d", want, output.shape)?;
        with_io(input, output, |x, y| {
            ops::max_pool2d(x, input.shape, spec, y)
        })
        .map(|_| ())
    }

    fn cross_layer(&self, op: CrossLayer<'_, HostTensor>, out: &HostFeatures) -> Result<()> {
        cross_layer_into(op, out, None)
    }

    fn cross_layer_normalized(
        &self,
        op: CrossLayer<'_, HostTensor>,
        out: &HostFeatures,
        norm: Normalization,
    ) -> Result<()> {
        cross_layer_into(op, out, Some(norm))
    }

    fn region_pool(
        &self,
        x: &HostTensor,
        regions: &[[u32; 4]],
        mode: RegionPoolMode,
        out: &HostFeatures,
    ) -> Result<()> {
        let xv = lock(&x.data);
        let (i, r, c) = out.dims;
        let mut dst = lock(&out.data);
        ops::region_pool(
            &xv[..x.shape.len()],
            x.shape,
            regions,
            mode,
            &mut dst[..i * r * c],
        )
    }

    fn field_pool(&self, x: &HostTensor, fields: &[[u32; 4]], out: &HostTensor) -> Result<()> {
        with_io(x, out, |xv, dst| ops::field_pool(xv, x.shape, fields, dst))
    }

    fn normalize(&self, f: &HostFeatures, norm: Normalization) -> Result<()> {
        let (i, r, c) = f.dims;
        ops::normalize(&mut lock(&f.data)[..i * r * c], r, c, norm);
        Ok(())
    }
}
