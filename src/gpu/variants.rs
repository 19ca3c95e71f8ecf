//! Every pipeline variant the planner can build (an entry point with the override constants it is
//! specialised by), and each one translated by naga for every wgpu backend without a GPU:
//! SPIR-V (Vulkan), GLSL ES (GL), MSL (Metal), HLSL (DX12) and the assembled WGSL.
//!
//! `pipelines.rs` builds its pipelines from [`Variant::planned`] and [`Variant::constants`], so the
//! list checked here ([`all_variants`]) is made of the same constants as what runs.

use super::kernels::{
    loss_code, seq_part_inputs, seq_part_is_weights, seq_part_layer, seq_repeat, KernelId,
    PART_OUTPUT_WEIGHTS, SEQ_MAX_R, SEQ_WG,
};
use super::specialise::{parsed, specialise, validator, Parsed};
use crate::error::{Error, Result};
use crate::model::{Activation, Loss, Model};
use naga::back::{glsl, hlsl, msl, spv};

/// Every loss a pipeline can be specialised for (`LOSS`).
pub const LOSSES: [Loss; 2] = [Loss::Mse, Loss::CrossEntropy];

/// The override constants of one `reuse_seq` part's pipeline (`shaders/reuse_seq.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqConstants {
    /// `SEQ_KIND`: the activation of the part's layer.
    pub kind: Activation,
    /// `SEQ_CLOSED`: a hidden part under the closed-form output layer.
    pub closed: bool,
    /// `SEQ_FROM_INPUTS`: weights of the first layer, whose inputs are read from the data.
    pub from_inputs: bool,
    /// `SEQ_R`: weights per invocation (1 for biases).
    pub r: u32,
}

/// One pipeline: a kernel's entry point and every override constant it is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The kernel (for `reuse_seq`, with its part: `SEQ_PART`).
    pub kernel: KernelId,
    /// `LOSS`, which every pipeline is specialised for.
    pub loss: Loss,
    /// The `reuse_seq` constants; `None` for every other kernel.
    pub seq: Option<SeqConstants>,
    /// `forward_sample`'s kernels with [`FWD_NARROW_WG`] invocations per workgroup (`FWD_WG`),
    /// for a model no layer of which is wider.
    pub narrow: bool,
}

/// Invocations per workgroup of `nudged_sse`, `spsa_sse` and `forward_store` (`FWD_WG` in
/// `shaders/forward.wgsl`) for a model whose every layer has at most this many units: one SIMD
/// group of llvmpipe (256 bits of f32), instead of [`super::WG_SIZE`] invocations with all but a
/// few idle at each barrier. Each unit loop then makes one pass under either size, so the loop-pass
/// counts ([`super::loop_passes`], which count with `WG_SIZE`) hold for both.
pub const FWD_NARROW_WG: u32 = 8;

/// Whether `kernel` runs `forward_sample` with `FWD_WG` invocations per workgroup.
fn is_forward(kernel: KernelId) -> bool {
    matches!(
        kernel,
        KernelId::NudgedSse | KernelId::SpsaSse | KernelId::ForwardStore
    )
}

impl Variant {
    /// The variant `pipelines.rs` builds for `kernel` of `model` (`closed`: reuse with the
    /// closed-form output layer).
    pub fn planned(model: &Model, closed: bool, loss: Loss, kernel: KernelId) -> Variant {
        let seq = match kernel {
            KernelId::ReuseSeq(part) => {
                let l = seq_part_layer(model, part);
                Some(SeqConstants {
                    kind: model.layers()[l].activation,
                    closed: closed && l + 1 < model.layers().len(),
                    from_inputs: l == 0 && seq_part_is_weights(part),
                    r: seq_repeat(seq_part_inputs(model, part)),
                })
            }
            _ => None,
        };
        let narrow = is_forward(kernel) && model.max_width() <= FWD_NARROW_WG as usize;
        Variant {
            kernel,
            loss,
            seq,
            narrow,
        }
    }

