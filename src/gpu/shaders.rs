//! The WGSL sources, embedded at build time, and their compilation into pipelines.

use super::GpuContext;
use crate::error::{Error, Result};

/// A WGSL source file from `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// File name under `shaders/`.
    pub name: &'static str,
    /// Its text.
    pub source: &'static str,
}

macro_rules! shader {
    ($file:literal) => {
        Shader {
            name: $file,
            source: include_str!(concat!("../../shaders/", $file)),
        }
    };
}

/// Implicit-GEMM convolution with bias and optional ReLU.
pub const CONV2D: Shader = shader!("conv2d.wgsl");
/// The 128 x 128 tile variant of [`CONV2D`].
pub const CONV2D_LARGE: Shader = shader!("conv2d_large.wgsl");
/// Max pooling.
pub const MAXPOOL2D: Shader = shader!("maxpool2d.wgsl");
/// In-place ReLU.
pub const RELU: Shader = shader!("relu.wgsl");

/// Cross-layer pooling: batched sums of outer products.
pub const CROSSLAYER: Shader = shader!("crosslayer.wgsl");
/// Channel L2, signed square root, global L2.
pub const NORMALIZE: Shader = shader!("normalize.wgsl");
/// Sign quantisation and binarisation, bit-packed.
pub const QUANTIZE: Shader = shader!("quantize.wgsl");
/// Sum / max pooling over regions (baselines, spatial pyramids).
pub const REGION_POOL: Shader = shader!("region_pool.wgsl");
/// Retrieval scores: popcounts of sign codes, or float dot products, over selected channels.
pub const SCORE: Shader = shader!("score.wgsl");

/// Every shader the crate ships; a test checks this matches the files in `shaders/`.
pub const ALL: &[Shader] = &[
    CONV2D,
    CONV2D_LARGE,
    CROSSLAYER,
    MAXPOOL2D,
    NORMALIZE,
    QUANTIZE,
    REGION_POOL,
    RELU,
    SCORE,
];

impl Shader {
    /// Parses and validates the source with naga, as wgpu will before compiling it.
    pub fn validate(&self) -> Result<naga::Module> {
        let module = naga::front::wgsl::parse_str(self.source).map_err(|e| Error::Shader {
            name: self.name,
            message: e.emit_to_string(self.source),
        })?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .map_err(|e| Error::Shader {
            name: self.name,
            message: e.emit_to_string(self.source),
        })?;
        Ok(module)
    }

