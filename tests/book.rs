//! The book's example against golden values from `benches/numpy_book.py` (the notebook's algorithm in
//! NumPy 2.4.6, float64 forward pass with float32 parameters).

use perturb::cpu::CpuEvaluator;
use perturb::train::train;
use perturb::{Dataset, Hyper, Model};

/// Loss per epoch printed by the notebook's algorithm (float64).
const NOTEBOOK_LOSSES: [f64; 100] = [
    0.33455008989960927,
    0.31207511631926566,
    0.2911120956789758,
    0.2715584285618008,
    0.25331865368289397,
    0.23630390535663506,
    0.22043418057939854,
    0.20562934393762614,
    0.19181767195565072,
    0.17893238381869275,
    0.16691118681233832,
    0.1556960598895045,
    0.14523290882197154,
    0.13547129821318538,
    0.126364203525363,
    0.1178677719072326,
    0.10994110911041786,
    0.10254605271268186,
    0.09564699296836097,
    0.08921074608186348,
    0.08320634138085492,
    0.07760503878539614,
    0.07237968732031032,
    0.06750512536909528,
    0.06295786147683874,
    0.05871598599232297,
    0.05475906776322453,
    0.05106800838977991,
    0.04762501204639483,
    0.044413471300763355,
    0.041417873698660075,
    0.038623745036919385,
    0.0360175776318961,
    0.03358678180085144,
    0.03131958990014603,
    0.02920503167868223,
    0.027232868364629497,
    0.025393544746915474,
    0.023678132739303314,
    0.02207831742340097,
    0.020586339162646575,
    0.01919494605589163,
    0.01789738244696673,
    0.016687334456439332,
    0.015558921894026802,
    0.014506657358045965,
    0.013525415251898458,
    0.012610413271066044,
    0.011757190985279442,
    0.010961594427058456,
    0.010219733295358899,
    0.009527991926000508,
    0.008882992686269521,
    0.008281587464907298,
    0.007720834249697889,
    0.007197992690909958,
    0.006710504270592703,
    0.006255988288031289,
    0.005832214259682782,
    0.005437109013175332,
    0.005068735059297772,
    0.004725292634171949,
    0.0044050918660767276,
    0.004106566493298054,
    0.003828250160445695,
    0.003568779046873218,
    0.0033268555390690235,
    0.0031013157522747797,
    0.002891055059829749,
    0.0026950386718235576,
    0.0025123019079616535,
    0.002341946698323426,
    0.002183135921202711,
    0.00203508829733315,
    0.0018970737376910656,
    0.001768414889459122,
    0.0016484773069977187,
    0.0015366708335886404,
    0.0014324440117165216,
    0.0013352836204244343,
    0.001244711528649081,
    0.0011602820158438363,
    0.0010815776466858748,
    0.001008211899842591,
    0.0009398217183494966,
    0.0008760698739139329,
    0.0008166431697902797,
    0.0007612470158453993,
    0.0007096087304761019,
    0.000661474110738365,
    0.0006166046444109604,
    0.0005747796252062117,
    0.0005357920717726557,
    0.0004994497309170723,
    0.00046557332639869436,
    0.0004339957472558013,
    0.0004045611657898734,
    0.0003771229521512175,
    0.0003515471664019062,
    0.0003277067302998909,
];

/// Trained float32 parameters (W1 row-major, b1, W2, b2) as bit patterns.
const NOTEBOOK_PARAM_BITS: [u32; 13] = [
    0x3c694f12, 0xbf173dc7, 0xbe8d0dba, 0x3ecc3470, 0xbf0778c2, 0x3e3ee0cb, 0x3bb5893f, 0x3f0d4a36,
    0xbd8728be, 0x3eb1ed4a, 0xbd627895, 0x3d1a0b58, 0xbe65d1bc,
];

/// Prediction for x = [1, 1] after training, float64.
const NOTEBOOK_PREDICTION: f64 = -0.017478102528689282;