    /// The WGSL entry point.
    pub fn entry_point(&self) -> &'static str {
        self.kernel.entry_point()
    }

    /// The pipeline's override constants, as wgpu and naga take them.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        let mut c = vec![("LOSS", loss_code(self.loss) as f64)];
        if self.kernel == KernelId::SpsaSse {
            c.push(("FWD_SPSA", 1.0));
        }
        if self.narrow {
            c.push(("FWD_WG", FWD_NARROW_WG as f64));
        }
        if let (KernelId::ReuseSeq(part), Some(s)) = (self.kernel, self.seq) {
            c.extend([
                ("SEQ_PART", part as f64),
                ("SEQ_KIND", s.kind.code() as f64),
                ("SEQ_CLOSED", s.closed as u32 as f64),
                ("SEQ_FROM_INPUTS", s.from_inputs as u32 as f64),
                ("SEQ_R", s.r as f64),
            ]);
        }
        c
    }

    /// A file name without extension: `nudged_sse-mse`, `nudged_sse-wg8-mse`,
    /// `reuse_seq-p2-relu-inputs-r4-xent`.
    pub fn name(&self) -> String {
        let loss = match self.loss {
            Loss::Mse => "mse",
            Loss::CrossEntropy => "xent",
        };
        match (self.kernel, self.seq) {
            (KernelId::ReuseSeq(part), Some(s)) => format!(
                "{}-p{part}-{}{}{}-r{}-{loss}",
                self.entry_point(),
                s.kind.name(),
                if s.closed { "-closed" } else { "" },
                if s.from_inputs { "-inputs" } else { "" },
                s.r
            ),
            _ if self.narrow => format!("{}-wg{FWD_NARROW_WG}-{loss}", self.entry_point()),
            _ => format!("{}-{loss}", self.entry_point()),
        }
    }
}

/// Every `SEQ_R` the planner can choose for a weights part: [`seq_repeat`] over input counts from
/// 1 up to where it has settled on [`SEQ_MAX_R`] (larger layers only amortise the shared loads
/// further).
fn reachable_repeats() -> Vec<u32> {
    let far = (SEQ_WG * SEQ_MAX_R * SEQ_MAX_R * 4) as u64;
    let mut rs: Vec<u32> = (1..=far).map(seq_repeat).collect();
    rs.sort_unstable();
    rs.dedup();
    rs
}

/// The `reuse_seq` constants reachable for `part` under `loss`: closed only for the hidden parts,
/// first-layer inputs and `SEQ_R` above 1 only for weights, and under cross-entropy an identity
/// output layer (the only one [`Loss::check`] allows).
fn seq_variants(part: u32, loss: Loss) -> Vec<SeqConstants> {
    let output = part >= PART_OUTPUT_WEIGHTS;
    let weights = seq_part_is_weights(part);
    let kinds: &[Activation] = match (output, loss) {
        (true, Loss::CrossEntropy) => &[Activation::Identity],
        _ => &Activation::ALL,
    };
    let closed: &[bool] = if output { &[false] } else { &[false, true] };
    let from_inputs: &[bool] = if weights { &[false, true] } else { &[false] };
    let repeats = if weights {
        reachable_repeats()
    } else {
        vec![1]
    };
    let mut out = Vec::new();
    for &kind in kinds {
        for &closed in closed {
            for &from_inputs in from_inputs {
                for &r in &repeats {
                    out.push(SeqConstants {
                        kind,
                        closed,
                        from_inputs,
                        r,
                    });
                }
            }
        }
    }
    out
}

/// Every pipeline variant the planner can build: each kernel of [`KernelId::ALL`] for each loss,
/// each `reuse_seq` part with each reachable combination of its constants.
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for kernel in KernelId::ALL {
        for loss in LOSSES {
            match kernel {
                KernelId::ReuseSeq(part) => {
                    out.extend(seq_variants(part, loss).into_iter().map(|s| Variant {
                        kernel,
                        loss,
                        seq: Some(s),
                        narrow: false,
                    }))
                }
                _ => {
                    for narrow in [false, true]
                        .into_iter()
                        .filter(|&n| !n || is_forward(kernel))
                    {
                        out.push(Variant {
                            kernel,
                            loss,
                            seq: None,
                            narrow,
                        });
                    }
                }
            }
        }
    }
    out
}

/// A shading language naga writes for a wgpu backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// SPIR-V 1.3 (Vulkan 1.1), `.spv`.
    Spv,
    /// GLSL ES 3.10 compute, as wgpu's GL backend needs for compute, `.comp`.
    Glsl,
    /// Metal Shading Language 2.0, `.metal`.
    Msl,
    /// HLSL shader model 5.1 (wgpu's DX12 floor, FXC), `.hlsl`.
    Hlsl,
    /// The assembled WGSL with the variant's constants in a header comment, `.wgsl`.
    Wgsl,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::Spv,
        Target::Glsl,
        Target::Msl,
        Target::Hlsl,
        Target::Wgsl,
    ];

    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Target::Spv => "spv",
            Target::Glsl => "glsl",
            Target::Msl => "msl",
            Target::Hlsl => "hlsl",
            Target::Wgsl => "wgsl",
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Target::Spv => "spv",
            Target::Glsl => "comp",
            Target::Msl => "metal",
            Target::Hlsl => "hlsl",
            Target::Wgsl => "wgsl",
        }
    }
}

