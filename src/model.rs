//! The model description shared by every evaluator: layer shapes, activations and one flat float32
//! parameter vector, plus the book's preset, seeded random initialisation and the JSON model file.

use crate::error::{Error, Result, Setting};
use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// What a network is trained to minimise, averaged over a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error over every output of every sample (the book's).
    #[default]
    Mse,
    /// Softmax cross-entropy of an identity output layer's logits against target probabilities
    /// (one-hot for class labels), natural log, mean over samples:
    /// `mean_s(logsumexp(z_s) − Σ_k p_sk·z_sk)`, computed stably by [`crate::xent::softmax_xent_soft`].
    CrossEntropy,
}

impl Loss {
    /// `"mse"` or `"cross-entropy"`.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::CrossEntropy => "cross-entropy",
        }
    }

    /// The count a batch's summed per-sample losses are divided by: every output (MSE) or every
    /// sample (cross-entropy).
    pub fn mean_count(self, samples: usize, outputs: usize) -> usize {
        match self {
            Loss::Mse => samples * outputs,
            Loss::CrossEntropy => samples,
        }
    }

    /// Refuses a model the loss cannot train: cross-entropy needs an identity output layer (its
    /// logits).
    pub fn check(self, model: &Model) -> Result<()> {
        let last = model.layers().last().map(|l| l.activation);
        if self == Loss::CrossEntropy && last != Some(Activation::Identity) {
            return Err(Error::refused(
                &[(Setting::Loss, "cross-entropy")],
                format!(
                    "takes the logits of an identity output layer; this model's output layer is {}",
                    last.map_or("missing", Activation::name)
                ),
                None,
            ));
        }
        Ok(())
    }
}

/// Activation applied to a layer's pre-activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x`
    Identity,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `tanh x`
    Tanh,
    /// `max(x, 0)`
    Relu,
}

impl Activation {
    /// Every activation, in code order.
    pub const ALL: [Activation; 4] = [
        Activation::Identity,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
    ];

    /// The code the shaders use (`ACT_*` in `shaders/math.wgsl`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The lowercase name used in model files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
    }

    /// Parses a name as written in model files and on the command line.
    pub fn parse(s: &str) -> Result<Activation> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown activation {s:?} (expected sigmoid, tanh, relu or identity)"
                ))
            })
    }
}

/// Shape of one dense layer: `y = act(x · W + b)` with W laid out `[inputs][outputs]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Width of the layer's input.
    pub inputs: usize,
    /// Width of the layer's output (number of units).
    pub outputs: usize,
    /// Activation of its units.
    pub activation: Activation,
}

/// A multilayer perceptron: its layers and all parameters in one flat float32 vector.
///
/// Parameter order (the book's): for each layer, its weights row-major `[input][output]`, then its
/// biases. The k-th nudged evaluation perturbs `params[k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    layers: Vec<Layer>,
    /// Flat parameters in the order described on [`Model`].
    pub params: Vec<f32>,
}

/// Largest parameter count accepted: 16,777,216 (64 MiB of float32). Keeps a typo like
/// `--layers 100000,100000` from allocating gigabytes; one naive epoch of a model this size already
/// takes P² ≈ 3·10¹⁴ multiply-adds per sample. The GPU path checks its own, tighter, device limits.
pub const MAX_PARAMS: usize = 1 << 24;

/// Widest layer accepted, in units (inputs or outputs): 65,536. The GPU kernels allow fewer
/// (`gpu::MAX_WIDTH`).
pub const MAX_UNITS: usize = 1 << 16;

/// Most layers accepted: 1,024.
pub const MAX_LAYERS: usize = 1 << 10;

/// Largest model file read: 1 GiB (a pretty-printed file of [`MAX_PARAMS`] values takes about
/// half of it).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// One layer's place in the parameter vector and among all units ([`Model::layer_spans`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpan {
    /// Inputs of the layer.
    pub inputs: usize,
    /// Units (outputs) of the layer.
    pub outputs: usize,
    /// Offset of its weights (`[inputs][outputs]`) in the parameters.
    pub w_off: usize,
    /// Offset of its biases.
    pub b_off: usize,
    /// Index of its first unit among all units (the reuse cache's rows).
    pub unit_off: usize,
    /// Its activation.
    pub activation: Activation,
}

