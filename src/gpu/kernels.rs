//! Facts about every kernel of `shaders/` (assembled by `SHADER_FILES`) in one place: its id (the tripwire's code), its
//! entry point, and the loop passes one invocation runs, counted from the plan's own values.
//!
//! llvmpipe (Mesa's CPU driver, behind lavapipe and GL's llvmpipe) keeps one counter per shader
//! invocation and silently ends every loop once 65,535 loop passes have run in it: the results
//! are wrong and nothing reports it. What a pass is, measured on Mesa 22.3 (`tests/loop_cap.rs`):
//! a loop of `n` iterations takes `n + 1` passes, and its last one (the exit test) runs the body
//! with every lane off, so each loop inside takes one pass more; a branch no lane takes still
//! runs its loops once each; `switch` costs nothing. Lanes of one SIMD group share the counter,
//! so a loop runs as often as the group's busiest lane needs: the counts are for the costliest
//! group of a dispatch. `tests/loop_cap.rs` measures every kernel on llvmpipe over a grid of
//! shapes and holds these counts equal to what the driver runs.
//!
//! Every entry point ends in `loop_guard`, a loop of [`GUARD_PASSES`] that the cap would cut short;
//! the kernel then writes its id where the evaluator looks, and the step fails with
//! [`crate::Error::LoopCap`] instead of returning a plausible loss.

use crate::model::{Activation, Loss, Model};
use crate::precision::REDUCE_LANES;

/// llvmpipe's loop counter per invocation (`LP_MAX_TGSI_LOOP_ITERATIONS` in Mesa's gallivm): a
/// loop may go on to another iteration only while fewer passes than this have run, so an
/// invocation survives at most `LLVMPIPE_LOOP_CAP + 1` passes, the last one a loop's exit.
pub const LLVMPIPE_LOOP_CAP: u64 = 65_535;
/// Passes of the tripwire that ends every kernel (a loop of two iterations).
pub const GUARD_PASSES: u64 = 3;
/// Most loop passes a kernel's own work may take on llvmpipe: what an invocation survives less
/// the tripwire.
pub const KERNEL_PASS_BUDGET: u64 = LLVMPIPE_LOOP_CAP + 1 - GUARD_PASSES;

/// Invocations per workgroup of most kernels (`WG_SIZE` in `shaders/common.wgsl`).
pub const WG_SIZE: u32 = 64;
/// Invocations per `reuse_seq` workgroup (`SEQ_WG`): few, so that a layer's last workgroup idles
/// little.
pub const SEQ_WG: u32 = 16;
/// Most weights one `reuse_seq` invocation nudges (`SEQ_MAX_R`).
pub const SEQ_MAX_R: u32 = 8;
/// Most weights one invocation of `reuse_seq`'s unit path nudges (`SEQ_ITEMS`): R inputs of U
/// units, R U at most this. Mesa 22 unrolls the item loop, its arrays in registers, up to about
/// that many sigmoids; a longer one stays a loop with its arrays in memory (measured slower).
pub const SEQ_ITEMS: u32 = 8;
/// Most inputs per invocation of the unit path (`SEQ_UNIT_MAX_R`): the rest of [`SEQ_ITEMS`] goes
/// to units, whose z, a and closed-form sum are the loads an input does not share.
pub const SEQ_UNIT_MAX_R: u32 = 4;
/// `reuse_seq`'s parts (`PART_*`): the last hidden layer's weights, its biases, the output layer's
/// weights, its biases.
pub const SEQ_PARTS: [u32; 4] = [0, 1, 2, 3];
pub(crate) const PART_HIDDEN_WEIGHTS: u32 = SEQ_PARTS[0];
pub(crate) const PART_HIDDEN_BIASES: u32 = SEQ_PARTS[1];
pub(crate) const PART_OUTPUT_WEIGHTS: u32 = SEQ_PARTS[2];
pub(crate) const PART_OUTPUT_BIASES: u32 = SEQ_PARTS[3];
/// Units in one `forward_tile` invocation's block (`TILE_U`).
pub const TILE_U: u32 = 4;
/// Samples in one `forward_tile` invocation's block (`TILE_S`).
pub const TILE_S: u32 = 4;
/// Invocations of the one `fused_epochs` workgroup (`FUSED_WG`).
pub const FUSED_WG: u32 = 16;

