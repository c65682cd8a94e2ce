//! A layer's activation map read back to the host, for training on it (the AConv layer), and
//! the AConv layer's pre-activations computed on a backend.
//! The map comes back through region pooling with one region per unit, so no operation
//! beyond the tested kernel entry points is needed.

use super::backend::{Backend, Op};
use super::network::{Network, Workspace};
use crate::classifier::aconv::{AConvLayer, PreActivations};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::ModelWeights;
use crate::pooling::RegionPoolMode;
use crate::shape::Shape4;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;

/// Runs the network to `layer` and reads its activations back.
pub struct LayerMaps<B: Backend = GpuContext> {
    net: Network<B>,
    kernels: B::Kernels,
    layer: String,
}

/// Buffers for one input shape.
pub struct LayerMapsWorkspace<B: Backend = GpuContext> {
    net: Workspace<B>,
    units: B::Regions,
    maps: B::Features,
}

impl<B: Backend> LayerMaps<B> {
    /// Prepares to read `layer`.
    pub fn new(ctx: &B, weights: &ModelWeights, layer: &str) -> Result<Self> {
        weights.arch.layer_index(layer)?;
        Ok(LayerMaps {
            net: Network::new(ctx, weights)?,
            kernels: ctx.kernels()?,
            layer: layer.into(),
        })
    }

    /// Buffers for batches of `input` shape.
    pub fn workspace(&self, ctx: &B, input: Shape4) -> Result<LayerMapsWorkspace<B>> {
        let net = self.net.workspace(ctx, input, &[&self.layer])?;
        let s = B::shape_of(&net.outputs()[0]);
        Ok(LayerMapsWorkspace {
            units: ctx.regions(&unit_regions(s.h, s.w))?,
            maps: ctx.features((input.n, s.h * s.w, s.c), "layer maps")?,
            net,
        })
    }

    /// The layer's shape for the workspace's input.
    pub fn shape(&self, ws: &LayerMapsWorkspace<B>) -> Shape4 {
        B::shape_of(&ws.net.outputs()[0])
    }

    /// The layer's activations for `input`: `[n][h * w][c]`, row-major over the grid.
    pub fn run(&self, ctx: &B, input: &B::Tensor, ws: &LayerMapsWorkspace<B>) -> Result<Vec<f32>> {
        ctx.submit("layer maps", &mut |r| {
            self.net.record(ctx, r, input, &ws.net)?;
            let x = &ws.net.outputs()[0];
            let pool = Op::RegionPool(x, &ws.units, RegionPoolMode::Sum, &ws.maps);
            ctx.run(&self.kernels, r, pool)
        })?;
        ctx.download(&ws.maps)
    }
}

/// The AConv layer's pre-activations on a backend (for training on the GPU): the positions
/// are uploaded as a map of `h x w` per image, the layer runs as a 1x1 convolution without
/// its ReLU, and the result comes back through one region per unit, in f32.
pub struct DevicePreActivations<'a, B: Backend = GpuContext> {
    ctx: &'a B,
    kernels: B::Kernels,
    grid: (usize, usize),
    units: B::Regions,
    /// Input, output and read-back buffers by `(images, channels, filters)`: made once, then
    /// reused by every minibatch of that shape (only the weights are uploaded anew).
    buffers: Mutex<HashMap<(usize, usize, usize), PreBuffers<B>>>,
}

struct PreBuffers<B: Backend> {
    input: B::Tensor,
    out: B::Tensor,
    pre: B::Features,
}

impl<'a, B: Backend> DevicePreActivations<'a, B> {
    /// For maps of `grid` `(h, w)` positions per image.
    pub fn new(ctx: &'a B, grid: (usize, usize)) -> Result<Self> {
        Ok(DevicePreActivations {
            ctx,
            kernels: ctx.kernels()?,
            grid,
            units: ctx.regions(&unit_regions(grid.0, grid.1))?,
            buffers: Mutex::new(HashMap::new()),
        })
    }
}

impl<B: Backend> PreActivations for DevicePreActivations<'_, B> {
    fn pre_activations(&self, layer: &AConvLayer, x: &[f32], rows: usize) -> Result<Vec<f64>> {
        let (h, w) = self.grid;
        let units = h * w;
        if units == 0 || !rows.is_multiple_of(units) || x.len() != rows * layer.d {
            return Err(Error::shape(
                "aconv pre-activations",
                format!(
                    "{} values for {rows} positions of {} in maps of {h}x{w}",
                    x.len(),
                    layer.d
                ),
            ));
        }
        let ctx = self.ctx;
        let shape = Shape4::new(rows / units, h, w, layer.d);
        let conv = ctx.conv_layer(&layer.to_conv(false)?)?;
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let b = match buffers.entry((shape.n, layer.d, layer.filters)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(PreBuffers {
                input: ctx.tensor(shape, "aconv input")?,
                out: ctx.tensor(
                    B::conv_spec(&conv).output_shape(shape)?,
                    "aconv pre-activations",
                )?,
                pre: ctx.features((shape.n, units, layer.filters), "aconv pre-activations")?,
            }),
        };
        ctx.write(&b.input, x)?;
        ctx.submit("aconv pre-activations", &mut |r| {
            let k = &self.kernels;
            ctx.run(k, r, Op::conv(&conv, &b.input, &b.out))?;
            let pool = Op::RegionPool(&b.out, &self.units, RegionPoolMode::Sum, &b.pre);
            ctx.run(k, r, pool)
        })?;
        Ok(ctx.download(&b.pre)?.into_iter().map(f64::from).collect())
    }
}

/// One region per unit of an `h x w` map, row-major: pooling over them reads the map back.
fn unit_regions(h: usize, w: usize) -> Vec<[u32; 4]> {
    (0..h as u32)
        .flat_map(|y| (0..w as u32).map(move |x| [y, y + 1, x, x + 1]))
        .collect()
}
