//! Checkpoint loading: files → host tensors → (key table) → native parameter names → module.
//!
//! Every module in this crate names its fields after the reference checkpoints, so a module's
//! parameters have *canonical names*: the PyTorch state-dict name of the reference module tree,
//! in PyTorch layout. burn's own layers differ in two places that are handled here, once:
//! `LayerNorm`/`BatchNorm` call their affine parameters `gamma`/`beta` (canonical `weight`/`bias`),
//! and `Linear` (also [`crate::nn::lora::LoraLinear`] and its `lora_A`/`lora_B`, which are `Linear`s)
//! stores its weight as `[in, out]` (canonical `(out, in)`, transposed on load).
//!
//! A file format is described by a [`keys::KeyTable`] (ordered regex renames, ignored keys and
//! non-rename transforms) that turns file keys into canonical names. [`load_module`] then fills
//! every parameter exactly once and reports missing, unexpected and mis-shaped tensors by name.

pub mod keys;
pub mod safetensors_file;
pub mod torch_zip;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, ElementConversion, Tensor};
use std::collections::BTreeMap;
use std::fmt;

/// Checkpoints decode into host tensors (every dtype converted to f32 on read).
pub use crate::host::HostTensor;

/// Tensors by name, ordered for reproducible reports.
pub type TensorMap = BTreeMap<String, HostTensor>;

/// What went wrong when matching a file against a module.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters of the module with no tensor in the file: (name, expected shape).
    pub missing: Vec<(String, Vec<usize>)>,
    /// Tensors of the file that no parameter takes and no table ignores: (name, found shape).
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// (name, expected shape, found shape).
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Number of parameters filled from the file.
    pub loaded: usize,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} tensors loaded", self.loaded)?;
        if !self.missing.is_empty() {
            writeln!(f, "missing ({}):", self.missing.len())?;
            for (n, s) in &self.missing {
                writeln!(f, "  {n}: expected shape {s:?}")?;
            }
        }
        if !self.mis_shaped.is_empty() {
            writeln!(f, "mis-shaped ({}):", self.mis_shaped.len())?;
            for (n, e, s) in &self.mis_shaped {
                writeln!(f, "  {n}: expected shape {e:?}, found {s:?}")?;
            }
        }
        if !self.unexpected.is_empty() {
            writeln!(f, "unexpected ({}):", self.unexpected.len())?;
            for (n, s) in &self.unexpected {
                writeln!(f, "  {n}: shape {s:?}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("weights do not match the model ({context}):\n{report}")]
    Mismatch { context: String, report: LoadReport },
    #[error("{0}")]
    Config(String),
}

impl LoadError {
    pub fn format(path: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError::Format { path: path.into(), message: message.into() }
    }
}

/// Options of [`load_module`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Keep the initial value of parameters the file lacks (reported, not an error). Never the
    /// default: a partially loaded model computes garbage silently.
    pub allow_partial: bool,
}

/// How a parameter's canonical form relates to burn's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Same,
    /// burn `Linear` weight `[in, out]` ↔ canonical `(out, in)`.
    Transposed,
}

/// Canonical (PyTorch) name and layout of the parameter at `path` whose field sits in a struct
/// of type `container` (burn's "Struct:Name").
fn canonical(path: &[String], container: &str) -> (String, Layout) {
    let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let last = parts.len() - 1;
    let mut layout = Layout::Same;
    match (container, parts[last]) {
        ("Struct:LayerNorm" | "Struct:BatchNorm", "gamma") => parts[last] = "weight",
        ("Struct:LayerNorm" | "Struct:BatchNorm", "beta") => parts[last] = "bias",
        ("Struct:Linear" | "Struct:LoraLinear", "weight") => layout = Layout::Transposed,
        _ => {}
    }
    (parts.join("."), layout)
}

fn canonical_shape(burn_shape: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Same => burn_shape.to_vec(),
        Layout::Transposed => vec![burn_shape[1], burn_shape[0]],
    }
}

/// The canonical name of the parameter a `ModuleVisitor`/`ModuleMapper` is at (fed from
/// `enter_module`/`exit_module`).
#[derive(Default)]
pub(crate) struct PathTracker {
    path: Vec<String>,
    containers: Vec<String>,
}

impl PathTracker {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        self.path.push(name.to_string());
        self.containers.push(container.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }
    pub(crate) fn current(&self) -> (String, Layout) {
        canonical(&self.path, self.containers.last().map(String::as_str).unwrap_or(""))
    }
}

/// A parameter of a module: canonical name and shape (PyTorch layout), plus what addresses it in
/// gradients and optimizer state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub id: burn::module::ParamId,
    /// The stored tensor is the transpose of the canonical one (burn `Linear` weights).
    pub transposed: bool,
    /// Requires a gradient (only ever true on an autodiff backend).
    pub trainable: bool,
}

