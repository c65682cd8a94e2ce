//! A layer's activation map read back to the host, for training on it (the AConv layer).
//! The map comes back through region pooling with one region per unit, so no operation
//! beyond the tested kernel entry points is needed.

use super::backend::Backend;
use super::network::{Network, Workspace};
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::model::ModelWeights;
use crate::pooling::RegionPoolMode;
use crate::shape::Shape4;

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
        let boxes: Vec<[u32; 4]> = (0..s.h as u32)
            .flat_map(|y| (0..s.w as u32).map(move |x| [y, y + 1, x, x + 1]))
            .collect();
        Ok(LayerMapsWorkspace {
            units: ctx.regions(&boxes)?,
            maps: ctx.features(input.n, s.h * s.w, s.c, "layer maps")?,
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
            ctx.region_pool(
                &self.kernels,
                r,
                x,
                &ws.units,
                RegionPoolMode::Sum,
                &ws.maps,
            )
        })?;
        ctx.download(&ws.maps)
    }
}
