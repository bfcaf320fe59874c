//! Parameterised layers in PyTorch's naming and initialisation: conv (no bias), batch norm with
//! running statistics, linear with bias. Each parameter is a leaf with a frozen twin that shares
//! its storage: train-mode forwards use the leaf (gradients flow into it), attacks and evaluation
//! use the twin (no weight gradient is ever computed for them).

use std::cell::Cell;

use engine::ops::batchnorm::{batchnorm_act, Act, RunningStats};
use engine::ops::{conv2d, linear};
use engine::{Rng, Runtime, Tensor};

use crate::error::Result;

/// A trainable tensor under its PyTorch state-dict name.
pub struct Param {
    pub name: String,
    leaf: Tensor,
    frozen: Tensor,
}

impl Param {
    pub fn new(rt: &Runtime, name: String, shape: &[usize], data: &[f32]) -> Result<Param> {
        let frozen = Tensor::from_f32(rt, shape, data)?;
        let leaf = frozen.requiring_grad();
        Ok(Param { name, leaf, frozen })
    }

    /// U(-bound, bound), PyTorch's default for conv and linear weights and biases.
    pub fn uniform(rt: &Runtime, name: String, shape: &[usize], bound: f64, rng: &mut Rng) -> Result<Param> {
        let n = shape.iter().product();
        Param::new(rt, name, shape, &rng.uniform_vec(n, -bound, bound))
    }

    /// The tensor a forward should use: the leaf if gradients must reach this parameter.
    pub fn get(&self, grad: bool) -> &Tensor {
        if grad {
            &self.leaf
        } else {
            &self.frozen
        }
    }

    /// The leaf: the key of this parameter's gradient in `Gradients`.
    pub fn leaf(&self) -> &Tensor {
        &self.leaf
    }
}

pub struct Conv {
    pub weight: Param,
    pub stride: u32,
    pub pad: u32,
}

impl Conv {
    pub fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, k: usize, stride: u32, rng: &mut Rng) -> Result<Conv> {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let weight = Param::uniform(rt, format!("{name}.weight"), &[cout, cin, k, k], bound, rng)?;
        Ok(Conv { weight, stride, pad: (k as u32 - 1) / 2 })
    }

    /// The WideResNet's initialisation: N(0, sqrt(2 / (k k cout))) (He, fan-out).
    pub fn he_normal(rt: &Runtime, name: &str, cin: usize, cout: usize, k: usize, stride: u32, rng: &mut Rng) -> Result<Conv> {
        let std = (2.0 / (k * k * cout) as f64).sqrt();
        let data: Vec<f32> = (0..cout * cin * k * k).map(|_| (std * normal(rng)) as f32).collect();
        Ok(Conv { weight: Param::new(rt, format!("{name}.weight"), &[cout, cin, k, k], &data)?, stride, pad: (k as u32 - 1) / 2 })
    }

    pub fn forward(&self, rt: &Runtime, x: &Tensor, grad: bool) -> Result<Tensor> {
        Ok(conv2d::conv2d(rt, x, self.weight.get(grad), self.stride, self.pad)?)
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u = rng.next_f64().max(f64::MIN_POSITIVE);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()
}

pub struct BatchNorm {
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// PyTorch's `num_batches_tracked`, kept so checkpoints round-trip.
    pub num_batches_tracked: Cell<i64>,
    pub name: String,
}

impl BatchNorm {
    pub fn new(rt: &Runtime, name: &str, c: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            weight: Param::new(rt, format!("{name}.weight"), &[c], &vec![1.0; c])?,
            bias: Param::new(rt, format!("{name}.bias"), &[c], &vec![0.0; c])?,
            running_mean: Tensor::from_f32(rt, &[c], &vec![0.0; c])?,
            running_var: Tensor::from_f32(rt, &[c], &vec![1.0; c])?,
            num_batches_tracked: Cell::new(0),
            name: name.to_string(),
        })
    }

    /// Train mode: batch statistics, running stats move, gradients reach gamma and beta.
    /// Eval mode: running statistics, parameters frozen.
    pub fn forward(&self, rt: &Runtime, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(rt, x, train, Act::default())
    }

    /// `act(BN(x) + residual)` in the dispatches of the batch norm alone (see [`Act`]).
    pub fn forward_act(&self, rt: &Runtime, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if train {
            self.num_batches_tracked.set(self.num_batches_tracked.get() + 1);
        }
        let running = RunningStats { mean: &self.running_mean, var: &self.running_var };
        Ok(batchnorm_act(rt, x, self.weight.get(train), self.bias.get(train), running, train, act)?)
    }
}

pub struct Linear {
    pub weight: Param,
    pub bias: Param,
}

impl Linear {
    pub fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, rng: &mut Rng) -> Result<Linear> {
        let bound = 1.0 / (cin as f64).sqrt();
        Ok(Linear {
            weight: Param::uniform(rt, format!("{name}.weight"), &[cout, cin], bound, rng)?,
            bias: Param::uniform(rt, format!("{name}.bias"), &[cout], bound, rng)?,
        })
    }

    /// As [`Linear::new`] with the bias zeroed (the WideResNet's initialisation).
    pub fn zero_bias(self, rt: &Runtime) -> Result<Linear> {
        let shape = self.bias.leaf().shape().to_vec();
        let bias = Param::new(rt, self.bias.name.clone(), &shape, &vec![0.0; shape.iter().product()])?;
        Ok(Linear { bias, ..self })
    }

    pub fn forward(&self, rt: &Runtime, x: &Tensor, grad: bool) -> Result<Tensor> {
        Ok(linear::linear(rt, x, self.weight.get(grad), Some(self.bias.get(grad)))?)
    }
}