struct SpecCollector {
    tracker: PathTracker,
    specs: Vec<ParamSpec>,
}

impl<B: Backend> ModuleVisitor<B> for SpecCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (name, layout) = self.tracker.current();
        let value = param.val();
        let shape = canonical_shape(&value.dims(), layout);
        self.specs.push(ParamSpec {
            name,
            shape,
            id: param.id,
            transposed: layout == Layout::Transposed,
            trainable: value.is_require_grad(),
        });
    }
}

/// The canonical name of the first parameter of `module` holding a NaN or an infinity (`None`
/// when every value is finite). Trainers check it before a checkpoint replaces a good one (a run
/// that diverged never overwrites the weights it could be recovered from); loaders check it so
/// that damaged weights are an error, not an empty mask.
pub fn first_non_finite<B: Backend, M: Module<B>>(module: &M) -> Option<String> {
    struct Find {
        tracker: PathTracker,
        found: Option<String>,
    }
    impl<B: Backend> ModuleVisitor<B> for Find {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.tracker.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.found.is_none() {
                let v = param.val();
                // A sum reduces without a parameter-sized temporary (the browser preset's token
                // table is 786 MB) and is NaN or infinite whenever an element is. Only then the
                // exact test: x − x is 0 for finite x and NaN for NaN and ±inf (a sum can also
                // overflow on finite values).
                let sum: f64 = v.clone().sum().into_scalar().elem();
                let bad = !sum.is_finite()
                    && (v.clone() - v).is_nan().any().into_data().to_vec::<bool>().is_ok_and(|b| b.first() == Some(&true));
                if bad {
                    self.found = Some(self.tracker.current().0);
                }
            }
        }
    }
    let mut f = Find { tracker: Default::default(), found: None };
    module.visit(&mut f);
    f.found
}

/// Every float parameter of `module` with its canonical name and PyTorch-layout shape.
pub fn param_specs<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamSpec> {
    let mut c = SpecCollector { tracker: PathTracker::default(), specs: Vec::new() };
    module.visit(&mut c);
    c.specs
}

/// Every float parameter of `module`, by canonical name, in PyTorch layout (for `inspect`,
/// exports and tests).
pub fn module_tensors<B: Backend, M: Module<B>>(module: &M) -> TensorMap {
    struct Collect {
        tracker: PathTracker,
        out: TensorMap,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.tracker.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, layout) = self.tracker.current();
            let t = HostTensor::from_tensor(param.val());
            let t = if layout == Layout::Transposed { t.transpose2() } else { t };
            self.out.insert(name, t);
        }
    }
    let mut c = Collect { tracker: PathTracker::default(), out: TensorMap::new() };
    module.visit(&mut c);
    c.out
}

/// Parameter ids by canonical name, and whether the stored tensor is the transpose of the
/// canonical one (gradients and optimizer state are addressed by id).
pub fn param_ids<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, (burn::module::ParamId, bool)> {
    param_specs(module).into_iter().map(|p| (p.name, (p.id, p.transposed))).collect()
}

/// The tensors a [`Loader`] reads: borrowed (copied into the module) or owned (moved into it
/// and freed one by one, so that loading needs about one copy of the weights, not two).
enum Source<'a> {
    Borrowed(&'a TensorMap),
    Owned(TensorMap),
}

impl Source<'_> {
    fn map(&self) -> &TensorMap {
        match self {
            Source::Borrowed(m) => m,
            Source::Owned(m) => m,
        }
    }
}

struct Loader<'a, B: Backend> {
    tracker: PathTracker,
    tensors: Source<'a>,
    device: B::Device,
    used: std::collections::BTreeSet<String>,
    report: LoadReport,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.tracker.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (name, layout) = self.tracker.current();
        // The shape without initialising the parameter: a module built by `init` is lazy, and
        // drawing its random values only to replace them cost seconds (and a copy of the
        // weights) for the browser configuration.
        let burn_shape = param.lazy_shape().to_vec();
        let expected = canonical_shape(&burn_shape, layout);
        let found_shape = self.tensors.map().get(&name).map(|t| t.shape.clone());
        let Some(found_shape) = found_shape else {
            self.report.missing.push((name, expected));
            return param;
        };
        self.used.insert(name.clone());
        if found_shape != expected {
            self.report.mis_shaped.push((name, expected, found_shape));
            return param;
        }
        let host = match &mut self.tensors {
            Source::Borrowed(m) => {
                let found = &m[&name];
                if layout == Layout::Transposed { found.transpose2() } else { found.clone() }
            }
            Source::Owned(m) => {
                let found = m.remove(&name).expect("present");
                if layout == Layout::Transposed { found.transpose2() } else { found }
            }
        };
        let t: Tensor<B, D> = host.into_tensor(&self.device);
        self.report.loaded += 1;
        // Keeps the parameter's id, device and gradient requirement.
        let id = param.id;
        param.transform_for_load(t, id)
    }
}

