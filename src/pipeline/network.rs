//! A whole network on the GPU: every layer recorded into one command buffer, intermediate
//! activations in two ping-pong buffers reused across layers and across calls, and only the
//! requested layers kept in buffers of their own.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::gpu::MaxPool2dKernel;
use crate::gpu::{Conv2dKernel, GpuConv2d};
use crate::gpu::{GpuBuffer, GpuTensor};
use crate::model::{Arch, LayerKind, ModelWeights};
use crate::shape::{MaxPool2dSpec, Shape4};

enum GpuLayer {
    Conv(GpuConv2d),
    Pool(MaxPool2dSpec),
}

/// A network's layers uploaded to the device, up to the last layer whose weights were loaded.
pub struct GpuNetwork {
    /// Architecture.
    pub arch: Arch,
    names: Vec<String>,
    layers: Vec<GpuLayer>,
    conv: Conv2dKernel,
    pool: MaxPool2dKernel,
}

/// Buffers for one input shape, kept between calls so that a stream of equal-sized batches
/// allocates nothing after the first.
pub struct Workspace {
    input: Shape4,
    wanted: Vec<usize>,
    scratch: [GpuBuffer; 2],
    outputs: Vec<GpuTensor>,
    shapes: Vec<Shape4>,
}

impl GpuNetwork {
    /// Uploads the loaded layers of `weights`, including the pooling layers between them.
    pub fn new(ctx: &GpuContext, weights: &ModelWeights) -> Result<Self> {
        let mut names = Vec::new();
        let mut layers = Vec::new();
        // Every layer up to the first whose weights were not loaded (pooling needs none).
        for layer in weights.arch.layers() {
            let gpu = match &layer.kind {
                LayerKind::Conv { .. } => match weights.layer(&layer.name) {
                    Some(w) => GpuLayer::Conv(GpuConv2d::upload(ctx, w)?),
                    None => break,
                },
                LayerKind::MaxPool(spec) => GpuLayer::Pool(*spec),
            };
            names.push(layer.name.clone());
            layers.push(gpu);
        }
        Ok(GpuNetwork {
            arch: weights.arch,
            names,
            layers,
            conv: Conv2dKernel::new(ctx)?,
            pool: MaxPool2dKernel::new(ctx)?,
        })
    }

    /// Names of the layers available, in order.
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Output shape of every layer for `input`.
    pub fn shapes(&self, input: Shape4) -> Result<Vec<Shape4>> {
        self.shapes_through(input, self.layers.len().saturating_sub(1))
    }

    /// Output shapes of the layers up to and including layer `last` (layers after it may not
    /// accept an input that small, and are not run).
    fn shapes_through(&self, input: Shape4, last: usize) -> Result<Vec<Shape4>> {
        let mut s = input;
        self.layers
            .iter()
            .take(last + 1)
            .map(|l| {
                s = match l {
                    GpuLayer::Conv(c) => c.spec.output_shape(s)?,
                    GpuLayer::Pool(p) => p.output_shape(s)?,
                };
                Ok(s)
            })
            .collect()
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Config(format!(
                "layer '{name}' is not available (loaded: {}); {} layers are: {}",
                self.names.join(", "),
                self.arch,
                self.arch
                    .layers()
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Allocates buffers for running `input`-shaped batches and keeping the `wanted` layers.
    pub fn workspace(&self, ctx: &GpuContext, input: Shape4, wanted: &[&str]) -> Result<Workspace> {
        if input.c != 3 {
            return Err(Error::shape(
                "network input",
                format!("expected 3 channels, got {input}"),
            ));
        }
        let wanted: Vec<usize> = wanted
            .iter()
            .map(|n| self.index_of(n))
            .collect::<Result<_>>()?;
        let last = *wanted
            .iter()
            .max()
            .ok_or_else(|| Error::Config("no output layer requested".into()))?;
        let shapes = self.shapes_through(input, last)?;
        let scratch_bytes = shapes[..=last]
            .iter()
            .enumerate()
            .filter(|(i, _)| !wanted.contains(i))
            .map(|(_, s)| s.bytes_f32())
            .max()
            .unwrap_or(4);
        let scratch = [
            ctx.storage_buffer(scratch_bytes, "activations A")?,
            ctx.storage_buffer(scratch_bytes, "activations B")?,
        ];
        let outputs = wanted
            .iter()
            .map(|&i| GpuTensor::new(ctx, shapes[i], &self.names[i]))
            .collect::<Result<_>>()?;
        Ok(Workspace {
            input,
            wanted,
            scratch,
            outputs,
            shapes,
        })
    }

    /// Runs the network on `input` up to the deepest wanted layer and submits; the wanted
    /// activations are left in `ws`'s output tensors, in the order they were requested.
    pub fn forward<'w>(
        &self,
        ctx: &GpuContext,
        input: &GpuTensor,
        ws: &'w Workspace,
    ) -> Result<&'w [GpuTensor]> {
        ctx.submit("network forward", |enc| self.record(ctx, enc, input, ws))?;
        Ok(&ws.outputs)
    }

    /// Records the forward pass into `enc` (so that later stages can join the same submission).
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        ws: &Workspace,
    ) -> Result<()> {
        for (i, (prev, out)) in self.layer_io(input, ws)?.iter().enumerate() {
            self.record_layer(ctx, enc, i, prev, out)?;
        }
        Ok(())
    }

