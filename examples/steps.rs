//! A fixed number of CPU reuse steps of one of `perturb bench`'s sizes, for instruction counts:
//! `valgrind --tool=callgrind target/release/examples/steps medium cross-entropy 5` counts the
//! same work every time (timings on a shared machine swing; instruction counts do not).
//! Arguments: size (default medium), loss `mse` or `cross-entropy` (default mse), steps (default
//! 5), threads (default 1).

use perturb::bench::SIZES;
use perturb::cpu::CpuEvaluator;
use perturb::{Evaluator, Loss, Method};

fn main() -> Result<(), perturb::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let name = arg(0, "medium");
    let Some(size) = SIZES.iter().find(|s| s.name == name) else {
        eprintln!("unknown size {name}; sizes: book, small, medium, mnist, mnist1k");
        std::process::exit(2);
    };
    let loss = match arg(1, "mse").as_str() {
        "mse" => Loss::Mse,
        "cross-entropy" => Loss::CrossEntropy,
        other => {
            eprintln!("unknown loss {other}; losses: mse, cross-entropy");
            std::process::exit(2);
        }
    };
    let number = |i: usize, default: &str| {
        arg(i, default).parse::<usize>().unwrap_or_else(|e| {
            eprintln!("argument {}: {e}", i + 1);
            std::process::exit(2);
        })
    };
    let (steps, threads) = (number(2, "5"), number(3, "1"));
    let (model, data) = size.build_for(loss);
    let mut ev = CpuEvaluator::<f32>::with_options(&model, &data, Method::Reuse, loss)?;
    ev.set_threads(threads);
    let mut deltas = vec![0.0f32; model.num_params()];
    let mut base = 0.0;
    for _ in 0..steps {
        base = ev.evaluate(&model.params, 1e-4, &mut deltas)?;
    }
    println!("{name} {loss:?} loss {base} after {steps} steps on {threads} thread(s)");
    Ok(())
}
