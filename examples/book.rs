//! The book's chapter-1 network trained by weight perturbation, as a library call:
//! `cargo run --release --example book` (GPU; falls back to the CPU when there is no adapter).

use perturb::{report, Dataset, Device, Hyper, Model, Training};

fn main() -> Result<(), perturb::Error> {
    let hyper = Hyper {
        epochs: 100,
        lr: 0.01,
        ..Hyper::book()
    };
    let train = |device| {
        Training::new(Model::book(), Dataset::book())
            .device(device)
            .hyper(hyper)
            .on_epoch(|e| println!("epoch {:>3}  loss {:.8}", e.epoch, e.loss))
            .run()
    };
    let run = train(Device::gpu()).or_else(|e| {
        eprintln!("no GPU ({e}); training on the CPU");
        train(Device::cpu())
    })?;
    println!("trained on {} in {:.3} s", run.device.adapter, run.seconds);
    print!("{}", report::format_params(&run.model, 8));
    Ok(())
}