impl Model {
    /// A model from its layers and flat parameters, validating shapes and values.
    pub fn new(layers: Vec<Layer>, params: Vec<f32>) -> Result<Model> {
        let origin = "model";
        check_layers(&layers, origin)?;
        let expected = count_params(&layers);
        if params.len() != expected {
            return Err(model_err(
                origin,
                format!(
                    "{} parameters given, the layers need {expected}",
                    params.len()
                ),
            ));
        }
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(model_err(origin, format!("parameter {i} is {}", params[i])));
        }
        Ok(Model { layers, params })
    }

    /// The network of the book's chapter 1: 2 → 3 sigmoid → 1 identity, with its initial parameters.
    pub fn book() -> Model {
        let layers = vec![
            Layer {
                inputs: 2,
                outputs: 3,
                activation: Activation::Sigmoid,
            },
            Layer {
                inputs: 3,
                outputs: 1,
                activation: Activation::Identity,
            },
        ];
        #[rustfmt::skip]
        let params = vec![
            -0.0053, -0.5820, -0.2723,   // W1 row 0
            0.3793, -0.5204, 0.1896,     // W1 row 1
            -0.0140, 0.5607, -0.0628,    // b1
            0.1528, -0.1745, -0.1135,    // W2
            -0.5516,                     // b2
        ];
        Model { layers, params }
    }

    /// A seeded random network with the given widths (`[inputs, hidden.., outputs]`) and one
    /// activation per layer. Weights and biases are uniform in ±1/sqrt(fan_in), as PyTorch's
    /// `nn.Linear` initialises them; ChaCha8 makes the values the same on every machine.
    pub fn random(widths: &[usize], activations: &[Activation], seed: u64) -> Result<Model> {
        if widths.len() < 2 {
            return Err(Error::invalid(
                Setting::Layers,
                format!(
                    "needs at least two widths (inputs and outputs), got {}",
                    widths.len()
                ),
            ));
        }
        if activations.len() != widths.len() - 1 {
            return Err(Error::invalid(
                Setting::Activations,
                format!(
                    "needs one activation per layer: {} layers, {} activations",
                    widths.len() - 1,
                    activations.len()
                ),
            ));
        }
        let layers: Vec<Layer> = widths
            .windows(2)
            .zip(activations)
            .map(|(w, &activation)| Layer {
                inputs: w[0],
                outputs: w[1],
                activation,
            })
            .collect();
        // Option errors (exit status 1), though the checks are the model file's.
        check_layers(&layers, "layers").map_err(|e| match e {
            Error::Model { message, .. } => Error::invalid(Setting::Layers, message),
            other => other,
        })?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(count_params(&layers));
        for layer in &layers {
            let bound = 1.0 / (layer.inputs as f32).sqrt();
            for _ in 0..(layer.inputs + 1) * layer.outputs {
                params.push(rng.random_range(-bound..bound));
            }
        }
        Ok(Model { layers, params })
    }

    /// The layers, input to output.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Width of the network's input.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    /// Width of the network's output.
    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// Total parameter count P.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Offset of layer `l`'s weights in [`Model::params`]; its biases follow them.
    pub fn weight_offset(&self, l: usize) -> usize {
        count_params(&self.layers[..l])
    }

    /// Offset of layer `l`'s biases in [`Model::params`].
    pub fn bias_offset(&self, l: usize) -> usize {
        self.weight_offset(l) + self.layers[l].inputs * self.layers[l].outputs
    }

    /// Layer `l`'s weights as an `[inputs][outputs]` view.
    pub fn weights(&self, l: usize) -> ArrayView2<'_, f32> {
        let layer = self.layers[l];
        let off = self.weight_offset(l);
        ArrayView2::from_shape(
            (layer.inputs, layer.outputs),
            &self.params[off..off + layer.inputs * layer.outputs],
        )
        .expect("shape matches by construction")
    }

    /// Layer `l`'s biases.
    pub fn biases(&self, l: usize) -> &[f32] {
        let off = self.bias_offset(l);
        &self.params[off..off + self.layers[l].outputs]
    }

    /// Widest layer output (the activations an evaluation keeps per sample).
    pub fn max_width(&self) -> usize {
        self.layers.iter().map(|l| l.outputs).max().unwrap_or(0)
    }

    /// Sum of all layer widths: the units the reuse cache keeps a z and an a of per sample.
    pub fn num_units(&self) -> usize {
        self.layers.iter().map(|l| l.outputs).sum()
    }

    /// Every layer's place in the flat parameter vector and among all units: the one layout the
    /// CPU reference, the GPU's layer table and the reuse cache share.
    pub fn layer_spans(&self) -> Vec<LayerSpan> {
        let mut unit_off = 0;
        (0..self.layers.len())
            .map(|l| {
                let layer = self.layers[l];
                let span = LayerSpan {
                    inputs: layer.inputs,
                    outputs: layer.outputs,
                    w_off: self.weight_offset(l),
                    b_off: self.bias_offset(l),
                    unit_off,
                    activation: layer.activation,
                };
                unit_off += layer.outputs;
                span
            })
            .collect()
    }

    /// Whether the reuse method sums the output layer in closed form: an identity output layer of
    /// at least two outputs after at least one hidden layer (with one output there is no loop to
    /// save). Both evaluators decide by this.
    pub fn closed_form_output(&self) -> bool {
        self.layers.len() >= 2
            && self.layers[self.layers.len() - 1].activation == Activation::Identity
            && self.outputs() >= 2
    }

    /// Units whose closed-form output sums the reuse cache keeps (the last hidden layer's width),
    /// or 0 when [`Model::closed_form_output`] does not apply.
    pub fn closed_form_units(&self) -> usize {
        if self.closed_form_output() {
            self.layers[self.layers.len() - 1].inputs
        } else {
            0
        }
    }

    /// The same network with other parameters (which must have the same count and be finite).
    pub fn with_params(&self, params: Vec<f32>) -> Result<Model> {
        Model::new(self.layers.clone(), params)
    }

    /// Parses a model file's JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Model> {
        let file: ModelFile = serde_json::from_str(text)
            .map_err(|e| model_err(origin, format!("invalid model JSON: {e}")))?;
        file.into_model(origin)
    }

    /// The model in the model-file format.
    pub fn to_file(&self) -> ModelFile {
        ModelFile {
            layers: (0..self.layers.len())
                .map(|l| LayerFile {
                    weights: self.weights(l).outer_iter().map(|r| r.to_vec()).collect(),
                    biases: self.biases(l).to_vec(),
                    activation: self.layers[l].activation,
                })
                .collect(),
        }
    }
}

