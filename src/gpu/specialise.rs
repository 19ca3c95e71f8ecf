//! One pipeline's module: the assembled WGSL parsed once per process, then per pipeline only its
//! entry point's call graph, its override constants applied, and every branch on a constant
//! dropped, so that the driver sees only the code that can run.
//!
//! On llvmpipe a pipeline's creation time is the driver's SPIR-V → NIR work on everything the
//! module hands it, taken or not: the `LOSS` and `reuse_seq` constants select among branches that
//! naga keeps (it folds the conditions to literals but leaves both arms, and whatever functions
//! they call). Dropping a dead arm changes no operation that runs.

use super::variants::Variant;
use naga::{Block, Expression, Function, Handle, Literal, Module, Statement};
use std::sync::{Arc, OnceLock};

/// The assembled module, parsed and validated.
pub(super) struct Parsed {
    pub(super) module: Module,
    pub(super) info: naga::valid::ModuleInfo,
}

pub(super) fn validator() -> naga::valid::Validator {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
}

/// [`super::nudge_shader_source`] parsed and validated, once per process (an error is the
/// message naga words, with the source location).
pub(super) fn parsed() -> Result<Arc<Parsed>, String> {
    static PARSED: OnceLock<Result<Arc<Parsed>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let source = super::nudge_shader_source();
            let module =
                naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string(&source))?;
            let info = validator()
                .validate(&module)
                .map_err(|e| e.emit_to_string(&source))?;
            super::context::mark("shader parsed");
            Ok(Arc::new(Parsed { module, info }))
        })
        .clone()
}

/// Starts [`parsed`] on a thread of its own: the parse then overlaps the Vulkan instance's
/// creation (single-threaded library loading) instead of following it.
pub(super) fn parse_in_background() {
    let _ = std::thread::Builder::new()
        .name("perturb-parse".into())
        .spawn(|| {
            let _ = parsed();
        });
}

/// `variant`'s module: its entry point alone, its constants applied, branches on constants
/// dropped and what only they used compacted away. Not validated here.
pub(super) fn specialise(parsed: &Parsed, variant: &Variant) -> Result<Module, String> {
    let constants: naga::back::PipelineConstants = variant
        .constants()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let (module, _) = naga::back::pipeline_constants::process_overrides(
        &parsed.module,
        &parsed.info,
        Some((naga::ShaderStage::Compute, variant.entry_point())),
        &constants,
    )
    .map_err(|e| e.to_string())?;
    let mut module = module.into_owned();
    let bools = ConstBools::of(&module);
    for (_, f) in module.functions.iter_mut() {
        prune_function(f, &bools);
    }
    for ep in module.entry_points.iter_mut() {
        prune_function(&mut ep.function, &bools);
    }
    naga::compact::compact(&mut module, naga::compact::KeepUnused::No);
    Ok(module)
}

/// The module's boolean constants (after the overrides became constants).
struct ConstBools(Vec<(Handle<naga::Constant>, bool)>);