/// The `LOSS` override constant every pipeline is specialised with (`LOSS_MSE`, `LOSS_XENT` in
/// `shaders/common.wgsl`): the other loss's code is then dead and compiled out, so llvmpipe never
/// runs it and the squared-error kernels are the ones measured before cross-entropy existed.
pub fn loss_code(loss: Loss) -> u32 {
    match loss {
        Loss::Mse => 0,
        Loss::CrossEntropy => 1,
    }
}

/// One kernel (entry point, and for `reuse_seq` the part it is specialised for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelId {
    /// `nudged_sse`: one workgroup per (slot, sample), the nudged forward pass.
    NudgedSse,
    /// `spsa_sse`: the same along an SPSA direction.
    SpsaSse,
    /// `forward_store`: the unperturbed pass, z and a kept in the cache.
    ForwardStore,
    /// `forward_tile`: the same on CPU adapters, a dispatch per layer (carried in `eval_base`).
    ForwardTile,
    /// `forward_loss`: each sample's squared error after the tiles.
    ForwardLoss,
    /// `reduce_losses`: a workgroup per slot sums the samples.
    ReduceLosses,
    /// `reduce_seq`: the same sum, one invocation per slot.
    ReduceSeq,
    /// `reuse_prepare`: the closed-form output sums, or cross-entropy's series terms.
    ReusePrepare,
    /// `reuse_dsse`: one invocation per (parameter, sample) of the last two layers.
    ReuseDsse,
    /// `reuse_fused`: a workgroup per parameter of the last two layers, summed in place.
    ReuseFused,
    /// `reuse_seq` for one part (`PART_*`): one invocation per parameter, or per `SEQ_R` weights.
    ReuseSeq(u32),
    /// `reuse_deep`: a workgroup per (parameter, sample) of earlier layers.
    ReuseDeep,
    /// `update`: the resident loop's parameter update.
    Update,
    /// `fused_epochs`: tiny models, whole epochs in one workgroup.
    FusedEpochs,
}

impl KernelId {
    /// Every kernel, each `reuse_seq` part on its own: the table `tests/loop_cap.rs` walks.
    pub const ALL: [KernelId; 17] = [
        KernelId::NudgedSse,
        KernelId::SpsaSse,
        KernelId::ForwardStore,
        KernelId::ForwardTile,
        KernelId::ForwardLoss,
        KernelId::ReduceLosses,
        KernelId::ReduceSeq,
        KernelId::ReusePrepare,
        KernelId::ReuseDsse,
        KernelId::ReuseFused,
        KernelId::ReuseSeq(PART_HIDDEN_WEIGHTS),
        KernelId::ReuseSeq(PART_HIDDEN_BIASES),
        KernelId::ReuseSeq(PART_OUTPUT_WEIGHTS),
        KernelId::ReuseSeq(PART_OUTPUT_BIASES),
        KernelId::ReuseDeep,
        KernelId::Update,
        KernelId::FusedEpochs,
    ];

    /// The tripwire's code (`K_*` in `shaders/common.wgsl`; never 0).
    pub fn code(self) -> u32 {
        match self {
            KernelId::NudgedSse => 1,
            KernelId::SpsaSse => 2,
            KernelId::ForwardStore => 3,
            KernelId::ForwardTile => 4,
            KernelId::ForwardLoss => 5,
            KernelId::ReduceLosses => 6,
            KernelId::ReduceSeq => 7,
            KernelId::ReusePrepare => 8,
            KernelId::ReuseDsse => 9,
            KernelId::ReuseFused => 10,
            KernelId::ReuseDeep => 11,
            KernelId::Update => 12,
            KernelId::FusedEpochs => 13,
            KernelId::ReuseSeq(part) => 16 + part,
        }
    }

