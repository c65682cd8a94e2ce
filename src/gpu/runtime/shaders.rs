//! The WGSL sources, embedded at build time, and their compilation into pipelines.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// A WGSL source file from `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// File name under `shaders/`.
    pub name: &'static str,
    /// Its text.
    pub source: &'static str,
    /// Values for the source's pipeline-overridable constants (WGSL `override`), by name;
    /// those not named keep their declared default. Set by [`Shader::with_constants`].
    pub constants: &'static [(&'static str, f64)],
    /// For a source embedded from `shaders/`: its file and the preludes put in front of it
    /// (from `shaders/include/`, in order), which `CROSSPOOL_SHADER_DIR` can replace; `None`
    /// for a variant made from one.
    files: Option<(&'static str, &'static [&'static str])>,
}

/// The environment variable naming a folder laid out as `shaders/` whose files replace the
/// embedded ones: to try an edited kernel (say, under `crosspool selftest`) without
/// rebuilding.
pub const SHADER_DIR_VAR: &str = "CROSSPOOL_SHADER_DIR";

/// The folder [`SHADER_DIR_VAR`] names, read once per process.
pub fn override_dir() -> Option<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os(SHADER_DIR_VAR)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    })
    .as_deref()
}

/// A shader embedded from `shaders/` (`shader!("file.wgsl")`), optionally with a shared part
/// from `shaders/include/` put in front (`shader!("file.wgsl", "prelude.wgsl")`: WGSL has no
/// includes). Each kernel family declares its own sources with it.
macro_rules! shader {
    ($file:literal $(, $prelude:literal)*) => {
        $crate::gpu::shaders::Shader::embedded(
            $file,
            concat!(
                $(
                    include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/shaders/include/",
                        $prelude
                    )),
                    "\n",
                )*
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file))
            ),
            &[$($prelude),*],
        )
    };
}
pub(crate) use shader;

