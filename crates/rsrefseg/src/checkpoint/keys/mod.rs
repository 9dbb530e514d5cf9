//! Declarative key tables, one per checkpoint format.
//!
//! A table turns the keys of a file into canonical parameter names (see [`super`]): first its
//! [`Transform`]s (anything that is not a rename), then its ordered regex `renames` (each applied
//! to every key in turn, like Hugging Face's conversion scripts), while keys matching `ignored`
//! (tested on the key *before* renaming) are dropped on purpose. Tables hold no logic.

pub mod sam2_hf;
pub mod sam2_original;

pub mod prompter;
pub mod rsrefseg_release;
pub mod siglip_hf;

use super::{HostTensor, LoadError, TensorMap};
use regex::Regex;

/// Non-rename rewrites a format needs.
#[derive(Clone, Copy, Debug)]
pub enum Transform {
    /// PEFT LoRA: for every `P.base_layer.weight` with `P.lora_A.default.weight` (r, in[,1,1]) and
    /// `P.lora_B.default.weight` (out, r[,1,1]), `P.weight = base + scale · B·A`; `P.base_layer.bias`
    /// becomes `P.bias`. Also works for 1×1 convolutions.
    MergePeftLora,
    /// PEFT LoRA kept unmerged, for a model whose targeted layers carry adapters
    /// ([`crate::nn::lora`]): `P.base_layer.{weight,bias}` → `P.{weight,bias}`,
    /// `P.lora_{A,B}.default.weight` → `P.lora_{A,B}.weight`.
    PeftToAdapters,
    /// Strip a literal prefix from every key that has it (e.g. PEFT's `base_model.model.`).
    StripInfix(&'static str),
    /// Split the stacked `(n, d)` tensor `from` into `n` tensors `(1, d)` named `to` with `{}`
    /// replaced by the row index (HF SAM 2 stores its point embeddings this way).
    UnstackRows { from: &'static str, to: &'static str },
    /// `alias` is a tied copy of `name`, saved once or twice: it is dropped when `name` is
    /// present and renamed to `name` otherwise.
    TiedCopy { name: &'static str, alias: &'static str },
    /// Drop keys matching a regex (tensors present in a file that the reference never applies).
    Drop(&'static str),
    /// 0-d tensors whose key matches the regex become shape `[1]` (PyTorch scalar parameters such
    /// as `decode_head.logit_scale2`; burn parameters have at least one dimension).
    ScalarToVector(&'static str),
}

/// What loading does with PEFT LoRA tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoraHandling {
    /// Merged into the base weights, `W + scale · B·A` with `scale = alpha / r` of the
    /// checkpoint (the model configuration's `lora`).
    Merge { scale: f32 },
    /// Kept as adapters (`X.lora_A.weight`, …).
    Keep,
}

impl LoraHandling {
    /// Merging with the released settings (r = 16, alpha = 16).
    pub const RELEASED: LoraHandling = LoraHandling::Merge { scale: 1.0 };

    fn scale(self) -> f32 {
        match self {
            LoraHandling::Merge { scale } => scale,
            LoraHandling::Keep => 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct KeyTable {
    /// Human-readable format name for error messages.
    pub format: &'static str,
    pub transforms: &'static [Transform],
    /// Ordered `(regex, replacement)` pairs; replacement syntax of the `regex` crate (`$1`).
    pub renames: &'static [(&'static str, &'static str)],
    /// Keys (regex, matched against the whole file key) dropped on purpose.
    pub ignored: &'static [&'static str],
}

impl KeyTable {
    /// Apply the table. Returns the canonical map and the list of keys that were ignored.
    pub fn apply(&self, tensors: TensorMap) -> Result<(TensorMap, Vec<String>), LoadError> {
        self.apply_with(tensors, LoraHandling::RELEASED)
    }

    /// [`Self::apply`], choosing what happens to PEFT LoRA tensors: merged into the base weights
    /// (inference) or kept as adapters (`X.lora_A.weight`, …) for a model with LoRA attached
    /// (fine-tuning from a released checkpoint).
    pub fn apply_with(&self, tensors: TensorMap, lora: LoraHandling) -> Result<(TensorMap, Vec<String>), LoadError> {
        let mut tensors = tensors;
        for t in self.transforms {
            tensors = match (t, lora) {
                (Transform::MergePeftLora, LoraHandling::Keep) => Transform::PeftToAdapters.apply(tensors, self.format)?,
                (Transform::MergePeftLora, LoraHandling::Merge { scale }) => merge_peft_lora(tensors, scale, self.format)?,
                _ => t.apply(tensors, self.format)?,
            };
        }
        let ignored: Vec<Regex> = self
            .ignored
            .iter()
            .map(|p| Regex::new(&format!("^(?:{p})$")).expect("valid ignore regex"))
            .collect();
        let renames: Vec<(Regex, &str)> = self
            .renames
            .iter()
            .map(|(p, r)| (Regex::new(p).expect("valid rename regex"), *r))
            .collect();
        let mut out = TensorMap::new();
        let mut dropped = Vec::new();
        for (key, value) in tensors {
            if ignored.iter().any(|re| re.is_match(&key)) {
                dropped.push(key);
                continue;
            }
            let mut name = key.clone();
            for (re, rep) in &renames {
                name = re.replace_all(&name, *rep).into_owned();
            }
            if out.insert(name.clone(), value).is_some() {
                return Err(LoadError::format(
                    self.format,
                    format!("two tensors map to the same parameter {name} (last from {key})"),
                ));
            }
        }
        Ok((out, dropped))
    }
}

/// The tensors whose key starts with `prefix`, with the prefix removed (one section of a file
/// that holds several models, such as the RSRefSeg 2 release).
pub fn section(tensors: &TensorMap, prefix: &str) -> TensorMap {
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v.clone())))
        .collect()
}

impl Transform {
    fn apply(&self, tensors: TensorMap, format: &str) -> Result<TensorMap, LoadError> {
        match *self {
            Transform::StripInfix(infix) => {
                let mut out = TensorMap::new();
                for (k, v) in tensors {
                    out.insert(k.replacen(infix, "", 1), v);
                }
                Ok(out)
            }
            Transform::MergePeftLora => merge_peft_lora(tensors, LoraHandling::RELEASED.scale(), format),
            Transform::PeftToAdapters => peft_to_adapters(tensors, format),
            Transform::Drop(pattern) => {
                let re = Regex::new(&format!("^(?:{pattern})$")).expect("valid drop regex");
                Ok(tensors.into_iter().filter(|(k, _)| !re.is_match(k)).collect())
            }
            Transform::UnstackRows { from, to } => unstack_rows(tensors, from, to, format),
            Transform::ScalarToVector(pattern) => {
                let re = Regex::new(&format!("^(?:{pattern})$")).expect("valid scalar regex");
                let mut tensors = tensors;
                for (k, v) in tensors.iter_mut() {
                    if v.shape.is_empty() && re.is_match(k) {
                        v.shape = vec![1];
                    }
                }
                Ok(tensors)
            }
            Transform::TiedCopy { name, alias } => {
                let mut tensors = tensors;
                if let Some(copy) = tensors.remove(alias) {
                    tensors.entry(name.to_string()).or_insert(copy);
                }
                Ok(tensors)
            }
        }
    }
}

fn unstack_rows(mut tensors: TensorMap, from: &str, to: &str, format: &str) -> Result<TensorMap, LoadError> {
    let Some(stacked) = tensors.remove(from) else { return Ok(tensors) };
    if stacked.shape.len() != 2 {
        return Err(LoadError::format(format, format!("{from}: expected a 2-D table, found shape {:?}", stacked.shape)));
    }
    let d = stacked.shape[1];
    for (i, row) in stacked.data.chunks_exact(d).enumerate() {
        tensors.insert(to.replace("{}", &i.to_string()), HostTensor::new(vec![1, d], row.to_vec()));
    }
    Ok(tensors)
}

fn merge_peft_lora(mut tensors: TensorMap, scale: f32, format: &str) -> Result<TensorMap, LoadError> {
    let bases: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".base_layer.weight").map(str::to_string))
        .collect();
    for p in bases {
        let base = tensors.remove(&format!("{p}.base_layer.weight")).unwrap();
        let a = tensors.remove(&format!("{p}.lora_A.default.weight"));
        let b = tensors.remove(&format!("{p}.lora_B.default.weight"));
        let merged = match (a, b) {
            (Some(a), Some(b)) => merge_one(&base, &a, &b, scale)
                .map_err(|m| LoadError::format(format, format!("LoRA of {p}: {m}")))?,
            (None, None) => base,
            _ => {
                return Err(LoadError::format(format, format!("{p}: lora_A and lora_B must both be present")))
            }
        };
        tensors.insert(format!("{p}.weight"), merged);
        if let Some(bias) = tensors.remove(&format!("{p}.base_layer.bias")) {
            tensors.insert(format!("{p}.bias"), bias);
        }
    }
    if let Some(k) = tensors.keys().find(|k| k.contains(".lora_A.") || k.contains(".lora_B.")) {
        return Err(LoadError::format(format, format!("{k}: LoRA tensor without a base_layer weight")));
    }
    Ok(tensors)
}