    /// The kernel with tripwire code `code`, if any.
    pub fn from_code(code: u32) -> Option<KernelId> {
        KernelId::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The WGSL entry point.
    pub fn entry_point(self) -> &'static str {
        match self {
            KernelId::NudgedSse => "nudged_sse",
            KernelId::SpsaSse => "spsa_sse",
            KernelId::ForwardStore => "forward_store",
            KernelId::ForwardTile => "forward_tile",
            KernelId::ForwardLoss => "forward_loss",
            KernelId::ReduceLosses => "reduce_losses",
            KernelId::ReduceSeq => "reduce_seq",
            KernelId::ReusePrepare => "reuse_prepare",
            KernelId::ReuseDsse => "reuse_dsse",
            KernelId::ReuseFused => "reuse_fused",
            KernelId::ReuseSeq(_) => "reuse_seq",
            KernelId::ReuseDeep => "reuse_deep",
            KernelId::Update => "update",
            KernelId::FusedEpochs => "fused_epochs",
        }
    }

    /// A name for messages: the entry point, with the part for `reuse_seq`.
    pub fn name(self) -> &'static str {
        match self {
            KernelId::ReuseSeq(PART_HIDDEN_WEIGHTS) => "reuse_seq (hidden weights)",
            KernelId::ReuseSeq(PART_HIDDEN_BIASES) => "reuse_seq (hidden biases)",
            KernelId::ReuseSeq(PART_OUTPUT_WEIGHTS) => "reuse_seq (output weights)",
            KernelId::ReuseSeq(_) => "reuse_seq (output biases)",
            k => k.entry_point(),
        }
    }

    /// Whether a `reduce_*` dispatch sums what this kernel wrote per sample.
    pub(crate) fn is_reduced(self) -> bool {
        matches!(
            self,
            KernelId::NudgedSse
                | KernelId::SpsaSse
                | KernelId::ForwardStore
                | KernelId::ForwardLoss
                | KernelId::ReuseDsse
                | KernelId::ReuseDeep
        )
    }
}

/// What a kernel's loop count depends on, as the plan sets it.
#[derive(Clone, Copy, Debug)]
pub struct LoopPlan<'a> {
    /// The network (layer sizes and activations).
    pub model: &'a Model,
    /// Samples per evaluation.
    pub batch: usize,
    /// Reuse with the closed-form output layer ([`crate::model::Model::closed_form_output`]): MSE's
    /// closed form or cross-entropy's series (whose kernels count the exact difference's loops,
    /// the costliest path: the series has none).
    pub closed: bool,
    /// `fused_epochs`: epochs per dispatch.
    pub epochs: u64,
    /// The loss the kernels compute (its per-sample tail has its own loops).
    pub loss: Loss,
}

/// Passes of a loop of `n` iterations whose body holds `inner` loops (anywhere within it): its
/// condition is tested n + 1 times, and the last test runs the body once more with every lane
/// off, where each inner loop takes one pass. The passes of the n active bodies come on top.
fn lp(n: u64, inner: u64) -> u64 {
    n + 1 + inner
}

/// Passes of a branch not taken by any lane of the group that holds `loops` loops: each runs
/// one pass with every lane off.
fn off(loops: u64) -> u64 {
    loops
}

/// Loop passes one invocation of `kernel` runs under `plan` (its costliest SIMD group), the
/// tripwire not included. Each function below follows its kernel's loops line by line.
pub fn loop_passes(kernel: KernelId, plan: &LoopPlan) -> u64 {
    let model = plan.model;
    let b = plan.batch as u64;
    match kernel {
        KernelId::NudgedSse | KernelId::SpsaSse | KernelId::ForwardStore => {
            forward_sample(model, plan.loss)
        }
        KernelId::ForwardTile => forward_tile(model),
        KernelId::ForwardLoss => sample_loss(model, plan.loss),
        KernelId::ReduceLosses => lp(b.div_ceil(REDUCE_LANES as u64), 0) + tree_sum(),
        KernelId::ReduceSeq => reduce_row(b),
        KernelId::ReusePrepare => reuse_prepare(model, plan.loss),
        KernelId::ReuseDsse => reuse_dsse(plan),
        KernelId::ReuseFused => reuse_fused(plan),
        KernelId::ReuseSeq(part) => reuse_seq(plan, part),
        KernelId::ReuseDeep => reuse_deep(model, plan.loss),
        KernelId::Update => 0,
        KernelId::FusedEpochs => fused_epochs(model, b, plan.epochs),
    }
}

