//! Gradient clipping by the global L2 norm over all parameters (PyTorch `clip_grad_norm_`,
//! DeepSpeed `gradient_clipping`). burn's built-in clipping works per parameter, which is a
//! different rule.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct Ids(Vec<(ParamId, usize)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

fn squared_norm<B: AutodiffBackend>(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<f64> {
    macro_rules! rank {
        ($d:literal) => {
            grads
                .get::<B::InnerBackend, $d>(id)
                .map(|g| { let s: f32 = g.powi_scalar(2).sum().into_scalar().elem(); s as f64 })
        };
    }
    match rank {
        1 => rank!(1),
        2 => rank!(2),
        3 => rank!(3),
        4 => rank!(4),
        5 => rank!(5),
        _ => panic!("parameters of rank {rank} are not supported by gradient clipping"),
    }
}

fn scale<B: AutodiffBackend>(grads: &mut GradientsParams, id: ParamId, rank: usize, factor: f64) {
    macro_rules! rank {
        ($d:literal) => {
            if let Some(g) = grads.remove::<B::InnerBackend, $d>(id) {
                grads.register::<B::InnerBackend, $d>(id, g * factor);
            }
        };
    }
    match rank {
        1 => rank!(1),
        2 => rank!(2),
        3 => rank!(3),
        4 => rank!(4),
        5 => rank!(5),
        _ => unreachable!(),
    }
}

/// Scale all gradients so their global norm is at most `max_norm`; returns the norm before
/// clipping (logged, and checked for NaN/inf by the trainer).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    let total: f64 = ids.0.iter().filter_map(|&(id, r)| squared_norm::<B>(grads, id, r)).sum::<f64>().sqrt();
    // torch: clip_coef = max_norm / (total + 1e-6), applied only when < 1.
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for &(id, r) in &ids.0 {
            scale::<B>(grads, id, r, coef);
        }
    }
    total
}