/// float64 libm `exp` may differ from NumPy's by an ULP; losses may differ by a few float64 ULP.
const LOSS_REL_TOL_F64: f64 = 1e-13;
/// float32 arithmetic lands within this relative distance of the float64 notebook (BOOK.md: ~1e-4).
const F32_VS_NOTEBOOK_REL_TOL: f64 = 2e-4;
/// …and trained float32 parameters within this absolute distance (measured: 1.06e-5; b1[0] is only
/// 0.0055, so relative error is the wrong yardstick for parameters).
const F32_VS_NOTEBOOK_PARAM_ABS_TOL: f64 = 5e-5;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

fn worst(a: &[f64], b: &[f64]) -> (usize, f64) {
    a.iter()
        .zip(b)
        .map(|(x, y)| rel(*x, *y))
        .enumerate()
        .fold((0, 0.0), |w, (i, r)| if r > w.1 { (i, r) } else { w })
}

#[test]
fn f64_cpu_reproduces_the_notebook_parameters_bit_for_bit() {
    let model = Model::book();
    let data = Dataset::book();
    let mut cpu = CpuEvaluator::<f64>::new(&model, &data).unwrap();
    let run = train(&mut cpu, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    for (k, (got, want)) in run.params.iter().zip(NOTEBOOK_PARAM_BITS).enumerate() {
        assert_eq!(
            got.to_bits(),
            want,
            "parameter {k}: got {got} ({:#010x}), notebook {} ({want:#010x})",
            got.to_bits(),
            f32::from_bits(want)
        );
    }
    let (i, r) = worst(&run.losses, &NOTEBOOK_LOSSES);
    assert!(
        r <= LOSS_REL_TOL_F64,
        "epoch {}: loss {} vs notebook {} (rel {r:e})",
        i + 1,
        run.losses[i],
        NOTEBOOK_LOSSES[i]
    );
    assert_eq!(format!("{:.8}", run.losses[0]), "0.33455009");
    let trained = model.with_params(run.params).unwrap();
    let pred = CpuEvaluator::<f64>::new(&trained, &data)
        .unwrap()
        .predict(&trained.params)[0][0];
    assert!(
        rel(pred, NOTEBOOK_PREDICTION) <= LOSS_REL_TOL_F64,
        "prediction {pred} vs {NOTEBOOK_PREDICTION}"
    );
    assert_eq!(format!("{pred:.7}"), "-0.0174781");
}

#[test]
fn f32_cpu_stays_within_2e_4_relative_of_the_notebook() {
    let model = Model::book();
    let mut cpu = CpuEvaluator::<f32>::new(&model, &Dataset::book()).unwrap();
    let run = train(&mut cpu, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    let (i, r) = worst(&run.losses, &NOTEBOOK_LOSSES);
    assert!(
        r <= F32_VS_NOTEBOOK_REL_TOL,
        "epoch {}: f32 loss {} vs notebook {} (rel {r:e})",
        i + 1,
        run.losses[i],
        NOTEBOOK_LOSSES[i]
    );
    let params: Vec<f64> = run.params.iter().map(|&p| p as f64).collect();
    let notebook: Vec<f64> = NOTEBOOK_PARAM_BITS
        .iter()
        .map(|&b| f32::from_bits(b) as f64)
        .collect();
    let (k, d) = params
        .iter()
        .zip(&notebook)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0), |w, (i, d)| if d > w.1 { (i, d) } else { w });
    assert!(
        d <= F32_VS_NOTEBOOK_PARAM_ABS_TOL,
        "parameter {k}: {} vs {} (abs {d:e})",
        params[k],
        notebook[k]
    );
}

#[test]
fn the_book_curve_falls_from_0_3346_to_about_3_3e_4() {
    let model = Model::book();
    let mut cpu = CpuEvaluator::<f32>::new(&model, &Dataset::book()).unwrap();
    let run = train(&mut cpu, &model.params, &Hyper::book(), |_, _| {}).unwrap();
    assert_eq!(format!("{:.4}", run.losses[0]), "0.3346");
    assert!(
        run.losses.windows(2).all(|w| w[1] < w[0]),
        "loss must fall every epoch"
    );
    assert!(
        (3.2e-4..3.4e-4).contains(&run.losses[99]),
        "last loss {}",
        run.losses[99]
    );
}
