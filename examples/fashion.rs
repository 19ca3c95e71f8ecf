//! Fashion-MNIST by finite differences, through the library: a 784-128-10 network (relu, identity
//! logits), softmax cross-entropy, mini-batches of 32, the reuse method, test accuracy after every
//! epoch. Needs Debian's `dataset-fashion-mnist` (or `$PERTURB_DATA_DIR/fashion-mnist/`).
//!
//! `cargo run --release --example fashion -- [EPOCHS] [TRAIN_SAMPLES] [cpu|gpu]`
//! (defaults: 1 epoch, all 60,000 training images, the CPU).

use perturb::settings::Batching;
use perturb::{files, Activation, Device, Hyper, Loss, Method, Model, Training};
use std::num::NonZeroUsize;
use std::path::Path;

fn main() -> Result<(), perturb::Error> {
    let arg = |i: usize| std::env::args().nth(i);
    let epochs: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let take = arg(2)
        .and_then(|s| s.parse().ok())
        .and_then(NonZeroUsize::new)
        .unwrap_or(NonZeroUsize::new(60_000).expect("non-zero"));
    let device = match arg(3).as_deref() {
        Some("gpu") => Device::gpu(),
        _ => Device::cpu(),
    };
    let model = Model::random(
        &[784, 128, 10],
        &[Activation::Relu, Activation::Identity],
        0,
    )?;
    let load = |name: &str| files::load_data(Path::new(name), &model, Loss::CrossEntropy);
    let train = load("fashion-mnist")?.take(take);
    let test = load("fashion-mnist:test")?;
    println!(
        "{} training images, {} test images, {} parameters",
        train.len(),
        test.len(),
        model.num_params()
    );
    let done = Training::new(model, train)
        .device(device)
        .method(Method::Reuse)
        .loss(Loss::CrossEntropy)
        .batching(Batching {
            size: 32,
            shuffle: true,
        })
        .hyper(Hyper {
            epochs,
            lr: 0.1,
            ..Hyper::book()
        })
        .validation(test)
        .on_epoch(|e| {
            let acc = e.val.and_then(|v| v.accuracy).unwrap_or(f64::NAN);
            println!(
                "epoch {}  train loss {:.4}  test accuracy {:.2}%",
                e.epoch,
                e.loss,
                100.0 * acc
            );
        })
        .run_all()?;
    if let Some(e) = done.fault {
        return Err(e);
    }
    println!(
        "trained on {} in {:.1} s ({:.1} s per epoch)",
        done.device.adapter,
        done.seconds,
        done.seconds / epochs as f64
    );
    Ok(())
}
