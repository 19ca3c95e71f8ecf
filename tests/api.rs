//! The library's front door (`Training`): same numbers as the trainer underneath, resumable, and
//! the resident loop equal to the host loop.

mod common;

use common::{assert_ulp_close, gpu};
use perturb::estimate::StepMode;
use perturb::rng::Direction;
use perturb::train::train;
use perturb::{Dataset, Device, Estimator, Hyper, Loop, Model, Outcome, Training};

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn training_gives_what_the_trainer_gives() {
    let (model, data) = (Model::book(), Dataset::book());
    let mut cpu = perturb::cpu::CpuEvaluator::<f32>::new(&model, &data).unwrap();
    let want = train(&mut cpu, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    let got = Training::new(model, data)
        .device(Device::cpu())
        .run()
        .unwrap();
    assert_eq!(got.outcome, Outcome::Finished);
    assert_ulp_close("losses", &f32s(&got.losses), &f32s(&want.losses), 0);
    assert_ulp_close("params", &got.model.params, &want.params, 0);
}

#[test]
fn a_resumed_training_equals_one_uninterrupted_run() {
    let hyper = Hyper {
        epochs: 30,
        estimator: Estimator::Spsa {
            samples: 3,
            direction: Direction::Rademacher,
        },
        step: StepMode::Nominal,
        seed: 11,
        ..Hyper::book()
    };
    let start = || Training::new(Model::book(), Dataset::book()).device(Device::cpu());
    let whole = start().hyper(hyper).run().unwrap();
    let first = start()
        .hyper(Hyper {
            epochs: 12,
            ..hyper
        })
        .run()
        .unwrap();
    let rest = start()
        .hyper(hyper)
        .resume(first.model.params.clone(), first.losses.clone())
        .run()
        .unwrap();
    assert_eq!(rest.losses.len(), 30);
    assert_ulp_close("losses", &f32s(&rest.losses), &f32s(&whole.losses), 0);
    assert_ulp_close("params", &rest.model.params, &whole.model.params, 0);
}

#[test]
fn the_resident_loop_through_the_api_equals_the_host_loop() {
    let Some(ctx) = gpu() else { return };
    let exact = common::max_ulp(&ctx) == 0;
    drop(ctx);
    let run = |looping| {
        Training::new(Model::book(), Dataset::book())
            .device(Device::gpu())
            .looping(looping)
            .run()
            .unwrap()
    };
    let host = run(Loop::Host);
    let resident = run(Loop::Resident(40));
    let budget = if exact {
        0
    } else {
        common::OTHER_ADAPTER_MAX_ULP
    };
    assert_ulp_close(
        "losses",
        &f32s(&resident.losses),
        &f32s(&host.losses),
        budget,
    );
    assert_ulp_close("params", &resident.model.params, &host.model.params, budget);
}

#[test]
fn bad_settings_are_errors() {
    let e = Training::new(Model::book(), Dataset::book())
        .device(Device::cpu())
        .looping(Loop::Resident(10))
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("GPU"), "{e}");
    let e = Training::new(Model::book(), Dataset::book())
        .device(Device::cpu())
        .hyper(Hyper {
            epochs: 0,
            ..Hyper::book()
        })
        .run()
        .unwrap_err();
    // The library names the setting (the command line words it as --epochs).
    assert!(
        matches!(
            e,
            perturb::Error::Invalid {
                setting: perturb::error::Setting::Epochs,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("epochs must be"), "{e}");
}
