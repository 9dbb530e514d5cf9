//! LoRA (low-rank adaptation) as RSRefSeg 2 fine-tunes its encoders with PEFT.
//!
//! A LoRA-capable layer is a plain layer that may carry an adapter: `y = base(x) + (α/r)·B(A(x))`
//! with `A: in → r` (kaiming-uniform, a = √5, as PEFT) and `B: r → out` (zeros, so attaching changes
//! nothing until B is trained). Dropout is 0 in every RSRefSeg 2 config and is not modelled.
//! With an adapter attached the base weights are frozen; [`LoraModule::merge_lora`] folds
//! `W ← W + (α/r)·B·A` into the base and drops the adapter (zero inference overhead).
//!
//! Canonical names (see [`crate::checkpoint`]): base `X.weight`, `X.bias`; adapter
//! `X.lora_A.weight` (r, in[, 1, 1]) and `X.lora_B.weight` (out, r[, 1, 1]), i.e. PEFT's names
//! without `base_layer.` and the adapter name `.default`. A plain checkpoint (`X.weight`) loads into
//! a layer without adapter; a PEFT file loads unmerged into a layer with one through
//! [`Transform::PeftToAdapters`](crate::checkpoint::keys::Transform::PeftToAdapters), or merged
//! into a plain layer through `Transform::MergePeftLora`.
//!
//! Which layers get an adapter is decided by [`LoraConfig::targets`], regexes full-matched against
//! canonical layer paths (PEFT's `target_modules`), through [`LoraModule::attach_lora`] on the
//! module the paths are relative to ([`crate::encoders::Siglip`], [`crate::sam::Sam2`]).
//! The reference's trainable set (§5 of the reference notes) is then set with [`freeze_base`].

// Field names copy PEFT's (`lora_A`, `lora_B`) so that canonical names need no renaming; the
// derive expands them into local variables, hence the module-wide allow.
#![allow(non_snake_case)]

use crate::checkpoint::PathTracker;
use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use crate::nn::conv::{conv2d, conv2d_gemm};
use burn::tensor::Tensor;
use regex::RegexSet;
use rsrefseg_kernels::int8::Int8Weight;
use std::sync::Arc;

/// SigLIP layers RSRefSeg 2 adapts, relative to [`crate::encoders::Siglip`]: every attention
/// projection of both towers and the text `head` (t_sent). The vision MAP head's MLP is adapted
/// by the reference too (its output is unused); its `attention.out_proj` LoRA exists in release
/// files but is never applied by the reference, so that layer is not LoRA-capable here.
pub const SIGLIP_TARGETS: &[&str] = &[
    r"(text_model|vision_model)\.encoder\.layers\.\d+\.self_attn\.(q|k|v|out)_proj",
    r"text_model\.head",
    r"vision_model\.head\.mlp\.fc(1|2)",
];

/// SAM 2 layers RSRefSeg 2 adapts, relative to [`crate::sam::Sam2`]: qkv and output projection of
/// every Hiera block and the four 1×1 lateral convolutions of the FPN neck.
pub const SAM2_TARGETS: &[&str] =
    &[r"image_encoder\.trunk\.blocks\.\d+\.attn\.(qkv|proj)", r"image_encoder\.neck\.convs\.\d+\.conv"];

/// SigLIP parameters trained besides the adapters (the reference re-enables them explicitly).
pub const SIGLIP_TRAINABLE: &[&str] = &["logit_scale", "logit_bias"];

/// SAM 2 parameters trained besides the adapters: everything outside the image encoder except
/// the prompt encoder's random-Fourier matrix (a buffer in PyTorch, a parameter here).
pub const SAM2_TRAINABLE: &[&str] = &[
    r"sam_prompt_encoder\.(point_embeddings|not_a_point_embed|mask_downscaling|no_mask_embed)\..*",
    r"sam_mask_decoder\..*",
    "no_mem_embed",
];