    /// Compiles entry point `entry` into a compute pipeline whose bind group layout is
    /// derived from the shader. Kernels get theirs through [`GpuContext::kernel`], which
    /// compiles each entry point once per context.
    pub(crate) fn compile(&self, ctx: &GpuContext, entry: &str) -> Result<wgpu::ComputePipeline> {
        ctx.checked(&format!("compiling {}", self.name), || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(self.name),
                source: wgpu::ShaderSource::Wgsl(self.source.into()),
            };
            let checks = if ctx.unchecked_shaders {
                wgpu::ShaderRuntimeChecks::unchecked()
            } else {
                // Keep wgpu's index clamping (memory safety against a kernel bug), but not its
                // guards against division by zero and endless loops: every divisor is a
                // validated non-zero shape parameter and every loop is bounded by one, and the
                // guards cost up to half of the convolution's speed.
                let mut c = wgpu::ShaderRuntimeChecks::checked();
                c.int_div_checks = false;
                c.force_loop_bounding = false;
                c
            };
            // SAFETY: see above: the checks dropped guard against conditions the kernels
            // cannot reach (zero divisors, unbounded loops); with `unchecked_shaders` the user
            // also opted out of index clamping (`GpuOptions::unchecked_shaders`).
            let module = unsafe { ctx.device.create_shader_module_trusted(desc, checks) };
            Ok(ctx
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(self.name),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                }))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn every_shader_validates() {
        for s in ALL {
            if let Err(e) = s.validate() {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn every_file_in_shaders_dir_is_compiled_in() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".wgsl"))
            .collect();
        files.sort();
        let mut known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        known.sort();
        assert_eq!(files, known);
    }

    /// `@workgroup_size` of entry point `entry` of `shader`, as naga resolved it.
    pub(crate) fn wgsl_workgroup_size(shader: &Shader, entry: &str) -> [u32; 3] {
        let module = shader.validate().unwrap();
        module
            .entry_points
            .iter()
            .find(|e| e.name == entry)
            .unwrap_or_else(|| panic!("no entry point {entry} in {}", shader.name))
            .workgroup_size
    }

    #[test]
    fn every_entry_point_runs_the_workgroup_size_its_host_dispatches_for() {
        use crate::gpu::{conv, crosslayer, normalize, pool, quantize, region_pool, relu, score};
        let flat = |n: u32| [n, 1, 1];
        let table: &[(&Shader, &str, [u32; 3])] = &[
            (&CONV2D, "main", [conv::WG_X, conv::WG_Y, 1]),
            (&CONV2D_LARGE, "main", [conv::WG_X, conv::WG_Y, 1]),
            (&CROSSLAYER, "main", [crosslayer::WG_X, crosslayer::WG_Y, 1]),
            (&MAXPOOL2D, "main", flat(pool::WORKGROUP)),
            (&NORMALIZE, "rows", flat(normalize::WORKGROUP)),
            (&NORMALIZE, "global", flat(normalize::WORKGROUP)),
            (&QUANTIZE, "sign2", flat(quantize::WORKGROUP)),
            (&QUANTIZE, "bits1", flat(quantize::WORKGROUP)),
            (&REGION_POOL, "main", flat(region_pool::WORKGROUP)),
            (&RELU, "main", flat(relu::WORKGROUP)),
            (&SCORE, "bits1", flat(score::WORKGROUP)),
            (&SCORE, "sign2", flat(score::WORKGROUP)),
            (&SCORE, "floats", flat(score::WORKGROUP)),
        ];
        for (shader, entry, want) in table {
            assert_eq!(
                wgsl_workgroup_size(shader, entry),
                *want,
                "{} {entry}",
                shader.name
            );
        }
        // Every entry point of every shader is in the table.
        let listed: usize = ALL
            .iter()
            .map(|s| s.validate().unwrap().entry_points.len())
            .sum();
        assert_eq!(listed, table.len());
        // The shaders take their sizes from the constants the hosts check, not literals.
        for s in ALL {
            let literal = s
                .source
                .match_indices("@workgroup_size(")
                .any(|(i, m)| s.source[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
            assert!(!literal, "{} spells a workgroup size as a literal", s.name);
        }
        assert_eq!(conv::WG_X * conv::WG_Y, conv::THREADS);
        assert_eq!(wgsl_u32_const(&CONV2D, "WG_X"), conv::WG_X);
        assert_eq!(wgsl_u32_const(&CROSSLAYER, "WG_Y"), crosslayer::WG_Y);
    }

    /// (member name, byte offset) of the WGSL struct `name` in `shader`.
    pub(crate) fn wgsl_struct_layout(shader: &Shader, name: &str) -> (Vec<(String, u32)>, u32) {
        let module = shader.validate().unwrap();
        for (_, ty) in module.types.iter() {
            if ty.name.as_deref() == Some(name) {
                if let naga::TypeInner::Struct { members, span } = &ty.inner {
                    let m = members
                        .iter()
                        .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                        .collect();
                    return (m, *span);
                }
            }
        }
        panic!("struct {name} not found in {}", shader.name);
    }

    /// Value of the WGSL `const NAME: u32` in `shader`.
    pub(crate) fn wgsl_u32_const(shader: &Shader, name: &str) -> u32 {
        let module = shader.validate().unwrap();
        for (_, c) in module.constants.iter() {
            if c.name.as_deref() == Some(name) {
                if let naga::Expression::Literal(naga::Literal::U32(v)) =
                    module.global_expressions[c.init]
                {
                    return v;
                }
            }
        }
        panic!("const {name} not found in {}", shader.name);
    }
}
