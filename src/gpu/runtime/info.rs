//! A human-readable report of the adapter, for `crosspool info`.

use crate::gpu::GpuContext;
use std::fmt::Write;

impl GpuContext {
    /// Adapter, backend, the features crosspool cares about, and the limits that shape its work.
    pub fn report(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        let f = self.adapter_features;
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mib = |b: u64| format!("{} ({:.0} MiB)", b, b as f64 / (1 << 20) as f64);
        let mut s = String::new();
        let _ = writeln!(s, "adapter:    {}", i.name);
        let _ = writeln!(s, "backend:    {:?}", i.backend);
        let _ = writeln!(s, "type:       {:?}", i.device_type);
        let _ = writeln!(s, "driver:     {} {}", i.driver, i.driver_info);
        if let Some(dir) = super::shaders::override_dir() {
            // Never run edited kernels unknowingly.
            let _ = writeln!(
                s,
                "shaders:    from {} ({})",
                dir.display(),
                super::shaders::SHADER_DIR_VAR
            );
        }
        let _ = writeln!(
            s,
            "vendor:     0x{:04x}  device: 0x{:04x}",
            i.vendor, i.device
        );
        let _ = writeln!(s, "features:");
        let _ = writeln!(
            s,
            "  shader f16:          {}",
            yes(f.contains(wgpu::Features::SHADER_F16))
        );
        let _ = writeln!(
            s,
            "  subgroups:           {}",
            yes(f.contains(wgpu::Features::SUBGROUP))
        );
        let _ = writeln!(
            s,
            "  timestamp queries:   {}",
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY))
        );
        let _ = writeln!(
            s,
            "  cooperative matrix:  {}",
            yes(f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX))
        );
        let _ = writeln!(s, "limits:");
        let _ = writeln!(
            s,
            "  max buffer size:              {}",
            mib(l.max_buffer_size)
        );
        let _ = writeln!(
            s,
            "  max storage binding size:     {}",
            mib(l.max_storage_buffer_binding_size)
        );
        let _ = writeln!(
            s,
            "  binding size used:            {}",
            mib(self.binding_cap())
        );
        let _ = writeln!(
            s,
            "  storage offset alignment:     {}",
            l.min_storage_buffer_offset_alignment
        );
        let _ = writeln!(
            s,
            "  workgroup storage:            {} bytes",
            l.max_compute_workgroup_storage_size
        );
        let _ = writeln!(
            s,
            "  invocations per workgroup:    {}",
            l.max_compute_invocations_per_workgroup
        );
        let _ = writeln!(
            s,
            "  workgroups per dimension:     {}",
            l.max_compute_workgroups_per_dimension
        );
        let _ = writeln!(
            s,
            "  storage buffers per stage:    {}",
            l.max_storage_buffers_per_shader_stage
        );
        s
    }
}