/// The nudged-loss module parsed and validated once, ready to be specialised and written per
/// variant.
pub struct Translator {
    source: String,
    parsed: std::sync::Arc<Parsed>,
}

fn failed(variant: &str, target: Target, problem: impl std::fmt::Display) -> Error {
    Error::Shader {
        variant: variant.to_string(),
        target: target.name(),
        problem: problem.to_string(),
    }
}

impl Translator {
    /// Parses and validates [`super::nudge_shader_source`].
    pub fn new() -> Result<Translator> {
        Ok(Translator {
            source: super::nudge_shader_source(),
            parsed: parsed().map_err(|e| failed("module", Target::Wgsl, e))?,
        })
    }

    /// `variant` written for `target`: SPIR-V as little-endian words, the others as text, each
    /// from the module the pipeline is built from (`specialise.rs`: the entry point's call graph,
    /// constants applied, branches on them dropped), validated here for every target, WGSL too.
    /// Errors name the variant and the target.
    pub fn translate(&self, variant: &Variant, target: Target) -> Result<Vec<u8>> {
        let name = variant.name();
        let entry = variant.entry_point().to_string();
        let module = specialise(&self.parsed, variant).map_err(|e| failed(&name, target, e))?;
        let info = validator()
            .validate(&module)
            .map_err(|e| failed(&name, target, e.emit_to_string(&self.source)))?;
        let stage = naga::ShaderStage::Compute;
        let bytes = match target {
            Target::Spv => {
                let options = spv::Options {
                    lang_version: (1, 3),
                    // As wgpu builds them: no zeroing (every workgroup value is written first).
                    zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
                    ..Default::default()
                };
                let pipeline = spv::PipelineOptions {
                    shader_stage: stage,
                    entry_point: entry,
                };
                spv::write_vec(&module, &info, &options, Some(&pipeline))
                    .map_err(|e| failed(&name, target, e))?
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect()
            }
            Target::Glsl => glsl_text(&module, &info, entry)
                .map_err(|e| failed(&name, target, e))?
                .into_bytes(),
            Target::Msl => {
                let options = msl::Options {
                    lang_version: (2, 0),
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                };
                let pipeline = msl::PipelineOptions {
                    entry_point: Some((stage, entry)),
                    ..Default::default()
                };
                msl::write_string(&module, &info, &options, &pipeline)
                    .map_err(|e| failed(&name, target, e))?
                    .0
                    .into_bytes()
            }
            Target::Hlsl => hlsl_text(&module, &info, entry)
                .map_err(|e| failed(&name, target, e))?
                .into_bytes(),
            // Written as assembled; the constants above were still applied and validated.
            Target::Wgsl => self.wgsl(variant).into_bytes(),
        };
        Ok(bytes)
    }

    fn wgsl(&self, variant: &Variant) -> String {
        let constants: Vec<String> = variant
            .constants()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "// perturb pipeline {}: entry point {}, override constants {}\n{}",
            variant.name(),
            variant.entry_point(),
            constants.join(", "),
            self.source
        )
    }
}

/// GLSL ES 3.10 for `entry`, with bind group 0's bindings at their own numbers (as wgpu's GL
/// backend flattens a single group).
fn glsl_text(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: String,
) -> std::result::Result<String, glsl::Error> {
    let binding_map = module
        .global_variables
        .iter()
        .filter_map(|(_, g)| g.binding)
        .map(|b| (b, b.binding as u8))
        .collect();
    let options = glsl::Options {
        version: glsl::Version::Embedded {
            version: 310,
            is_webgl: false,
        },
        binding_map,
        zero_initialize_workgroup_memory: false,
        ..Default::default()
    };
    let pipeline = glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry,
        multiview: None,
    };
    let mut out = String::new();
    let mut writer = glsl::Writer::new(
        &mut out,
        module,
        info,
        &options,
        &pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )?;
    writer.write()?;
    Ok(out)
}

/// HLSL (shader model 5.1) for `entry`.
fn hlsl_text(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: String,
) -> std::result::Result<String, hlsl::Error> {
    let options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V5_1,
        zero_initialize_workgroup_memory: false,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry)),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &options, &pipeline).write(module, info, None)?;
    Ok(out)
}