/// One sample's loss from its outputs: the squared error's loop over the outputs, or
/// cross-entropy's three (`xent_acts`, `xent_logits`: the running maximum from output 1, the sum
/// of exponentials, the soft terms).
fn sample_loss(model: &Model, loss: Loss) -> u64 {
    let k = model.outputs() as u64;
    match loss {
        Loss::Mse => lp(k, 0),
        Loss::CrossEntropy => lp(k.saturating_sub(1), 0) + 2 * lp(k, 0),
    }
}

/// Loops in [`sample_loss`]'s code, each of which runs a pass with lanes off at the exit of a loop
/// around it.
fn sample_loss_loops(loss: Loss) -> u64 {
    match loss {
        Loss::Mse => 1,
        Loss::CrossEntropy => 3,
    }
}

/// `forward_sample`: the layer loop (holding the unit loop and the two input loops of its
/// `l == 0` branch), per layer invocation 0's units, each with the input loop of its branch and
/// the other branch's run with lanes off; then invocation 0's loss over the outputs.
fn forward_sample(model: &Model, loss: Loss) -> u64 {
    let layers: u64 = model
        .layers()
        .iter()
        .map(|l| {
            let units = (l.outputs as u64).div_ceil(WG_SIZE as u64);
            lp(units, 2) + units * (lp(l.inputs as u64, 0) + off(1))
        })
        .sum();
    lp(model.layers().len() as u64, 3) + layers + sample_loss(model, loss)
}

/// `forward_tile`: the input loop of its widest layer; Mesa unrolls the constant tile loops but
/// one, a loop over `TILE_S` (measured).
fn forward_tile(model: &Model) -> u64 {
    let widest = model.layers().iter().map(|l| l.inputs as u64).max();
    lp(widest.unwrap_or(0), 0) + lp(TILE_S as u64, 0)
}

/// `reuse_prepare`: for MSE the loop of `ab`, then (in the s = 0 branch, which the costliest group
/// takes) the loop of `bb`; for cross-entropy `prepare_xent`'s running maximum from output 1, the
/// sum of exponentials, the two moment loops, then (s = 0) the spread's loop from output 1.
fn reuse_prepare(model: &Model, loss: Loss) -> u64 {
    let k = model.outputs() as u64;
    match loss {
        Loss::Mse => 2 * lp(k, 0),
        Loss::CrossEntropy => 2 * lp(k.saturating_sub(1), 0) + 3 * lp(k, 0),
    }
}

/// `tree_sum`: the stride-halving loop over `REDUCE_LANES` lanes.
fn tree_sum() -> u64 {
    lp(REDUCE_LANES.trailing_zeros() as u64, 0)
}

/// `reduce_row`: the tree's lanes, each with its strided loop over the samples (every sample
/// belongs to exactly one lane, so those loops run b iterations and one exit test per lane).
fn reduce_row(b: u64) -> u64 {
    let width = b.max(1).next_power_of_two().min(REDUCE_LANES as u64);
    lp(width, 1) + b + width
}

/// The passes of `reuse_target`'s loop for a parameter of layer `l`, and of `reuse_shallow`
/// for one sample: for MSE its one loop (`output_change`) runs for a hidden unit without the
/// closed form, else with lanes off; cross-entropy's `xent_logits` runs for every parameter.
fn shallow(plan: &LoopPlan, l: usize) -> (u64, u64) {
    let n = plan.model.layers().len();
    let full = l + 1 < n && !plan.closed;
    let change = if plan.loss == Loss::CrossEntropy {
        sample_loss(plan.model, plan.loss)
    } else if full {
        output_change(plan.model)
    } else {
        off(1)
    };
    (lp(l as u64, 0), change)
}

/// `output_change`: one loop over the output units.
fn output_change(model: &Model) -> u64 {
    lp(model.outputs() as u64, 0)
}

/// The layers `reuse_dsse`, `reuse_fused` and `reuse_seq` nudge: the last two.
fn shallow_layers(model: &Model) -> std::ops::Range<usize> {
    let n = model.layers().len();
    n.saturating_sub(2)..n
}