#[derive(Config, Debug)]
pub struct LoraConfig {
    /// Rank r of the update `B·A` (16 in the released configs; the paper's ablation found 32 best
    /// for the Hiera-S trunk).
    #[config(default = 16)]
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (16 / 16 = 1 in the released configs).
    #[config(default = 16.0)]
    pub alpha: f64,
    /// Regexes full-matched against canonical layer paths relative to the module `attach_lora`
    /// is called on. Default: [`SIGLIP_TARGETS`] and [`SAM2_TARGETS`] (each matches nothing in
    /// the other model).
    #[config(default = "LoraConfig::reference_targets()")]
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// The released configs: r = 16, alpha = 16, SigLIP and SAM 2 targets.
    pub fn reference() -> Self {
        Self::new()
    }

    pub fn reference_targets() -> Vec<String> {
        SIGLIP_TARGETS.iter().chain(SAM2_TARGETS).map(|s| s.to_string()).collect()
    }

    /// `alpha / rank`.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    fn target_set(&self) -> RegexSet {
        RegexSet::new(self.targets.iter().map(|t| format!("^(?:{t})$")))
            .unwrap_or_else(|e| panic!("invalid LoRA target regex: {e}"))
    }
}

// ---- Layers ----------------------------------------------------------------------------------

/// A `Linear` that may carry a LoRA adapter. Built from a burn [`Linear`] (`.into()`); without
/// an adapter its forward is exactly `Linear::forward`.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// `[in, out]` (burn's `Linear` layout; canonical `(out, in)`).
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// `in → r`, no bias (canonical `(r, in)`).
    pub lora_A: Option<Linear<B>>,
    /// `r → out`, no bias (canonical `(out, r)`).
    pub lora_B: Option<Linear<B>>,
    /// `alpha / r`.
    #[module(skip)]
    pub scaling: f64,
    /// The weight and bias quantised for the CPU's int8 products ([`LoraLinear::quantize_int8`]);
    /// `None`: the f32 product. Set after loading, for inference only: loading a record or
    /// training changes `weight`, not this copy.
    #[module(skip)]
    pub int8: Option<Arc<Int8Weight>>,
}

impl<B: Backend> From<Linear<B>> for LoraLinear<B> {
    fn from(l: Linear<B>) -> Self {
        Self { weight: l.weight, bias: l.bias, lora_A: None, lora_B: None, scaling: 1.0, int8: None }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// # Shapes
    /// - x: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = match &self.int8 {
            Some(w) => match rsrefseg_kernels::int8::linear(x, w) {
                Ok(y) => return y,
                Err(x) => x,
            },
            None => x,
        };
        let base = super::linear::linear_rows(x.clone(), self.weight.val(), self.bias.as_ref().map(Param::val));
        match (&self.lora_A, &self.lora_B) {
            (Some(a), Some(b)) => base + b.forward(a.forward(x)).mul_scalar(self.scaling),
            _ => base,
        }
    }

    pub fn has_adapter(&self) -> bool {
        self.lora_A.is_some()
    }

    /// Attach a fresh adapter (A kaiming-uniform, B zeros) and freeze the base. A layer that
    /// already carries one keeps it.
    pub fn attach(self, rank: usize, alpha: f64, device: &B::Device) -> Self {
        if self.has_adapter() {
            return self;
        }
        let [d_in, d_out] = self.weight.shape().dims();
        Self {
            weight: self.weight.set_require_grad(false),
            bias: self.bias.map(|b| b.set_require_grad(false)),
            // burn's default Linear init is PEFT's: kaiming-uniform with a = √5, bound 1/√in.
            lora_A: Some(LinearConfig::new(d_in, rank).with_bias(false).init(device)),
            lora_B: Some(LinearConfig::new(rank, d_out).with_bias(false).with_initializer(Initializer::Zeros).init(device)),
            scaling: alpha / rank as f64,
            int8: None,
        }
    }

    /// Fold the adapter into the base weight (`W ← W + (α/r)·B·A`) and drop it. The merged weight
    /// keeps the base's (frozen) gradient setting.
    pub fn merge(self) -> Self {
        let (Some(a), Some(b)) = (self.lora_A, self.lora_B) else {
            return Self { lora_A: None, lora_B: None, ..self };
        };
        let scaling = self.scaling;
        // burn layout: [in, out] += [in, r]·[r, out]
        let delta = a.weight.val().matmul(b.weight.val()).mul_scalar(scaling);
        let weight = self.weight.map(|w| {
            let grad = w.is_require_grad();
            (w + delta).detach().set_require_grad(grad)
        });
        Self { weight, bias: self.bias, lora_A: None, lora_B: None, scaling, int8: None }
    }

    /// The layer with its adapter merged and its weight quantised for the CPU's int8 products
    /// (per output column; rows of the input are quantised as they arrive). Only on the backend
    /// the CPU kernels serve (Flex, inference); elsewhere the layer stays f32.
    pub fn quantize_int8(self) -> Self {
        let layer = self.merge();
        let int8 = Int8Weight::from_linear(&layer.weight.val(), layer.bias.as_ref().map(Param::val).as_ref());
        Self { int8: int8.map(Arc::new), ..layer }
    }
}