/// Fill `module`'s parameters from `tensors` (already in canonical names, see [`keys`]).
///
/// Fails with [`LoadError::Mismatch`] naming every missing, unexpected or mis-shaped tensor,
/// unless `allow_partial` is set, in which case only mis-shaped tensors fail.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    tensors: &TensorMap,
    device: &B::Device,
    options: LoadOptions,
    context: &str,
) -> Result<(M, LoadReport), LoadError> {
    load_from(module, Source::Borrowed(tensors), device, options, context)
}

/// [`load_module`] consuming `tensors`: each one is moved into the module and its host copy
/// freed as loading goes (the peak memory of loading large checkpoints is about one copy of
/// the weights).
pub fn load_module_owned<B: Backend, M: Module<B>>(
    module: M,
    tensors: TensorMap,
    device: &B::Device,
    options: LoadOptions,
    context: &str,
) -> Result<(M, LoadReport), LoadError> {
    load_from(module, Source::Owned(tensors), device, options, context)
}

fn load_from<B: Backend, M: Module<B>>(
    module: M,
    tensors: Source<'_>,
    device: &B::Device,
    options: LoadOptions,
    context: &str,
) -> Result<(M, LoadReport), LoadError> {
    let mut loader = Loader::<B> {
        tracker: PathTracker::default(),
        tensors,
        device: device.clone(),
        used: Default::default(),
        report: LoadReport::default(),
    };
    let module = module.map(&mut loader);
    let mut report = loader.report;
    report.unexpected = loader
        .tensors
        .map()
        .iter()
        .filter(|(k, _)| !loader.used.contains(*k))
        .map(|(k, v)| (k.clone(), v.shape.clone()))
        .collect();
    let fatal = !report.mis_shaped.is_empty()
        || (!options.allow_partial && (!report.missing.is_empty() || !report.unexpected.is_empty()));
    if fatal {
        return Err(LoadError::Mismatch { context: context.to_string(), report });
    }
    Ok((module, report))
}

/// Read a checkpoint file of any supported container (safetensors or a torch zip archive) into
/// host tensors, without applying any key table.
pub fn read_tensors(path: &std::path::Path) -> Result<TensorMap, LoadError> {
    let io = |source| LoadError::Io { path: path.display().to_string(), source };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(io)?;
        let mut head = Vec::with_capacity(16);
        (&file).take(16).read_to_end(&mut head).map_err(io)?;
        let is_torch = head.starts_with(b"PK\x03\x04") || torch_zip::is_legacy_torch_pickle(&head);
        // Anything else of at least a header's length is read as safetensors (which names the
        // problem if it is not one).
        if !is_torch && head.len() >= 8 {
            return safetensors_file::read_file(&file, &path.display().to_string());
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    read_tensors_from_bytes(&bytes, &path.display().to_string())
}

/// [`read_tensors`] on bytes already in memory (wasm, tests). The container is recognised from
/// its first bytes, not from the file name.
pub fn read_tensors_from_bytes(bytes: &[u8], origin: &str) -> Result<TensorMap, LoadError> {
    // Zip archives and legacy (non-zip) torch pickles both go to the torch reader, which reads
    // the former and explains how to convert the latter.
    if bytes.starts_with(b"PK\x03\x04") || torch_zip::is_legacy_torch_pickle(bytes) {
        torch_zip::read(bytes, origin)
    } else {
        safetensors_file::read(bytes, origin)
    }
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;
    use burn::module::{Module, Param};
    use burn::tensor::{backend::Backend, Tensor, TensorData};

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 1>>,
    }

    fn two(a: Vec<f32>, b: Vec<f32>) -> Two<burn::backend::NdArray<f32>> {
        let dev = Default::default();
        let p = |v: Vec<f32>| Param::from_tensor(Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &dev));
        Two { a: p(a), b: p(b) }
    }

    #[test]
    fn finds_nan_and_infinities_but_not_large_finite_weights() {
        assert_eq!(first_non_finite(&two(vec![1.0, 2.0], vec![3.0])), None);
        // The sum of these overflows to +inf although every weight is finite.
        assert_eq!(first_non_finite(&two(vec![3e38; 4], vec![0.0])), None);
        assert_eq!(first_non_finite(&two(vec![1.0], vec![0.0, f32::NAN])).as_deref(), Some("b"));
        assert_eq!(first_non_finite(&two(vec![f32::NEG_INFINITY, 1.0], vec![0.0])).as_deref(), Some("a"));
    }
}