/// The model file: `{"layers": [{"weights": [[..one row per input..]], "biases": [..], "activation": ".."}]}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Layers, input to output.
    pub layers: Vec<LayerFile>,
}

/// One layer of a [`ModelFile`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFile {
    /// `[inputs][outputs]`.
    pub weights: Vec<Vec<f32>>,
    /// `[outputs]`.
    pub biases: Vec<f32>,
    /// The layer's activation.
    pub activation: Activation,
}

impl ModelFile {
    /// Validates shapes and values and flattens into a [`Model`].
    pub fn into_model(self, origin: &str) -> Result<Model> {
        if self.layers.is_empty() {
            return Err(model_err(origin, "\"layers\" is empty".into()));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(model_err(
                origin,
                format!("{} layers; the limit is {MAX_LAYERS}", self.layers.len()),
            ));
        }
        let mut layers: Vec<Layer> = Vec::new();
        let mut params = Vec::new();
        for (l, lf) in self.layers.iter().enumerate() {
            let inputs = lf.weights.len();
            let outputs = lf.biases.len();
            if inputs == 0 {
                return Err(model_err(
                    origin,
                    format!("layers[{l}].weights has no rows"),
                ));
            }
            if outputs == 0 {
                return Err(model_err(origin, format!("layers[{l}].biases is empty")));
            }
            if inputs > MAX_UNITS || outputs > MAX_UNITS {
                return Err(model_err(
                    origin,
                    format!("layers[{l}] is {inputs}x{outputs}; the limit is {MAX_UNITS} units per layer"),
                ));
            }
            for (r, row) in lf.weights.iter().enumerate() {
                if row.len() != outputs {
                    return Err(model_err(
                        origin,
                        format!(
                            "layers[{l}].weights[{r}] has {} values but layers[{l}].biases has {outputs} (one weight per output unit)",
                            row.len()
                        ),
                    ));
                }
            }
            if l > 0 && inputs != layers[l - 1].outputs {
                let prev = &layers[l - 1];
                return Err(model_err(
                    origin,
                    format!(
                        "layers[{l}].weights has {inputs} rows but layers[{}] has {} outputs",
                        l - 1,
                        prev.outputs
                    ),
                ));
            }
            let values = lf.weights.iter().flatten().chain(&lf.biases);
            for (i, v) in values.clone().enumerate() {
                if !v.is_finite() {
                    return Err(model_err(
                        origin,
                        format!("layers[{l}] value {i} is {v} (parameters must be finite)"),
                    ));
                }
            }
            params.extend(values);
            layers.push(Layer {
                inputs,
                outputs,
                activation: lf.activation,
            });
        }
        Model::new(layers, params).map_err(|e| match e {
            Error::Model { message, .. } => model_err(origin, message),
            other => other,
        })
    }
}