/// Declares the `#[repr(C)]` host mirror of a WGSL uniform block whose fields are all `u32`,
/// and a test, named after `test`, that holds its size and each field's name and offset to the
/// struct of the same name in `shader`, so the two cannot drift apart:
/// `wgsl_uniform! { /// doc  pub struct T in SHADER, test t_matches_wgsl { a, b, _pad0 } }`.
macro_rules! wgsl_uniform {
    (
        $(#[$meta:meta])*
        $vis:vis struct $t:ident in $shader:expr, test $test:ident { $($f:ident),* $(,)? }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $t { $($f: u32),* }

        #[cfg(test)]
        #[test]
        fn $test() {
            let (members, size) =
                $crate::gpu::shaders::tests::wgsl_struct_layout(&$shader, stringify!($t));
            assert_eq!(size as usize, std::mem::size_of::<$t>(), "size of {}", stringify!($t));
            let offsets: Vec<(String, u32)> =
                vec![$((stringify!($f).to_string(), std::mem::offset_of!($t, $f) as u32)),*];
            assert_eq!(members, offsets, "fields of {}", stringify!($t));
        }
    };
}
pub(crate) use wgsl_uniform;

/// Variants made by [`Shader::specialise`], by (shader, rewrites): each is made once and kept
/// for the life of the process (a handful of types per kernel), so that kernels can name them
/// with `'static` strings as they do the embedded sources.
type VariantKey = (&'static str, Vec<(String, String)>);
static VARIANTS: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<VariantKey, Shader>>,
> = std::sync::OnceLock::new();

impl Shader {
    /// The embedded source of `file` (with `preludes` in front); for [`shader!`].
    pub(crate) const fn embedded(
        file: &'static str,
        source: &'static str,
        preludes: &'static [&'static str],
    ) -> Shader {
        Shader {
            name: file,
            source,
            constants: &[],
            files: Some((file, preludes)),
        }
    }

    /// This shader as it is compiled: its files read from [`SHADER_DIR_VAR`]'s folder where
    /// that is set (each file once per process), else itself. A file missing there is an
    /// error, so that no run mixes edited and embedded kernels unknowingly.
    pub fn effective(&self) -> Result<Shader> {
        let (Some((file, preludes)), Some(dir)) = (self.files, override_dir()) else {
            return Ok(*self);
        };
        type Read = std::collections::HashMap<&'static str, &'static str>;
        static READ: std::sync::OnceLock<std::sync::Mutex<Read>> = std::sync::OnceLock::new();
        let mut held = READ
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(source) = held.get(file) {
            return Ok(Shader {
                source,
                files: None,
                ..*self
            });
        }
        let read = |rel: String| {
            let path = dir.join(&rel);
            std::fs::read_to_string(&path).map_err(|e| Error::Shader {
                name: self.name,
                message: format!("{SHADER_DIR_VAR}: reading {}: {e}", path.display()),
            })
        };
        let mut source = String::new();
        for p in preludes {
            source += &read(format!("include/{p}"))?;
            source.push('\n');
        }
        source += &read(file.to_string())?;
        let source: &'static str = Box::leak(source.into_boxed_str());
        held.insert(file, source);
        Ok(Shader {
            source,
            files: None,
            ..*self
        })
    }

    /// This shader with whole lines rewritten: each `(from, to)` replaces the one line equal
    /// to `from` (it must occur exactly once), and `enable f16;` is put first when a rewrite
    /// names f16. Kernels use it for their storage-type variants (`alias in_t = f32;` ->
    /// `alias in_t = f16;`), so that every variant is the one reviewed source.
    pub fn specialise(&self, rewrites: &[(&str, &str)]) -> Result<Shader> {
        let base = self.effective()?;
        if rewrites.iter().all(|(from, to)| from == to) {
            return Ok(base);
        }
        let key: VariantKey = (
            self.name,
            rewrites
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        let variants = VARIANTS.get_or_init(Default::default);
        let mut held = variants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = held.get(&key) {
            return Ok(*s);
        }
        let mut lines: Vec<&str> = base.source.lines().collect();
        for (from, to) in rewrites {
            let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == *from).collect();
            if at.len() != 1 {
                return Err(Error::Shader {
                    name: self.name,
                    message: format!(
                        "specialising: the line `{from}` occurs {} times, not once",
                        at.len()
                    ),
                });
            }
            lines[at[0]] = to;
        }
        let f16 = rewrites.iter().any(|(_, to)| to.contains("f16")) && !base.needs_f16();
        let source = format!(
            "{}{}\n",
            if f16 { "enable f16;\n" } else { "" },
            lines.join("\n")
        );
        let name = format!(
            "{}[{}]",
            self.name,
            rewrites
                .iter()
                .filter(|(a, b)| a != b)
                .map(|(_, b)| b.trim_end_matches(';'))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let shader = Shader {
            name: Box::leak(name.into_boxed_str()),
            source: Box::leak(source.into_boxed_str()),
            constants: base.constants,
            files: None,
        };
        held.insert(key, shader);
        Ok(shader)
    }

    /// This shader with its `override` constants set to `constants` (by name), for the
    /// variants that differ in a value rather than a type (the large tile's `STAGES`, the
    /// range `ACT_LIMIT` of an f16 layer): the source stays the reviewed text, and the values
    /// reach the driver as pipeline constants. The name records them (`file{STAGES=2}`), so
    /// it keys the pipeline cache apart from the default. A name the source does not declare
    /// is an error when the shader is validated or compiled.
    pub fn with_constants(&self, constants: &[(&'static str, f64)]) -> Shader {
        if constants.is_empty() {
            return *self;
        }
        type Key = (&'static str, Vec<(&'static str, u64)>);
        static MADE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<Key, Shader>>> =
            std::sync::OnceLock::new();
        let key: Key = (
            self.name,
            constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        );
        let mut held = MADE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *held.entry(key).or_insert_with(|| {
            let values: Vec<String> = constants.iter().map(|(n, v)| format!("{n}={v}")).collect();
            Shader {
                name: Box::leak(format!("{}{{{}}}", self.name, values.join(", ")).into_boxed_str()),
                constants: Box::leak(constants.to_vec().into_boxed_slice()),
                ..*self
            }
        })
    }

    /// Whether the source declares `enable f16;` (it then needs the device's SHADER_F16).
    pub fn needs_f16(&self) -> bool {
        self.source.lines().any(|l| l == "enable f16;")
    }

    /// Whether the source uses cooperative matrices (the device's experimental
    /// EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub fn needs_cooperative_matrix(&self) -> bool {
        self.source
            .lines()
            .any(|l| l == "enable wgpu_cooperative_matrix;")
    }

    /// The naga capabilities the source needs.
    pub fn capabilities(&self) -> naga::valid::Capabilities {
        let mut caps = naga::valid::Capabilities::empty();
        if self.needs_f16() {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        if self.needs_cooperative_matrix() {
            caps |= naga::valid::Capabilities::COOPERATIVE_MATRIX;
        }
        caps
    }

    /// Parses and validates the source with naga, as wgpu will before compiling it.
    pub fn validate(&self) -> Result<naga::Module> {
        Ok(self.validate_info()?.0)
    }

    /// [`Shader::validate`], with the validator's module info (what a backend writer needs).
    pub fn validate_info(&self) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
        let module = naga::front::wgsl::parse_str(self.source).map_err(|e| Error::Shader {
            name: self.name,
            message: e.emit_to_string(self.source),
        })?;
        let info =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), self.capabilities())
                .validate(&module)
                .map_err(|e| Error::Shader {
                    name: self.name,
                    message: e.emit_to_string(self.source),
                })?;
        if module.overrides.is_empty() && self.constants.is_empty() {
            return Ok((module, info));
        }
        // Resolve the `override` constants as the driver will, so that what is checked
        // (and translated to SPIR-V by the tests) is the variant that runs.
        let mut values = naga::back::PipelineConstants::default();
        for &(name, value) in self.constants {
            values.insert(name.to_string(), value);
        }
        let (module, info) =
            naga::back::pipeline_constants::process_overrides(&module, &info, None, &values)
                .map_err(|e| Error::Shader {
                    name: self.name,
                    message: format!("setting its override constants {:?}: {e}", self.constants),
                })?;
        Ok((module.into_owned(), info.into_owned()))
    }

    /// Compiles entry point `entry` into a compute pipeline whose bind group layout is
    /// derived from the shader. Kernels get theirs through [`GpuContext::kernel`], which
    /// compiles each entry point once per context.
    pub(crate) fn compile(&self, ctx: &GpuContext, entry: &str) -> Result<wgpu::ComputePipeline> {
        let this = self.effective()?;
        ctx.checked(&format!("compiling {}", self.name), || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(self.name),
                source: wgpu::ShaderSource::Wgsl(this.source.into()),
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
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: this.constants,
                        ..Default::default()
                    },
                    cache: None,
                }))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::conv::{
        CONV2D, CONV2D_COOP, CONV2D_LARGE, CONV2D_SPLITK_REDUCE, CONV2D_WHOLE_K,
    };
    use crate::gpu::crosslayer::CROSSLAYER;
    use crate::gpu::normalize::NORMALIZE;
    use crate::gpu::pool::MAXPOOL2D;
    use crate::gpu::quantize::QUANTIZE;
    use crate::gpu::region_pool::REGION_POOL;
    use crate::gpu::relu::RELU;
    use crate::gpu::score::SCORE;

    #[test]
    fn every_shader_validates() {
        for s in &crate::gpu::kernels::all_shaders() {
            if let Err(e) = s.validate() {
                panic!("{e}");
            }
        }
    }

    /// SPIRV-Tools' validator: `SPIRV_VAL`, else the one `tools/install_spirv_val.sh` puts
    /// in tools/.spirv-venv (a distribution's may predate cooperative matrices).
    fn spirv_val() -> std::path::PathBuf {
        let path = std::env::var_os("SPIRV_VAL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tools/.spirv-venv/bin/spirv-val")
            });
        assert!(
            path.exists(),
            "{} is missing: run bash tools/install_spirv_val.sh (or set SPIRV_VAL)",
            path.display()
        );
        path
    }

    /// Translates `shader` to SPIR-V with naga, as wgpu's Vulkan backend does, and has
    /// spirv-val check it: the one check of a kernel that no CI adapter can run. The target
    /// environment is SPIR-V 1.5 rather than Vulkan's, whose rule VUID-10684 rejects the
    /// ArrayStride naga puts on every workgroup array (drivers accept it).
    pub(crate) fn assert_valid_spirv(shader: &Shader) {
        let (module, info) = shader
            .validate_info()
            .unwrap_or_else(|e| panic!("{}: {e}", shader.name));
        let options = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let words = naga::back::spv::write_vec(&module, &info, &options, None)
            .unwrap_or_else(|e| panic!("{}: writing SPIR-V: {e}", shader.name));
        // One file per call: tests on parallel threads may check the same shader.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let file = std::env::temp_dir().join(format!(
            "crosspool-{}-{}.spv",
            std::process::id(),
            CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&file, bytemuck::cast_slice(&words)).unwrap();
        let out = std::process::Command::new(spirv_val())
            .args(["--target-env", "spv1.5"])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{}: spirv-val: {}{}",
            shader.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn every_shader_translates_to_valid_spirv() {
        for s in &crate::gpu::kernels::all_shaders() {
            assert_valid_spirv(s);
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
        let mut known: Vec<&str> = crate::gpu::kernels::all_shaders()
            .iter()
            .map(|s| s.name)
            .collect();
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
            (&CONV2D_COOP, "main", [conv::COOP_WG, 1, 1]),
            (&CONV2D_SPLITK_REDUCE, "main", flat(conv::REDUCE_WORKGROUP)),
            (&CONV2D_WHOLE_K, "main", [conv::WG_X, conv::WG_Y, 1]),
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
        let listed: usize = crate::gpu::kernels::all_shaders()
            .iter()
            .map(|s| s.validate().unwrap().entry_points.len())
            .sum();
        assert_eq!(listed, table.len());
        // The shaders take their sizes from the constants the hosts check, not literals.
        for s in &crate::gpu::kernels::all_shaders() {
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
        match wgsl_const(shader, name) {
            naga::Literal::U32(v) => v,
            other => panic!("const {name} of {} is {other:?}, not a u32", shader.name),
        }
    }

    /// Value of the WGSL constant `name` in `shader` as it runs: an `override` has the value
    /// the shader's pipeline constants give it, else its default.
    pub(crate) fn wgsl_const(shader: &Shader, name: &str) -> naga::Literal {
        let module = shader.validate().unwrap();
        for (_, c) in module.constants.iter() {
            if c.name.as_deref() == Some(name) {
                if let naga::Expression::Literal(v) = module.global_expressions[c.init] {
                    return v;
                }
            }
        }
        panic!("const {name} not found in {}", shader.name);
    }

    #[test]
    fn override_constants_reach_the_module_and_key_the_variant() {
        use crate::gpu::conv::{CONV2D_LARGE, CONV2D_SPLITK_REDUCE};
        let two = CONV2D_LARGE.with_constants(&[("STAGES", 2.0)]);
        assert_eq!(wgsl_const(&CONV2D_LARGE, "STAGES"), naga::Literal::U32(1));
        assert_eq!(wgsl_const(&two, "STAGES"), naga::Literal::U32(2));
        assert_ne!(
            two.name, CONV2D_LARGE.name,
            "the pipeline cache keys by name"
        );
        assert_eq!(two.source, CONV2D_LARGE.source, "no text rewrite");
        // Made once: the same request is the same variant.
        assert_eq!(
            two.name.as_ptr(),
            CONV2D_LARGE
                .with_constants(&[("STAGES", 2.0)])
                .name
                .as_ptr()
        );
        assert_valid_spirv(&two);
        let limit = CONV2D_SPLITK_REDUCE.with_constants(&[("ACT_LIMIT", 65504.0)]);
        assert_eq!(wgsl_const(&limit, "ACT_LIMIT"), naga::Literal::F32(65504.0));
        // A constant the source does not declare is refused, not ignored.
        let e = CONV2D_LARGE
            .with_constants(&[("STAGE", 2.0)])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("override"), "{e}");
    }
}