/// `reuse_dsse`: one (parameter, sample) per invocation. A SIMD group may hold parameters of both
/// layers, so it runs the target loop of the deeper and the change of the costlier: counted so,
/// one pass above the driver where no group straddles the two (never below).
fn reuse_dsse(plan: &LoopPlan) -> u64 {
    let parts: Vec<(u64, u64)> = shallow_layers(plan.model)
        .map(|l| shallow(plan, l))
        .collect();
    let target = parts.iter().map(|p| p.0).max().unwrap_or(0);
    let change = parts.iter().map(|p| p.1).max().unwrap_or(0);
    target + change
}

/// `reuse_fused`: a workgroup per parameter, samples strided over its lanes, then `tree_sum`.
fn reuse_fused(plan: &LoopPlan) -> u64 {
    let per_lane = (plan.batch as u64).div_ceil(REDUCE_LANES as u64);
    shallow_layers(plan.model)
        .map(|l| {
            let (target, change) = shallow(plan, l);
            let inner = sample_loss_loops(plan.loss);
            target + lp(per_lane, inner) + per_lane * change + tree_sum()
        })
        .max()
        .unwrap_or(0)
}

/// `reuse_seq` for `part`: the tree's lanes (`reduce_row`'s loops) and, for hidden parts without
/// the closed form, `output_change` (cross-entropy: `xent_logits`, every part) for each of the R
/// weights per sample. Mesa unrolls the loops
/// over R except the one around `output_change` (it keeps loops that hold a loop, but for one
/// iteration), so for R ≥ 2 that loop runs too; each loop also runs once with lanes off at the
/// exit of the loops around it.
fn reuse_seq(plan: &LoopPlan, part: u32) -> u64 {
    let model = plan.model;
    let b = plan.batch as u64;
    let width = b.max(1).next_power_of_two().min(REDUCE_LANES as u64);
    let r = seq_repeat_of(model, part) as u64;
    // The loops in one sample's body, and their passes: MSE's output_change, or cross-entropy's
    // xent_logits in every part.
    let (loops, change) = match plan.loss {
        Loss::CrossEntropy => (3, sample_loss(model, plan.loss)),
        Loss::Mse => (1, output_change(model)),
    };
    let (inner, per_sample) = match r {
        _ if plan.loss == Loss::Mse && (part >= PART_OUTPUT_WEIGHTS || plan.closed) => (0, 0),
        1 => (loops, change),
        r => (loops + 1, lp(r, loops) + r * change),
    };
    lp(width, 1 + inner) + b + width * (1 + inner) + b * per_sample
}

/// `reuse_deep`: a workgroup per (parameter, sample) of a layer before the last two. The layer
/// loop holds three loops (the nudged layer's units, a later layer's units and their inputs); per
/// layer the branch that applies runs and the others run with lanes off; then invocation 0's
/// loss over the outputs. The costliest target layer is taken.
fn reuse_deep(model: &Model, loss: Loss) -> u64 {
    let layers = model.layers();
    let n = layers.len();
    (0..n.saturating_sub(2))
        .map(|t| {
            let per_layer: u64 = layers
                .iter()
                .enumerate()
                .map(|(m, l)| {
                    let units = (l.outputs as u64).div_ceil(WG_SIZE as u64);
                    if m == t + 1 {
                        lp(units, 0) + off(2)
                    } else if m > t + 1 {
                        off(1) + lp(units, 1) + units * lp(l.inputs as u64, 0)
                    } else {
                        off(3)
                    }
                })
                .sum();
            lp(t as u64, 0) + lp(n as u64, 3) + per_layer + sample_loss(model, loss)
        })
        .max()
        .unwrap_or(0)
}

/// `fused_epochs`: the copy-in loop, then the epoch loop (nine loops inside), each epoch running
/// invocation 0's (slot, sample) items (a forward pass unit by unit), its share of the loss sums
/// (`reduce_row` each) and of the update.
fn fused_epochs(model: &Model, b: u64, epochs: u64) -> u64 {
    let p = model.num_params() as u64;
    let wg = FUSED_WG as u64;
    let items = ((p + 1) * b).div_ceil(wg);
    let forward: u64 = model
        .layers()
        .iter()
        .map(|l| lp(l.outputs as u64, 1) + l.outputs as u64 * lp(l.inputs as u64, 0))
        .sum();
    let item = lp(model.layers().len() as u64, 2) + forward + lp(model.outputs() as u64, 0);
    let slots = (p + 1).div_ceil(wg);
    let per_epoch =
        lp(items, 4) + items * item + lp(slots, 2) + slots * reduce_row(b) + lp(p.div_ceil(wg), 0);
    lp(p.div_ceil(wg), 0) + lp(epochs, 9) + epochs * per_epoch
}

