//! The GPU evaluator: wgpu context and adapter choice, and the nudged-loss kernels of
//! `shaders/nudge.wgsl`.

mod context;
mod evaluator;
mod kernels;

pub use context::{list_adapters, AdapterOptions, AdapterSummary, GpuContext};
pub use evaluator::{
    ChunkUniform, GpuEvaluator, GpuOptions, ReuseKernel, FUSED_MAX_WIDTH, LAYER_WORDS, MAX_WIDTH,
    RESIDENT_MAX_BATCH, SEQ_REDUCE_MAX_BATCH,
};
pub use kernels::{
    loop_passes, KernelId, LoopPlan, FUSED_WG, GUARD_PASSES, KERNEL_PASS_BUDGET, LLVMPIPE_LOOP_CAP,
    REDUCE_WG, SEQ_MAX_R, SEQ_PARTS, SEQ_WG, TILE_S, TILE_U, WG_SIZE,
};

/// `shaders/math.wgsl`: the WGSL twin of [`crate::math`].
pub const MATH_WGSL: &str = include_str!("../../shaders/math.wgsl");

/// `shaders/rng.wgsl`: the WGSL twin of [`crate::rng`].
pub const RNG_WGSL: &str = include_str!("../../shaders/rng.wgsl");

/// The WGSL module of the nudged-loss kernels: `shaders/math.wgsl`, `shaders/rng.wgsl`, then
/// `shaders/nudge.wgsl`.
pub fn nudge_shader_source() -> String {
    [
        MATH_WGSL,
        RNG_WGSL,
        include_str!("../../shaders/nudge.wgsl"),
    ]
    .concat()
}