/// A 1×1 `Conv2d` (stride 1, no padding) that may carry a LoRA adapter: A = conv `in → r` 1×1,
/// B = conv `r → out` 1×1 (PEFT's Conv2d LoRA for a 1×1 kernel). Built from a burn [`Conv2d`]
/// (`.into()`); without an adapter its forward equals `Conv2d::forward`.
#[derive(Module, Debug)]
pub struct LoraConv2d<B: Backend> {
    /// `[out, in, 1, 1]`.
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// `[r, in, 1, 1]`, no bias.
    pub lora_A: Option<Conv2d<B>>,
    /// `[out, r, 1, 1]`, no bias.
    pub lora_B: Option<Conv2d<B>>,
    /// `alpha / r`.
    #[module(skip)]
    pub scaling: f64,
}

impl<B: Backend> From<Conv2d<B>> for LoraConv2d<B> {
    fn from(c: Conv2d<B>) -> Self {
        let [_, _, kh, kw] = c.weight.shape().dims();
        assert!(
            [kh, kw] == [1, 1] && c.stride == [1, 1] && c.dilation == [1, 1] && c.groups == 1,
            "LoraConv2d supports plain 1×1 convolutions only (kernel {kh}×{kw}, stride {:?}, groups {})",
            c.stride,
            c.groups
        );
        Self { weight: c.weight, bias: c.bias, lora_A: None, lora_B: None, scaling: 1.0 }
    }
}

impl<B: Backend> LoraConv2d<B> {
    /// # Shapes
    /// - x: `[b, in, h, w]` → `[b, out, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let base = conv2d_gemm(x.clone(), self.weight.val(), self.bias.as_ref().map(Param::val), [1, 1], [0; 4]);
        match (&self.lora_A, &self.lora_B) {
            (Some(a), Some(b)) => base + conv2d(b, conv2d(a, x)).mul_scalar(self.scaling),
            _ => base,
        }
    }

    pub fn has_adapter(&self) -> bool {
        self.lora_A.is_some()
    }

    /// Attach a fresh adapter (A kaiming-uniform, B zeros) and freeze the base. A layer that
    /// already carries one keeps it.
    pub fn attach(self, rank: usize, alpha: f64, device: &B::Device) -> Self {
        if self.has_adapter() {
            return self;
        }
        let [d_out, d_in, _, _] = self.weight.shape().dims();
        Self {
            weight: self.weight.set_require_grad(false),
            bias: self.bias.map(|b| b.set_require_grad(false)),
            // burn's default Conv2d init is PEFT's kaiming-uniform (a = √5) over fan_in = in.
            lora_A: Some(Conv2dConfig::new([d_in, rank], [1, 1]).with_bias(false).init(device)),
            lora_B: Some(
                Conv2dConfig::new([rank, d_out], [1, 1])
                    .with_bias(false)
                    .with_initializer(Initializer::Zeros)
                    .init(device),
            ),
            scaling: alpha / rank as f64,
        }
    }

    /// Fold the adapter into the base weight (`W ← W + (α/r)·B·A`) and drop it.
    pub fn merge(self) -> Self {
        let (Some(a), Some(b)) = (self.lora_A, self.lora_B) else {
            return Self { lora_A: None, lora_B: None, ..self };
        };
        let scaling = self.scaling;
        let [d_out, d_in, _, _] = self.weight.shape().dims();
        let r = a.weight.shape().dims::<4>()[0];
        // (out, r)·(r, in) → (out, in, 1, 1)
        let delta = b
            .weight
            .val()
            .reshape([d_out, r])
            .matmul(a.weight.val().reshape([r, d_in]))
            .mul_scalar(scaling)
            .reshape([d_out, d_in, 1, 1]);
        let weight = self.weight.map(|w| {
            let grad = w.is_require_grad();
            (w + delta).detach().set_require_grad(grad)
        });
        Self { weight, bias: self.bias, lora_A: None, lora_B: None, scaling }
    }
}