fn count_params(layers: &[Layer]) -> usize {
    layers.iter().map(|l| (l.inputs + 1) * l.outputs).sum()
}

fn check_layers(layers: &[Layer], origin: &str) -> Result<()> {
    if layers.is_empty() {
        return Err(model_err(origin, "no layers".into()));
    }
    if layers.len() > MAX_LAYERS {
        return Err(model_err(
            origin,
            format!("{} layers; the limit is {MAX_LAYERS}", layers.len()),
        ));
    }
    let mut total: usize = 0;
    for (l, layer) in layers.iter().enumerate() {
        if layer.inputs == 0 || layer.outputs == 0 {
            return Err(model_err(origin, format!("layer {l} has a zero width")));
        }
        if l > 0 && layer.inputs != layers[l - 1].outputs {
            return Err(model_err(
                origin,
                format!(
                    "layer {l} takes {} inputs but layer {} gives {} outputs",
                    layer.inputs,
                    l - 1,
                    layers[l - 1].outputs
                ),
            ));
        }
        let n = layer
            .inputs
            .checked_add(1)
            .and_then(|i| i.checked_mul(layer.outputs));
        total = match n.and_then(|n| total.checked_add(n)) {
            Some(t) if t <= MAX_PARAMS => t,
            _ => {
                return Err(model_err(
                    origin,
                    format!("more than {MAX_PARAMS} parameters; this is not a network perturbation training can handle"),
                ))
            }
        };
        if layer.inputs > MAX_UNITS || layer.outputs > MAX_UNITS {
            return Err(model_err(
                origin,
                format!(
                    "layer {l} is {}x{}; the limit is {MAX_UNITS} units per layer",
                    layer.inputs, layer.outputs
                ),
            ));
        }
    }
    Ok(())
}

