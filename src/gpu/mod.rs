//! The GPU evaluator: wgpu context and adapter choice, and the nudged-loss kernels of
//! `shaders/nudge.wgsl`.

mod context;
mod evaluator;

pub use context::{list_adapters, AdapterOptions, AdapterSummary, GpuContext};
pub use evaluator::{
    loop_iterations, ChunkUniform, GpuEvaluator, GpuOptions, ReuseKernel, FUSED_MAX_WIDTH,
    FUSED_WG, LAYER_WORDS, LOOP_BUDGET, MAX_WIDTH, REDUCE_WG, RESIDENT_MAX_BATCH, SEQ_MAX_R,
    SEQ_PARTS, SEQ_REDUCE_MAX_BATCH, SEQ_WG, TILE_S, TILE_U, WG_SIZE,
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