// ---- Walking the module tree -----------------------------------------------------------------

/// What to do with each LoRA-capable layer found under a module (`path` = canonical path).
pub trait LoraMapper<B: Backend> {
    fn map_linear(&mut self, path: &str, layer: LoraLinear<B>) -> LoraLinear<B>;
    fn map_conv(&mut self, path: &str, layer: LoraConv2d<B>) -> LoraConv2d<B>;
}

/// A module that contains LoRA-capable layers. burn's `ModuleMapper` only rewrites parameters,
/// so adding adapters (new sub-modules) walks the tree through this trait instead; the
/// implementations below list, per module, the fields that lead to such layers.
pub trait LoraModule<B: Backend>: Module<B> + Sized {
    /// Rebuild `self` with every LoRA-capable layer passed through `mapper`; `path` is the
    /// canonical path of `self` ("" at the root).
    fn map_lora(self, path: &str, mapper: &mut dyn LoraMapper<B>) -> Self;

    /// Attach adapters (rank and alpha of `config`) to every LoRA-capable layer whose canonical
    /// path, relative to `self`, full-matches one of `config.targets`; their base weights are
    /// frozen. Call it before loading a file with unmerged adapters, or after loading plain
    /// weights to start fine-tuning.
    fn attach_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        struct Attach<'a, B: Backend> {
            targets: RegexSet,
            rank: usize,
            alpha: f64,
            device: &'a B::Device,
        }
        impl<B: Backend> LoraMapper<B> for Attach<'_, B> {
            fn map_linear(&mut self, path: &str, layer: LoraLinear<B>) -> LoraLinear<B> {
                if self.targets.is_match(path) {
                    layer.attach(self.rank, self.alpha, self.device)
                } else {
                    layer
                }
            }
            fn map_conv(&mut self, path: &str, layer: LoraConv2d<B>) -> LoraConv2d<B> {
                if self.targets.is_match(path) {
                    layer.attach(self.rank, self.alpha, self.device)
                } else {
                    layer
                }
            }
        }
        let mut attach = Attach { targets: config.target_set(), rank: config.rank, alpha: config.alpha, device };
        self.map_lora("", &mut attach)
    }

    /// Merge every adapter into its base layer and drop it (for inference and export).
    fn merge_lora(self) -> Self {
        struct Merge;
        impl<B: Backend> LoraMapper<B> for Merge {
            fn map_linear(&mut self, _: &str, layer: LoraLinear<B>) -> LoraLinear<B> {
                layer.merge()
            }
            fn map_conv(&mut self, _: &str, layer: LoraConv2d<B>) -> LoraConv2d<B> {
                layer.merge()
            }
        }
        self.map_lora("", &mut Merge)
    }

    /// Quantise every `Linear` for the CPU's int8 products ([`LoraLinear::quantize_int8`];
    /// adapters are merged first). For inference, after loading.
    fn quantize_int8(self) -> Self {
        struct Quantize;
        impl<B: Backend> LoraMapper<B> for Quantize {
            fn map_linear(&mut self, _: &str, layer: LoraLinear<B>) -> LoraLinear<B> {
                layer.quantize_int8()
            }
            fn map_conv(&mut self, _: &str, layer: LoraConv2d<B>) -> LoraConv2d<B> {
                layer
            }
        }
        self.map_lora("", &mut Quantize)
    }

    /// Canonical paths of the layers that carry an adapter.
    fn lora_layers(&self) -> Vec<String> {
        struct List(Vec<String>);
        impl<B: Backend> LoraMapper<B> for List {
            fn map_linear(&mut self, path: &str, layer: LoraLinear<B>) -> LoraLinear<B> {
                if layer.has_adapter() {
                    self.0.push(path.to_string());
                }
                layer
            }
            fn map_conv(&mut self, path: &str, layer: LoraConv2d<B>) -> LoraConv2d<B> {
                if layer.has_adapter() {
                    self.0.push(path.to_string());
                }
                layer
            }
        }
        let mut list = List(Vec::new());
        // Cloning a module shares its tensors; the walk only reads them.
        let _ = self.clone().map_lora("", &mut list);
        list.0
    }
}

