//! Shader checks that need no GPU: the WGSL parses and validates (naga, through wgpu's re-export),
//! and every number the WGSL and Rust sides share agrees.

use perturb::gpu::{nudge_shader_source, ChunkUniform, MATH_WGSL, MAX_WIDTH, WG_SIZE};
use perturb::precision::REDUCE_LANES;
use wgpu::naga;

fn parse(src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("WGSL does not parse:\n{}", e.emit_to_string(src)))
}

fn validate(module: &naga::Module) -> naga::valid::ModuleInfo {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(module)
    .unwrap_or_else(|e| panic!("WGSL does not validate: {e:?}"))
}

/// The literal value of module-scope constant `name`; panics naming it when it is missing.
fn constant(module: &naga::Module, name: &str) -> naga::Literal {
    constants(module)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("constant {name} missing from WGSL"))
}

/// Named module-scope constants and their literal values.
fn constants(module: &naga::Module) -> Vec<(String, naga::Literal)> {
    module
        .constants
        .iter()
        .filter_map(|(_, c)| match module.global_expressions[c.init] {
            naga::Expression::Literal(l) => Some((c.name.clone()?, l)),
            _ => None,
        })
        .collect()
}

#[test]
fn nudge_shader_parses_and_validates_without_a_gpu() {
    let module = parse(&nudge_shader_source());
    validate(&module);
    let names: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for want in [
        "nudged_sse",
        "forward_store",
        "reduce_losses",
        "reduce_seq",
        "reuse_dsse",
        "reuse_deep",
        "update",
        "fused_epochs",
        "reuse_fused",
        "spsa_sse",
        "reuse_prepare",
        "reuse_seq",
        "forward_tile",
        "forward_loss",
    ] {
        assert!(
            names.contains(&want),
            "entry point {want} missing: {names:?}"
        );
    }
}

/// The workgroup size of entry point `name` with the override constants `constants` applied.
fn workgroup_size(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    name: &str,
    constants: &[(&str, f64)],
) -> [u32; 3] {
    let constants = constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let (m, _) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((naga::ShaderStage::Compute, name)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    m.entry_points[0].workgroup_size
}

#[test]
fn workgroup_sizes_and_widths_match_the_rust_constants() {
    let module = parse(&nudge_shader_source());
    let info = validate(&module);
    let forward = ["nudged_sse", "spsa_sse", "forward_store"];
    for ep in &module.entry_points {
        let want = match ep.name.as_str() {
            "reduce_losses" | "reuse_fused" => REDUCE_LANES as u32,
            "fused_epochs" => perturb::gpu::FUSED_WG,
            "reuse_seq" => perturb::gpu::SEQ_WG,
            _ => WG_SIZE,
        };
        let got = workgroup_size(&module, &info, &ep.name, &[]);
        assert_eq!(got, [want, 1, 1], "{}", ep.name);
        if forward.contains(&ep.name.as_str()) {
            let narrow = perturb::gpu::FWD_NARROW_WG;
            let got = workgroup_size(&module, &info, &ep.name, &[("FWD_WG", narrow as f64)]);
            assert_eq!(got, [narrow, 1, 1], "{} narrow", ep.name);
        }
    }
    let get = |name: &str| constant(&module, name);
    assert_eq!(get("WG_SIZE"), naga::Literal::U32(WG_SIZE));
    assert_eq!(get("REDUCE_LANES"), naga::Literal::U32(REDUCE_LANES as u32));
    assert_eq!(get("SEQ_WG"), naga::Literal::U32(perturb::gpu::SEQ_WG));
    assert_eq!(get("TILE_U"), naga::Literal::U32(perturb::gpu::TILE_U));
    assert_eq!(get("TILE_S"), naga::Literal::U32(perturb::gpu::TILE_S));
    for (name, part) in [
        "PART_HIDDEN_WEIGHTS",
        "PART_HIDDEN_BIASES",
        "PART_OUTPUT_WEIGHTS",
        "PART_OUTPUT_BIASES",
    ]
    .iter()
    .zip(perturb::gpu::SEQ_PARTS)
    {
        assert_eq!(get(name), naga::Literal::U32(part), "{name}");
    }
    assert_eq!(
        get("SEQ_MAX_R"),
        naga::Literal::U32(perturb::gpu::SEQ_MAX_R)
    );
    assert_eq!(
        get("SEQ_ITEMS"),
        naga::Literal::U32(perturb::gpu::SEQ_ITEMS)
    );
    assert_eq!(
        get("SEQ_UNIT_MAX_R"),
        naga::Literal::U32(perturb::gpu::SEQ_UNIT_MAX_R)
    );
    assert_eq!(get("MAX_WIDTH"), naga::Literal::U32(MAX_WIDTH as u32));
    assert_eq!(
        get("LAYER_WORDS"),
        naga::Literal::U32(perturb::gpu::LAYER_WORDS as u32)
    );
    // The pipelines' LOSS override takes these codes.
    for (name, loss) in [
        ("LOSS_MSE", perturb::Loss::Mse),
        ("LOSS_XENT", perturb::Loss::CrossEntropy),
    ] {
        let code = perturb::gpu::loss_code(loss);
        assert_eq!(get(name), naga::Literal::U32(code), "{name}");
    }
    // The activations live in one workgroup array of two halves.
    let acts = module
        .global_variables
        .iter()
        .find(|(_, v)| v.name.as_deref() == Some("acts"))
        .expect("acts")
        .1;
    match module.types[acts.ty].inner {
        naga::TypeInner::Array {
            size: naga::ArraySize::Constant(n),
            ..
        } => assert_eq!(n.get() as usize, 2 * MAX_WIDTH),
        ref other => panic!("acts is {other:?}"),
    }
}

#[test]
fn chunk_uniform_layout_matches_the_wgsl_struct() {
    let module = parse(&nudge_shader_source());
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Chunk"))
        .expect("struct Chunk");
    let naga::TypeInner::Struct { ref members, span } = ty.inner else {
        panic!("Chunk is not a struct")
    };
    assert_eq!(span as usize, std::mem::size_of::<ChunkUniform>());
    let rust = [
        ("num_layers", std::mem::offset_of!(ChunkUniform, num_layers)),
        ("batch", std::mem::offset_of!(ChunkUniform, batch)),
        ("eval_base", std::mem::offset_of!(ChunkUniform, eval_base)),
        ("eval_count", std::mem::offset_of!(ChunkUniform, eval_count)),
        ("grid_x", std::mem::offset_of!(ChunkUniform, grid_x)),
        (
            "reduce_grid_x",
            std::mem::offset_of!(ChunkUniform, reduce_grid_x),
        ),
        ("outputs", std::mem::offset_of!(ChunkUniform, outputs)),
        ("eps", std::mem::offset_of!(ChunkUniform, eps)),
        ("inv_count", std::mem::offset_of!(ChunkUniform, inv_count)),
        (
            "total_units",
            std::mem::offset_of!(ChunkUniform, total_units),
        ),
        ("num_params", std::mem::offset_of!(ChunkUniform, num_params)),
        ("method", std::mem::offset_of!(ChunkUniform, method)),
        ("lr", std::mem::offset_of!(ChunkUniform, lr)),
        ("zero", std::mem::offset_of!(ChunkUniform, zero)),
        ("param_base", std::mem::offset_of!(ChunkUniform, param_base)),
        ("out_base", std::mem::offset_of!(ChunkUniform, out_base)),
        ("cache_base", std::mem::offset_of!(ChunkUniform, cache_base)),
        ("seed_lo", std::mem::offset_of!(ChunkUniform, seed_lo)),
        ("seed_hi", std::mem::offset_of!(ChunkUniform, seed_hi)),
        ("step", std::mem::offset_of!(ChunkUniform, step)),
        ("dist", std::mem::offset_of!(ChunkUniform, dist)),
        ("ab_off", std::mem::offset_of!(ChunkUniform, ab_off)),
    ];
    for (name, offset) in rust {
        let m = members
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("Chunk.{name} missing in WGSL"));
        assert_eq!(m.offset as usize, offset, "Chunk.{name}");
    }
}