    /// Runs the layers one submission each, waiting for each, and returns every layer's name,
    /// wall time in seconds and floating-point operations: a per-layer profile. (Waiting
    /// between layers costs a little; the pipelined [`GpuNetwork::record`] does not.)
    pub fn profile(
        &self,
        ctx: &GpuContext,
        input: &GpuTensor,
        ws: &Workspace,
    ) -> Result<Vec<(String, f64, f64)>> {
        let mut out = Vec::new();
        ctx.wait("profile")?;
        for (i, (prev, next)) in self.layer_io(input, ws)?.iter().enumerate() {
            let t = std::time::Instant::now();
            ctx.submit("profile layer", |enc| {
                self.record_layer(ctx, enc, i, prev, next)
            })?;
            ctx.wait("profile layer")?;
            let flops = match &self.layers[i] {
                GpuLayer::Conv(c) => c.spec.flops(prev.shape)?,
                GpuLayer::Pool(_) => 0.0,
            };
            out.push((self.names[i].clone(), t.elapsed().as_secs_f64(), flops));
        }
        Ok(out)
    }

    /// Floating-point operations of the forward pass for `input` up to the workspace's last
    /// wanted layer.
    pub fn flops(&self, input: &GpuTensor, ws: &Workspace) -> Result<f64> {
        let mut total = 0.0;
        for (i, (prev, _)) in self.layer_io(input, ws)?.iter().enumerate() {
            if let GpuLayer::Conv(c) = &self.layers[i] {
                total += c.spec.flops(prev.shape)?;
            }
        }
        Ok(total)
    }

    /// (input, output) tensor views of each layer up to the deepest wanted one.
    fn layer_io(&self, input: &GpuTensor, ws: &Workspace) -> Result<Vec<(GpuTensor, GpuTensor)>> {
        if input.shape != ws.input {
            return Err(Error::shape(
                "network input",
                format!(
                    "workspace was made for {} but the input is {}",
                    ws.input, input.shape
                ),
            ));
        }
        let last = *ws.wanted.iter().max().unwrap_or(&0);
        let mut prev = GpuTensor {
            buffer: input.buffer.clone(),
            shape: input.shape,
        };
        let mut io = Vec::with_capacity(last + 1);
        for i in 0..=last {
            let out = match ws.wanted.iter().position(|&w| w == i) {
                Some(k) => GpuTensor {
                    buffer: ws.outputs[k].buffer.clone(),
                    shape: ws.shapes[i],
                },
                None => GpuTensor {
                    buffer: ws.scratch[i % 2].clone(),
                    shape: ws.shapes[i],
                },
            };
            io.push((
                prev,
                GpuTensor {
                    buffer: out.buffer.clone(),
                    shape: out.shape,
                },
            ));
            prev = out;
        }
        Ok(io)
    }

    fn record_layer(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        i: usize,
        prev: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        match &self.layers[i] {
            GpuLayer::Conv(c) => self.conv.record(ctx, enc, c, prev, out),
            GpuLayer::Pool(p) => self.pool.record(ctx, enc, *p, prev, out),
        }
    }
}

impl Workspace {
    /// The wanted activations, in the order requested (valid after a forward pass).
    pub fn outputs(&self) -> &[GpuTensor] {
        &self.outputs
    }
}