fn model_err(origin: &str, message: String) -> Error {
    Error::Model {
        origin: origin.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_model_has_13_params_in_book_order() {
        let m = Model::book();
        assert_eq!(m.num_params(), 13);
        assert_eq!(m.weights(0)[[1, 0]], 0.3793);
        assert_eq!(m.biases(0), &[-0.0140, 0.5607, -0.0628]);
        assert_eq!(m.weights(1)[[2, 0]], -0.1135);
        assert_eq!(m.biases(1), &[-0.5516]);
    }

    #[test]
    fn model_json_round_trips_bit_for_bit() {
        let m = Model::random(&[3, 5, 2], &[Activation::Tanh, Activation::Relu], 7).unwrap();
        let text = serde_json::to_string(&m.to_file()).unwrap();
        let back = Model::from_json(&text, "x").unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn random_model_is_reproducible_from_its_seed() {
        let a =
            Model::random(&[2, 3, 1], &[Activation::Sigmoid, Activation::Identity], 42).unwrap();
        let b =
            Model::random(&[2, 3, 1], &[Activation::Sigmoid, Activation::Identity], 42).unwrap();
        let c =
            Model::random(&[2, 3, 1], &[Activation::Sigmoid, Activation::Identity], 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.params.iter().all(|p| p.abs() <= 1.0 / 2f32.sqrt()));
    }

    fn layer_json(inputs: usize, outputs: usize) -> String {
        let row = format!("[{}]", vec!["0"; outputs].join(","));
        format!(
            r#"{{"weights": [{}], "biases": {row}, "activation": "identity"}}"#,
            vec![row.as_str(); inputs].join(",")
        )
    }

    #[test]
    fn widths_over_max_units_are_refused_from_flags_and_files() {
        let acts = [Activation::Sigmoid, Activation::Identity];
        let e = Model::random(&[1, MAX_UNITS + 1, 1], &acts, 0).unwrap_err();
        // An option error (the flag's), not a model file's.
        assert_eq!(e.class(), crate::error::ErrorClass::Config, "{e:?}");
        assert!(e.to_string().contains("65536 units per layer"), "{e}");
        assert!(Model::random(&[1, MAX_UNITS, 1], &acts, 0).is_ok());
        let text = format!(r#"{{"layers": [{}]}}"#, layer_json(1, MAX_UNITS + 1));
        let e = Model::from_json(&text, "wide.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("wide.json: layers[0] is 1x65537; the limit is 65536"),
            "{e}"
        );
    }

    #[test]
    fn layer_counts_over_max_layers_are_refused() {
        let widths = vec![1; MAX_LAYERS + 2];
        let acts = vec![Activation::Identity; MAX_LAYERS + 1];
        let e = Model::random(&widths, &acts, 0).unwrap_err();
        assert!(
            e.to_string().contains("1025 layers; the limit is 1024"),
            "{e}"
        );
        assert!(Model::random(&widths[1..], &acts[1..], 0).is_ok());
        let layers = vec![layer_json(1, 1); MAX_LAYERS + 1].join(",");
        let e = Model::from_json(&format!(r#"{{"layers": [{layers}]}}"#), "deep.json").unwrap_err();
        assert!(
            e.to_string().contains("1025 layers; the limit is 1024"),
            "{e}"
        );
    }

    #[test]
    fn parameter_counts_over_max_params_are_refused_without_allocating() {
        let acts = [Activation::Sigmoid, Activation::Identity];
        // 4096 → 4096 → 1: 16,785,409 parameters, just over the cap; 4095 wide is just under.
        let e = Model::random(&[4096, 4096, 1], &acts, 0).unwrap_err();
        assert!(
            e.to_string().contains("more than 16777216 parameters"),
            "{e}"
        );
        let widths = [usize::MAX / 2, 3, 1];
        let e = Model::random(&widths, &acts, 0).unwrap_err();
        assert!(e.to_string().contains("parameters"), "{e}");
        let layers = vec![
            Layer {
                inputs: 4096,
                outputs: 4096,
                activation: Activation::Identity,
            },
            Layer {
                inputs: 4096,
                outputs: 1,
                activation: Activation::Identity,
            },
        ];
        assert!(Model::new(layers, vec![]).is_err());
    }

    #[test]
    fn every_finite_f32_pattern_class_round_trips_through_the_model_file() {
        // Subnormals, the extremes and values whose shortest decimal is long; serde_json's
        // float_roundtrip feature parses them correctly rounded (without it f64 parsing is not).
        let values = [
            f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            -0.0,
            0.1,
            1.0 / 3.0,
            16_777_217.0,
            f32::EPSILON,
            -f32::from_bits(0x3a83_126f),
            f32::from_bits(0x7f7f_fffe),
            f32::from_bits(0x0080_0001),
        ];
        let layers = vec![Layer {
            inputs: values.len() - 1,
            outputs: 1,
            activation: Activation::Identity,
        }];
        let m = Model::new(layers, values.to_vec()).unwrap();
        let back = Model::from_json(&serde_json::to_string(&m.to_file()).unwrap(), "x").unwrap();
        let bits = |m: &Model| m.params.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&m));
    }
}