/// Canonical path of field `name` under `path`.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

impl<B: Backend> LoraModule<B> for LoraLinear<B> {
    fn map_lora(self, path: &str, mapper: &mut dyn LoraMapper<B>) -> Self {
        mapper.map_linear(path, self)
    }
}

impl<B: Backend> LoraModule<B> for LoraConv2d<B> {
    fn map_lora(self, path: &str, mapper: &mut dyn LoraMapper<B>) -> Self {
        mapper.map_conv(path, self)
    }
}

impl<B: Backend, M: LoraModule<B>> LoraModule<B> for Vec<M> {
    fn map_lora(self, path: &str, mapper: &mut dyn LoraMapper<B>) -> Self {
        self.into_iter().enumerate().map(|(i, m)| m.map_lora(&child(path, &i.to_string()), mapper)).collect()
    }
}

impl<B: Backend, M: LoraModule<B>> LoraModule<B> for Option<M> {
    fn map_lora(self, path: &str, mapper: &mut dyn LoraMapper<B>) -> Self {
        self.map(|m| m.map_lora(path, mapper))
    }
}

/// `lora_tree!(Type { field, … })`: `Type`'s LoRA-capable layers are found under these fields.
/// Each model module declares its own tree next to its types (this module knows no model type).
macro_rules! lora_tree {
    ($($ty:ty { $($field:ident),* $(,)? })*) => {$(
        impl<B: burn::tensor::backend::Backend> $crate::nn::lora::LoraModule<B> for $ty {
            fn map_lora(mut self, path: &str, mapper: &mut dyn $crate::nn::lora::LoraMapper<B>) -> Self {
                $(self.$field = $crate::nn::lora::LoraModule::map_lora(
                    self.$field,
                    &$crate::nn::lora::child(path, stringify!($field)),
                    mapper,
                );)*
                self
            }
        }
    )*};
}
pub(crate) use lora_tree;

// ---- Trainable set ---------------------------------------------------------------------------

/// Whether a canonical parameter name belongs to a LoRA adapter.
pub fn is_lora_parameter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Set the trainable set of `module`: LoRA A/B and the parameters whose canonical name
/// full-matches one of `keep` are trainable, everything else is frozen (no gradient). E.g. the
/// reference's set is `freeze_base(siglip, SIGLIP_TRAINABLE)` and `freeze_base(sam, SAM2_TRAINABLE)`
/// (the prompter and the loss-head scalars stay fully trainable). Only meaningful on an
/// autodiff backend; the gradient setting survives [`crate::checkpoint::load_module`].
pub fn freeze_base<B: Backend, M: Module<B>>(module: M, keep: &[&str]) -> M {
    struct Freeze {
        tracker: PathTracker,
        keep: RegexSet,
    }
    impl<B: Backend> ModuleMapper<B> for Freeze {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.tracker.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (name, _) = self.tracker.current();
            let trainable = is_lora_parameter(&name) || self.keep.is_match(&name);
            param.set_require_grad(trainable)
        }
    }
    let keep = RegexSet::new(keep.iter().map(|k| format!("^(?:{k})$")))
        .unwrap_or_else(|e| panic!("invalid trainable-parameter regex: {e}"));
    module.map(&mut Freeze { tracker: PathTracker::default(), keep })
}

/// Canonical names of the parameters that require a gradient (empty on a backend without
/// autodiff).
pub fn trainable_parameter_names<B: Backend, M: Module<B>>(module: &M) -> Vec<String> {
    crate::checkpoint::param_specs(module).into_iter().filter(|p| p.trainable).map(|p| p.name).collect()
}