fn peft_to_adapters(tensors: TensorMap, format: &str) -> Result<TensorMap, LoadError> {
    let mut out = TensorMap::new();
    for (k, v) in tensors {
        let name = k
            .replace(".base_layer.", ".")
            .replace(".lora_A.default.", ".lora_A.")
            .replace(".lora_B.default.", ".lora_B.");
        if out.insert(name.clone(), v).is_some() {
            return Err(LoadError::format(format, format!("{k}: a tensor named {name} exists already")));
        }
    }
    Ok(out)
}

/// `W + scale · B·A` for Linear `(out,in)` or 1×1 conv `(out,in,1,1)` weights.
pub fn merge_one(w: &HostTensor, a: &HostTensor, b: &HostTensor, scale: f32) -> Result<HostTensor, String> {
    let out = w.shape[0];
    let inp = w.numel() / out;
    let r = a.shape[0];
    if a.numel() != r * inp || b.shape[0] != out || b.numel() != out * r {
        return Err(format!(
            "shapes do not fit: base {:?}, lora_A {:?}, lora_B {:?}",
            w.shape, a.shape, b.shape
        ));
    }
    let mut data = w.data.clone();
    for o in 0..out {
        for k in 0..r {
            let bv = b.data[o * r + k] * scale;
            if bv == 0.0 {
                continue;
            }
            let arow = &a.data[k * inp..(k + 1) * inp];
            let drow = &mut data[o * inp..(o + 1) * inp];
            for (d, av) in drow.iter_mut().zip(arow) {
                *d += bv * av;
            }
        }
    }
    Ok(HostTensor::new(w.shape.clone(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_merge_adds_scaled_product() {
        let w = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let a = HostTensor::new(vec![1, 3], vec![1., 0., -1.]);
        let b = HostTensor::new(vec![2, 1], vec![2., 0.5]);
        let m = merge_one(&w, &a, &b, 0.5).unwrap();
        assert_eq!(m.data, vec![2., 2., 2., 4.25, 5., 5.75]);
    }

    #[test]
    fn table_renames_ignores_and_detects_collisions() {
        const T: KeyTable = KeyTable {
            format: "test",
            transforms: &[Transform::StripInfix("base_model.model.")],
            renames: &[(r"\.norm(\d)", ".layer_norm$1"), (r"^trunk\.", "")],
            ignored: &[r"memory_.*"],
        };
        let mut m = TensorMap::new();
        let t = HostTensor::new(vec![1], vec![0.]);
        m.insert("base_model.model.trunk.blocks.0.norm1.weight".into(), t.clone());
        m.insert("memory_encoder.x".into(), t.clone());
        let (out, dropped) = T.apply(m).unwrap();
        assert!(out.contains_key("blocks.0.layer_norm1.weight"));
        assert_eq!(dropped, vec!["memory_encoder.x".to_string()]);
        let mut m = TensorMap::new();
        m.insert("trunk.a".into(), t.clone());
        m.insert("a".into(), t);
        assert!(T.apply(m).is_err());
    }

    /// A checkpoint trained with alpha / r ≠ 1 (here r = 8, alpha = 32: scale 4) merges with
    /// its own scale; before, every PEFT file was merged with the released scale 1.
    #[test]
    fn peft_adapters_merge_with_the_configured_scale() {
        const T: KeyTable = KeyTable {
            format: "test",
            transforms: &[Transform::MergePeftLora, Transform::StripInfix("base_model.model.")],
            renames: &[],
            ignored: &[],
        };
        let mut m = TensorMap::new();
        m.insert("base_model.model.q.base_layer.weight".into(), HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        m.insert("base_model.model.q.lora_A.default.weight".into(), HostTensor::new(vec![1, 3], vec![1., 0., -1.]));
        m.insert("base_model.model.q.lora_B.default.weight".into(), HostTensor::new(vec![2, 1], vec![2., 0.5]));
        let settings = crate::config::LoraSettings { r: 8, alpha: 32.0 };
        let (out, _) = T.apply_with(m.clone(), LoraHandling::Merge { scale: settings.scale() as f32 }).unwrap();
        // W + 4 · B·A, B·A = [[2, 0, -2], [0.5, 0, -0.5]].
        assert_eq!(out["q.weight"].data, vec![9., 2., -5., 6., 5., 4.]);
        let (released, _) = T.apply(m).unwrap();
        assert_eq!(released["q.weight"].data, vec![3., 2., 1., 4.5, 5., 5.5]);
    }
}
