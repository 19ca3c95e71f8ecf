//! The GPU evaluator: wgpu context and adapter choice, and the nudged-loss kernels of
//! `shaders/` (assembled from [`SHADER_FILES`]).

mod buffers;
mod context;
mod evaluator;
mod kernels;
mod pipeline_cache;
mod pipelines;
mod plan;
mod resident;
mod specialise;
mod variants;

pub use context::{
    list_adapters, open_adapter_at, open_adapters, AdapterOptions, AdapterSummary, GpuContext,
};
pub use evaluator::GpuEvaluator;
pub use kernels::{
    loop_passes, loss_code, KernelId, LoopPlan, FUSED_WG, GUARD_PASSES, KERNEL_PASS_BUDGET,
    LLVMPIPE_LOOP_CAP, SEQ_ITEMS, SEQ_MAX_R, SEQ_PARTS, SEQ_UNIT_MAX_R, SEQ_WG, TILE_S, TILE_U,
    WG_SIZE,
};
pub use pipeline_cache::{default_pipeline_cache_dir, CacheLoad, PipelineCacheStatus};
pub use plan::{
    AdapterFacts, ChunkUniform, GpuOptions, ReuseKernel, FUSED_MAX_WIDTH, LAYER_WORDS, MAX_WIDTH,
    RESIDENT_MAX_BATCH, SEQ_REDUCE_MAX_BATCH,
};
pub use variants::{
    all_variants, SeqConstants, Target, Translator, Variant, FWD_NARROW_WG, LOSSES,
};

/// `shaders/math.wgsl`: the WGSL twin of [`crate::math`].
pub const MATH_WGSL: &str = include_str!("../../shaders/math.wgsl");

/// `shaders/rng.wgsl`: the WGSL twin of [`crate::rng`].
pub const RNG_WGSL: &str = include_str!("../../shaders/rng.wgsl");

/// The kernel files of the nudged-loss module by family, in the order they are assembled (after
/// [`MATH_WGSL`] and [`RNG_WGSL`]): each file may use what the files before it declare.
pub const SHADER_FILES: [(&str, &str); 7] = [
    ("common.wgsl", include_str!("../../shaders/common.wgsl")),
    ("forward.wgsl", include_str!("../../shaders/forward.wgsl")),
    ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
    ("reuse.wgsl", include_str!("../../shaders/reuse.wgsl")),
    (
        "reuse_seq.wgsl",
        include_str!("../../shaders/reuse_seq.wgsl"),
    ),
    (
        "reuse_deep.wgsl",
        include_str!("../../shaders/reuse_deep.wgsl"),
    ),
    ("resident.wgsl", include_str!("../../shaders/resident.wgsl")),
];

/// The WGSL module of the nudged-loss kernels: `shaders/math.wgsl`, `shaders/rng.wgsl`, then
/// [`SHADER_FILES`] in order.
pub fn nudge_shader_source() -> String {
    let mut src = [MATH_WGSL, RNG_WGSL].concat();
    for (_, text) in SHADER_FILES {
        src.push_str(text);
    }
    src
}