#[test]
fn math_constants_match_the_rust_bit_patterns() {
    let module = parse(MATH_WGSL);
    validate(&module);
    let consts = constants(&module);
    for &(name, bits) in perturb::math::SHARED_CONSTANTS {
        let (_, lit) = consts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from shaders/math.wgsl"));
        let got = match *lit {
            naga::Literal::F32(v) => v.to_bits(),
            naga::Literal::U32(v) => v,
            other => panic!("{name} is {other:?}"),
        };
        assert_eq!(got, bits, "{name}: WGSL {got:#010x}, Rust {bits:#010x}");
    }
    for a in perturb::Activation::ALL {
        let name = format!("ACT_{}", a.name().to_uppercase());
        let (_, lit) = consts
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(*lit, naga::Literal::U32(a.code()), "{name}");
    }
}

#[test]
fn rng_constants_match_the_rust_direction_codes() {
    let module = parse(&nudge_shader_source());
    let get = |name: &str| constant(&module, name);
    use perturb::rng::Direction;
    assert_eq!(
        get("DIR_RADEMACHER"),
        naga::Literal::U32(Direction::Rademacher.code())
    );
    assert_eq!(
        get("DIR_GAUSSIAN"),
        naga::Literal::U32(Direction::Gaussian.code())
    );
}

#[test]
fn every_entry_point_is_in_the_kernel_table_and_ends_in_its_tripwire() {
    use perturb::gpu::KernelId;
    let src = nudge_shader_source();
    let module = parse(&src);
    let table: Vec<&str> = KernelId::ALL.iter().map(|k| k.entry_point()).collect();
    for ep in &module.entry_points {
        // A kernel without a row has no loop count and no boundary test (tests/loop_cap.rs).
        assert!(
            table.contains(&ep.name.as_str()),
            "{} is not in KernelId::ALL",
            ep.name
        );
        let start = src
            .find(&format!("fn {}(", ep.name))
            .unwrap_or_else(|| panic!("{}", ep.name));
        let body = &src[start..];
        let end = body.find("\n}\n").expect("function end");
        let guard = format!("loop_guard(K_{}", ep.name.to_uppercase());
        let last_line = body[..end].lines().last().unwrap_or("").trim();
        assert!(
            last_line.starts_with(&guard),
            "{} must end in {guard}…); it ends in {last_line:?}",
            ep.name
        );
    }
    for k in KernelId::ALL {
        let name = format!("K_{}", k.entry_point().to_uppercase());
        let base = match constant(&module, &name) {
            naga::Literal::U32(v) => v,
            other => panic!("{name} is {other:?}"),
        };
        let code = match k {
            KernelId::ReuseSeq(part) => base + part,
            _ => base,
        };
        assert_eq!(code, k.code(), "{}", k.name());
        assert_eq!(KernelId::from_code(code), Some(k));
    }
}