/// Weights one `reuse_seq` invocation nudges (`SEQ_R`) for a layer of `n_in` inputs: the count
/// that loads least per sample (one input per weight, plus z, a and the closed-form sum shared by
/// them), idle invocations of the last workgroup included.
pub(crate) fn seq_repeat(n_in: u64) -> u32 {
    (1..=SEQ_MAX_R)
        .min_by_key(|&r| n_in.div_ceil(r as u64).div_ceil(SEQ_WG as u64) * (3 + r as u64))
        .unwrap_or(1)
}

/// The unit path of `reuse_seq` (`seq_units_on` in the shader: the last hidden layer's weights
/// under MSE's closed form), as (inputs R, units U) per invocation; `None` where it does not
/// apply. On llvmpipe every load in the sample loop is a scalar loop over the SIMD lanes, so
/// sharing x over U units and each unit's z, a and closed-form sum over R inputs (R + 3 U loads
/// for R U items, against 1 + 3 / R per item one unit at a time) is most of the gain. Its loop
/// passes are those of the one-unit form ([`loop_passes`]: the same loops, the item loops
/// unrolled).
pub(crate) fn seq_unit_shape(model: &Model, part: u32, loss: Loss) -> Option<(u32, u32)> {
    if part != PART_HIDDEN_WEIGHTS || loss != Loss::Mse || !model.closed_form_output() {
        return None;
    }
    // tanh_f32 is about twice sigmoid_f32's code: half the items keep the loop unrolled.
    let items = match model.layers()[seq_part_layer(model, part)].activation {
        Activation::Tanh => SEQ_ITEMS / 2,
        _ => SEQ_ITEMS,
    };
    let r = seq_repeat(seq_part_inputs(model, part)).min(SEQ_UNIT_MAX_R);
    Some((r, (items / r).max(1)))
}

/// `SEQ_R` of `part`'s pipeline: [`seq_repeat`] of its layer's inputs for weights, 1 for biases.
pub(crate) fn seq_repeat_of(model: &Model, part: u32) -> u32 {
    if seq_part_is_weights(part) {
        seq_repeat(seq_part_inputs(model, part))
    } else {
        1
    }
}

/// `reuse_seq`'s parts (`PART_*` in the shader) and their parameter ranges: the weights and biases
/// of the last hidden layer, then of the output layer.
pub(crate) fn seq_parts(model: &Model) -> Vec<(u32, u64, u64)> {
    let n = model.layers().len();
    let mut parts = Vec::new();
    for l in n.saturating_sub(2)..n {
        let (weights, biases) = if l + 1 == n {
            (PART_OUTPUT_WEIGHTS, PART_OUTPUT_BIASES)
        } else {
            (PART_HIDDEN_WEIGHTS, PART_HIDDEN_BIASES)
        };
        let (w, b) = (model.weight_offset(l) as u64, model.bias_offset(l) as u64);
        parts.push((weights, w, b));
        parts.push((biases, b, b + model.layers()[l].outputs as u64));
    }
    parts
}

/// Parameters per unit in a `reuse_seq` chunk of `part`: the layer's inputs for weights, one for
/// biases.
pub(crate) fn seq_part_inputs(model: &Model, part: u32) -> u64 {
    if seq_part_is_weights(part) {
        model.layers()[seq_part_layer(model, part)].inputs as u64
    } else {
        1
    }
}

/// The layer a `reuse_seq` part nudges.
pub(crate) fn seq_part_layer(model: &Model, part: u32) -> usize {
    let n = model.layers().len();
    if part >= PART_OUTPUT_WEIGHTS {
        n - 1
    } else {
        n - 2
    }
}

pub(crate) fn seq_part_is_weights(part: u32) -> bool {
    part == PART_HIDDEN_WEIGHTS || part == PART_OUTPUT_WEIGHTS
}
