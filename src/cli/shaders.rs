//! `perturb shaders`: every pipeline variant, translated by naga for each backend, one file each.

use crate::error::{Error, Result};
use crate::gpu::{all_variants, Target, Translator};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// The language to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// SPIR-V for Vulkan 1.1 (`.spv`).
    Spv,
    /// GLSL ES 3.10 compute for GL (`.comp`).
    Glsl,
    /// Metal Shading Language (`.metal`).
    Msl,
    /// HLSL for DX12 (`.hlsl`).
    Hlsl,
    /// The assembled WGSL, the variant's constants in its first line (`.wgsl`).
    Wgsl,
    /// All of the above.
    All,
}

impl TargetArg {
    fn targets(self) -> Vec<Target> {
        match self {
            TargetArg::Spv => vec![Target::Spv],
            TargetArg::Glsl => vec![Target::Glsl],
            TargetArg::Msl => vec![Target::Msl],
            TargetArg::Hlsl => vec![Target::Hlsl],
            TargetArg::Wgsl => vec![Target::Wgsl],
            TargetArg::All => Target::ALL.to_vec(),
        }
    }
}

/// `perturb shaders` options.
#[derive(Debug, Args)]
pub struct ShadersArgs {
    /// Which language to write.
    #[arg(long, value_enum, default_value_t = TargetArg::All)]
    pub target: TargetArg,
    /// The directory to write into (created if missing; files of the same names are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `out` as a directory: created if missing, refused if something else is there.
fn out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "exists and is not a directory (--out takes a directory)",
            ),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// Runs `perturb shaders`.
pub fn shaders(args: &ShadersArgs) -> Result<()> {
    out_dir(&args.out)?;
    let translator = Translator::new()?;
    let variants = all_variants();
    for target in args.target.targets() {
        let mut bytes = 0;
        for variant in &variants {
            let text = translator.translate(variant, target)?;
            let path = args
                .out
                .join(format!("{}.{}", variant.name(), target.extension()));
            std::fs::write(&path, &text).map_err(|e| Error::io(&path, e))?;
            bytes += text.len();
        }
        say!(
            "{}: {} variants written to {} as .{} ({bytes} bytes)",
            target.name(),
            variants.len(),
            args.out.display(),
            target.extension()
        );
    }
    Ok(())
}
