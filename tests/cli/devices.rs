//! GPU adapters and backends: `perturb devices`, no adapter, unknown adapter or backend names.

use std::process::Command;

use crate::common;
use crate::support::*;

#[test]
fn no_adapter_says_what_to_do() {
    // No Metal on Linux (and no Vulkan on macOS): an empty backend set sees no adapter.
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train"])
        .env("WGPU_BACKEND", backend)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(EXIT_NO_GPU));
    let err = stderr(&o);
    assert!(
        err.contains("no GPU adapter")
            && err.contains("--device cpu")
            && err.contains("mesa-vulkan-drivers"),
        "{err}"
    );
}

#[test]
fn unknown_adapter_name_lists_what_exists() {
    assert_fails_with(
        EXIT_NO_GPU,
        &["train", "--adapter", "no-such-gpu-xyz"],
        &["no-such-gpu-xyz", "available"],
    );
}

#[test]
fn bad_backend_names_are_refused() {
    assert_fails(
        &["train", "--backend", "vulkn"],
        &["\"vulkn\"", "vulkan, gl, metal or dx12"],
    );
    assert_fails(&["devices", "--backend", "foo"], &["\"foo\""]);
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train"])
        .env("WGPU_BACKEND", "cuda")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("\"cuda\"") && stderr(&o).contains("WGPU_BACKEND"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_backend_without_adapters_is_named_in_the_error() {
    let backend = if cfg!(target_os = "macos") {
        "vulkan"
    } else {
        "metal"
    };
    assert_fails_with(
        EXIT_NO_GPU,
        &["train", "--backend", backend],
        &["no GPU adapter", backend, "--device cpu"],
    );
    // --backend overrides WGPU_BACKEND.
    let o = Command::new(env!("CARGO_BIN_EXE_perturb"))
        .args(["train", "--backend", backend])
        .env("WGPU_BACKEND", "vulkan,gl")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains(&format!("on backend {backend}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn devices_lists_the_limits_that_matter() {
    if common::gpu().is_none() {
        return;
    }
    let o = perturb(&["devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let header = out.lines().next().unwrap();
    for col in ["storage binding", "workgroups/dim", "invocations/wg"] {
        assert!(header.contains(col), "{header}");
    }
    // Aligned: every adapter row starts its backend column where the header does.
    let at = header.find("backend").unwrap();
    for row in out.lines().skip(1).take_while(|l| !l.is_empty()) {
        assert!(
            row[at..].starts_with(|c: char| c.is_ascii_lowercase())
                && row.as_bytes()[at - 1] == b' ',
            "misaligned: {row:?}"
        );
    }
    let o = perturb(&["devices", "--adapter", "no-such-gpu-xyz"]);
    assert!(
        stdout(&o).contains("none selected: no GPU adapter matches"),
        "{}",
        stdout(&o)
    );
}