impl ConstBools {
    fn of(module: &Module) -> ConstBools {
        ConstBools(
            module
                .constants
                .iter()
                .filter_map(|(h, c)| match module.global_expressions[c.init] {
                    Expression::Literal(Literal::Bool(b)) => Some((h, b)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// The value of `condition` in `f` if it is a literal or a constant.
    fn value(&self, f: &Function, condition: Handle<Expression>) -> Option<bool> {
        match f.expressions[condition] {
            Expression::Literal(Literal::Bool(b)) => Some(b),
            Expression::Constant(c) => self.0.iter().find(|(h, _)| *h == c).map(|&(_, b)| b),
            _ => None,
        }
    }
}

fn prune_function(f: &mut Function, bools: &ConstBools) {
    let body = std::mem::take(&mut f.body);
    let mut dead = Vec::new();
    f.body = prune_block(f, body, bools, &mut dead);
    // A `let` in a dropped arm would otherwise keep its expression, and any function it calls,
    // alive through the names table.
    for h in dead {
        f.named_expressions.shift_remove(&h);
    }
}

/// `block` with every `if` on a constant replaced by its taken arm, and what follows a statement
/// that always leaves the block dropped (a taken arm may end in `return`). `dead` collects the
/// expressions the dropped statements produced.
fn prune_block(
    f: &Function,
    block: Block,
    bools: &ConstBools,
    dead: &mut Vec<Handle<Expression>>,
) -> Block {
    let mut out = Block::with_capacity(block.len());
    let mut ended = false;
    for (stmt, span) in block.span_into_iter() {
        if ended {
            produced(&stmt, dead);
            continue;
        }
        let stmt = match stmt {
            Statement::If {
                condition,
                accept,
                reject,
            } => match bools.value(f, condition) {
                Some(taken) => {
                    let (keep, drop) = if taken {
                        (accept, reject)
                    } else {
                        (reject, accept)
                    };
                    produced_in(&drop, dead);
                    Statement::Block(prune_block(f, keep, bools, dead))
                }
                None => Statement::If {
                    condition,
                    accept: prune_block(f, accept, bools, dead),
                    reject: prune_block(f, reject, bools, dead),
                },
            },
            Statement::Block(b) => Statement::Block(prune_block(f, b, bools, dead)),
            Statement::Loop {
                body,
                continuing,
                break_if,
            } => Statement::Loop {
                body: prune_block(f, body, bools, dead),
                continuing: prune_block(f, continuing, bools, dead),
                break_if,
            },
            Statement::Switch { selector, cases } => Statement::Switch {
                selector,
                cases: cases
                    .into_iter()
                    .map(|c| naga::SwitchCase {
                        body: prune_block(f, c.body, bools, dead),
                        ..c
                    })
                    .collect(),
            },
            other => other,
        };
        ended = leaves(&stmt);
        out.push(stmt, span);
    }
    out
}

/// Whether control never passes `stmt` to the next statement of its block.
fn leaves(stmt: &Statement) -> bool {
    match stmt {
        Statement::Return { .. } | Statement::Kill | Statement::Break | Statement::Continue => true,
        Statement::Block(b) => b.last().is_some_and(leaves),
        Statement::If { accept, reject, .. } => {
            accept.last().is_some_and(leaves) && reject.last().is_some_and(leaves)
        }
        _ => false,
    }
}

/// Records the expressions `block`'s statements produce (emitted or as results), recursively.
fn produced_in(block: &Block, dead: &mut Vec<Handle<Expression>>) {
    for stmt in block.iter() {
        produced(stmt, dead);
    }
}

fn produced(stmt: &Statement, dead: &mut Vec<Handle<Expression>>) {
    match stmt {
        Statement::Emit(range) => dead.extend(range.clone()),
        Statement::Block(b) => produced_in(b, dead),
        Statement::If { accept, reject, .. } => {
            produced_in(accept, dead);
            produced_in(reject, dead);
        }
        Statement::Loop {
            body, continuing, ..
        } => {
            produced_in(body, dead);
            produced_in(continuing, dead);
        }
        Statement::Switch { cases, .. } => cases.iter().for_each(|c| produced_in(&c.body, dead)),
        Statement::Call {
            result: Some(r), ..
        }
        | Statement::WorkGroupUniformLoad { result: r, .. } => dead.push(*r),
        Statement::Atomic {
            result: Some(r), ..
        } => dead.push(*r),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::KernelId;
    use crate::gpu::variants::SeqConstants;
    use crate::model::{Activation, Loss};

    /// The names of the functions `variant`'s specialised module keeps.
    fn kept(variant: &Variant) -> Vec<String> {
        let parsed = parsed().expect("the assembled WGSL parses");
        let module = specialise(&parsed, variant).expect("the variant specialises");
        module
            .functions
            .iter()
            .filter_map(|(_, f)| f.name.clone())
            .collect()
    }

    fn seq(part: u32, kind: Activation, closed: bool, loss: Loss) -> Variant {
        Variant {
            kernel: KernelId::ReuseSeq(part),
            loss,
            seq: Some(SeqConstants {
                kind,
                closed,
                from_inputs: false,
                r: 4,
            }),
            narrow: false,
        }
    }

    /// A `reuse_seq` pipeline hands the driver only its own activation and its own path: llvmpipe
    /// spends its compile time on every function the module holds, taken or not.
    #[test]
    fn reuse_seq_modules_hold_only_their_activation_and_path() {
        let all = ["sigmoid_f32", "tanh_f32", "relu_f32"];
        let cases = [
            (Activation::Sigmoid, Some("sigmoid_f32")),
            (Activation::Tanh, Some("tanh_f32")),
            (Activation::Relu, Some("relu_f32")),
            (Activation::Identity, None),
        ];
        for (kind, own) in cases {
            for (part, closed, loss, units) in [
                (0, true, Loss::Mse, true),
                (0, true, Loss::CrossEntropy, false),
                (1, true, Loss::Mse, false),
                (2, false, Loss::Mse, false),
                (3, false, Loss::CrossEntropy, false),
            ] {
                let v = seq(part, kind, closed, loss);
                let names = kept(&v);
                for f in all {
                    assert_eq!(
                        names.iter().any(|n| n == f),
                        Some(f) == own,
                        "{}: {f} kept or dropped wrongly; kept {names:?}",
                        v.name()
                    );
                }
                assert!(!names.iter().any(|n| n == "activate"), "{}", v.name());
                assert_eq!(
                    names.iter().any(|n| n == "reuse_seq_units"),
                    units,
                    "{}: the unit path kept or dropped wrongly; kept {names:?}",
                    v.name()
                );
            }
        }
    }
}
