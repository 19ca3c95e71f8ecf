//! Every pipeline variant the planner can build translates for every backend's language (naga:
//! SPIR-V for Vulkan, GLSL ES for GL, MSL for Metal, HLSL for DX12, and the assembled WGSL), and
//! the SPIR-V and GLSL pass the Khronos validators (`spirv-val`, `glslangValidator`). No GPU is
//! needed. Under `CI=true` a missing validator is a failure, not a skip (CI installs them).

use perturb::gpu::{all_variants, KernelId, Target, Translator, Variant, LOSSES};
use perturb::model::{Activation, Loss, Model};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files per validator call: one process per file costs about a second each on this machine.
const VALIDATOR_BATCH: usize = 64;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("perturb-shaders-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_variant_translates_for_every_target() {
    let translator = Translator::new().expect("the assembled WGSL parses and validates");
    let mut failures = Vec::new();
    for variant in all_variants() {
        for target in Target::ALL {
            match translator.translate(&variant, target) {
                Ok(bytes) if !bytes.is_empty() => {}
                Ok(_) => failures.push(format!(
                    "{} {}: empty output",
                    variant.name(),
                    target.name()
                )),
                Err(e) => failures.push(format!("{} {}: {e}", variant.name(), target.name())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} translations failed, the first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn the_list_covers_every_kernel_and_both_losses_with_unique_names() {
    let variants = all_variants();
    for kernel in KernelId::ALL {
        for loss in LOSSES {
            assert!(
                variants
                    .iter()
                    .any(|v| v.kernel == kernel && v.loss == loss),
                "no variant of {kernel:?} for {loss:?}"
            );
        }
    }
    let mut names = HashSet::new();
    for v in &variants {
        assert!(names.insert(v.name()), "two variants named {}", v.name());
    }
}

#[test]
fn what_the_planner_builds_for_a_grid_of_models_is_in_the_list() {
    let listed: HashSet<String> = all_variants().iter().map(Variant::name).collect();
    let shapes: [&[usize]; 5] = [
        &[2, 3, 1],
        &[3, 5, 4, 2],
        &[64, 128, 10],
        &[784, 128, 10],
        &[2048, 7, 3],
    ];
    for widths in shapes {
        for hidden in Activation::ALL {
            for loss in [Loss::Mse, Loss::CrossEntropy] {
                let mut acts = vec![hidden; widths.len() - 2];
                acts.push(match loss {
                    Loss::Mse => Activation::Sigmoid,
                    Loss::CrossEntropy => Activation::Identity,
                });
                let model = Model::random(widths, &acts, 1).unwrap();
                for kernel in KernelId::ALL {
                    for closed in [false, true] {
                        let v = Variant::planned(&model, closed, loss, kernel);
                        assert!(
                            listed.contains(&v.name()),
                            "{widths:?} {acts:?} {loss:?} closed={closed}: {} is built but not listed",
                            v.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn an_out_path_that_is_a_file_is_refused() {
    let d = scratch("refused");
    let file = d.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args([
            "shaders",
            "--target",
            "wgsl",
            "--out",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// Whether `tool` runs; under CI=true a missing tool fails the test.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found && std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("{tool} is missing (apt-get install {package}); CI validates every shader with it");
    }
    found
}

/// Writes `target`'s files with the CLI into a fresh directory (named by `tag`, so tests running
/// at once do not share one); returns them, sorted.
fn written(target: &str, ext: &str, tag: &str) -> Vec<PathBuf> {
    let d = scratch(&format!("{target}-{tag}"));
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["shaders", "--target", target, "--out", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    assert_eq!(files.len(), all_variants().len(), "one .{ext} per variant");
    files
}

/// Runs `tool args… files` over batches of files; on a failure names the batch's output.
fn validate(tool: &str, args: &[&str], files: &[PathBuf]) {
    for batch in files.chunks(VALIDATOR_BATCH) {
        let o = Command::new(tool)
            .args(args)
            .args(batch.iter().map(|p| p.as_os_str()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool} rejected a file among {} … {}:\n{}{}",
            name(&batch[0]),
            name(&batch[batch.len() - 1]),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_spirv_variant_passes_spirv_val_for_vulkan_1_1() {
    if !have("spirv-val", "spirv-tools") {
        eprintln!("spirv-val not installed: skipped outside CI");
        return;
    }
    // spirv-val takes one file per call.
    for file in written("spv", "spv", "val") {
        let o = Command::new("spirv-val")
            .args(["--target-env", "vulkan1.1"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "spirv-val rejected {}: {}",
            name(&file),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn every_glsl_variant_passes_glslang_validator() {
    if !have("glslangValidator", "glslang-tools") {
        eprintln!("glslangValidator not installed: skipped outside CI");
        return;
    }
    validate("glslangValidator", &[], &written("glsl", "comp", "val"));
}

#[test]
fn the_validators_reject_a_broken_file() {
    // So a green run above means the tools looked at the files.
    let d = scratch("broken");
    if have("spirv-val", "spirv-tools") {
        let bad = d.join("cut.spv");
        let good = written("spv", "spv", "broken").remove(0);
        let bytes = std::fs::read(good).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        let o = Command::new("spirv-val").arg(&bad).output().unwrap();
        assert!(!o.status.success(), "spirv-val accepted a cut-off module");
    }
    if have("glslangValidator", "glslang-tools") {
        let bad = d.join("bad.comp");
        std::fs::write(
            &bad,
            "#version 310 es\nvoid main() { undefined_thing = 1; }\n",
        )
        .unwrap();
        let o = Command::new("glslangValidator").arg(&bad).output().unwrap();
        assert!(
            !o.status.success(),
            "glslangValidator accepted a broken shader"
        );
    }
}
