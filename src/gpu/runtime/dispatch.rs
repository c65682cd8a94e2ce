//! Recording one compute dispatch: a uniform parameter block plus storage bindings.

use super::buffer::Binding;
use super::cache::Kernel;
use crate::gpu::GpuContext;

/// How many workgroups a dispatch runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grid {
    /// Exactly these workgroups along x, y and z.
    Groups(u32, u32, u32),
    /// At least `threads` threads, one an element, in workgroups of `workgroup` threads: a
    /// grid from [`grid_for`] within the device limit.
    Threads(u64, u32),
}

impl From<(u32, u32, u32)> for Grid {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Grid::Groups(x, y, z)
    }
}

/// Records a dispatch of `kernel` with `params` at binding 0 and `storage[i]` at binding i+1.
/// The bind group (and its uniform buffer) comes from the context's cache: recording the same
/// dispatch again creates nothing.
pub(crate) fn record<P: bytemuck::Pod>(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    kernel: &Kernel,
    params: &P,
    storage: &[Binding<'_>],
    grid: impl Into<Grid>,
) {
    let (x, y, z) = match grid.into() {
        Grid::Groups(x, y, z) => (x, y, z),
        Grid::Threads(threads, workgroup) => {
            grid_for(threads.div_ceil(workgroup as u64), ctx.max_workgroups())
        }
    };
    let bind_group = ctx.bind_group(kernel, bytemuck::bytes_of(params), storage);
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(kernel.id.0),
        timestamp_writes: None,
    });
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(x, y, z);
}

/// A 2-D grid of at least `groups` workgroups, each side within the device limit; shaders
/// linearise it as `wid.y * num_workgroups.x + wid.x` and skip the excess.
pub(crate) fn grid_for(groups: u64, max_per_dim: u32) -> (u32, u32, u32) {
    let x = groups.clamp(1, max_per_dim as u64);
    let y = groups.div_ceil(x).max(1);
    (x as u32, y as u32, 1)
}

impl GpuContext {
    /// Records work with `f` into one command encoder and submits it, checking for errors.
    pub fn submit(
        &self,
        during: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> crate::Result<()>,
    ) -> crate::Result<()> {
        self.checked(during, || {
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some(during),
                });
            f(&mut enc)?;
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}
