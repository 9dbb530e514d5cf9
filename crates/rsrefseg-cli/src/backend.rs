//! Backend, precision and devices of `train`, `eval` and `segment`.
//!
//! The command bodies are generic over a burn backend; [`dispatch`] picks the concrete type from
//! `--backend` / `--precision` and hands the devices to a [`BackendJob`]:
//!
//! | `--backend` | type (training; evaluation uses the inner backend) | `--precision` | cargo feature |
//! |---|---|---|---|
//! | `cpu` | `Autodiff<Flex>` (burn's Flex CPU backend) | f32 | (always) |
//! | `ndarray` | `Autodiff<NdArray<f32>>` (burn's NdArray CPU backend) | f32 | (always) |
//! | `cuda` | `Autodiff<Cuda<F>>`, `F` = `f32`, `bf16`, `f16` | f32, bf16, f16 | `cuda` |
//! | `wgpu` | `Autodiff<Wgpu<F>>`, `F` = `f32`, `f16` | f32, f16 | `wgpu` |
//!
//! A lower precision is the float element of the whole backend: weights, activations, gradients
//! and optimizer state are all in that type (no f32 master weights, no loss scaling).

use anyhow::{bail, Result};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The CPU: burn's Flex backend (the faster of burn's two CPU backends here, see README
    /// "Performance").
    Cpu,
    /// The CPU through burn's NdArray backend (the former default; same masks, slower).
    Ndarray,
    /// burn's wgpu backend (Vulkan, Metal, DirectX 12); needs `--features wgpu`.
    Wgpu,
    /// burn's CUDA backend (NVIDIA GPUs); needs `--features cuda`.
    Cuda,
}

/// The default CPU backend (`--backend cpu`), also used by the commands that always run on the
/// CPU (`export-web`, `inspect`).
pub type CpuBackend = burn_flex::Flex;

impl BackendKind {
    /// A CPU backend (one device; f32 only).
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Cpu | BackendKind::Ndarray)
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// bfloat16 as the float type of the whole model (cuda).
    Bf16,
    /// IEEE half precision as the float type of the whole model (cuda; wgpu where the adapter
    /// has `shader-f16`).
    F16,
    /// Int8 products in the `Linear` layers of the two encoders (weights quantised per output
    /// column at load, activations per row as they come), f32 everywhere else: the cpu backend,
    /// inference only (`segment`, `eval`, `eval-scene`, `bench --pipeline`). Fast where the CPU
    /// has AVX-512 VNNI or AVX2.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    /// The name, with the int8 micro-kernel this CPU runs (benchmark reports).
    pub fn label(self) -> String {
        match self {
            Precision::Int8 => format!("int8 ({} kernel)", rsrefseg_kernels::int8::kernel().name()),
            p => p.name().to_string(),
        }
    }

    /// Refuse precisions that only inference has (for the training commands).
    pub fn check_trainable(self) -> Result<()> {
        if self == Precision::Int8 {
            bail!("--precision int8 is for inference (segment, eval, eval-scene, bench): train in f32, bf16 or f16");
        }
        Ok(())
    }

    /// The loaded model at this precision: int8 quantises the encoders' `Linear` layers (on the
    /// cpu backend; `dispatch` refuses int8 elsewhere), the float precisions are the backend's.
    pub fn prepare<B: burn::tensor::backend::Backend>(self, model: rsrefseg::model::RsRefSeg<B>) -> rsrefseg::model::RsRefSeg<B> {
        match self {
            Precision::Int8 => {
                if !rsrefseg_kernels::int8::accelerated() {
                    tracing::warn!(
                        "this CPU has neither AVX-512 VNNI nor AVX2: --precision int8 runs on a portable loop, slower than f32"
                    );
                }
                model.quantize_int8()
            }
            _ => model,
        }
    }
}

/// `--backend` and `--precision` of the inference commands (`eval`, `segment`).
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Compute backend: cpu or ndarray (always built), wgpu or cuda (built with `--features wgpu|cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Float type of the model on GPU backends; on the cpu backend f32, or int8 products in
    /// the encoders.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
}

/// A command body generic over the backend. Training uses `B`; inference runs on
/// `B::InnerBackend` (the same backend without autodiff) and the first device.
pub trait BackendJob {
    type Output;
    /// `devices` is never empty; the first is the main device.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<Self::Output>;
}

/// Run `job` on the backend and precision asked for, on `devices` (indices; `None` = the
/// backend's default device). The cpu backend has one device: several indices make several
/// replicas on it, which runs the data-parallel code path (for tests), not faster.
pub fn dispatch<J: BackendJob>(
    backend: BackendKind,
    precision: Precision,
    devices: Option<&[usize]>,
    job: J,
) -> Result<J::Output> {
    if let Some(d) = devices {
        if d.is_empty() {
            bail!("--devices needs at least one device index");
        }
        if !backend.is_cpu() {
            let mut seen = d.to_vec();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != d.len() {
                bail!("--devices {d:?} names a device twice");
            }
        }
    }
    match backend {
        BackendKind::Cpu if precision == Precision::Int8 => {
            job.run::<burn::backend::Autodiff<CpuBackend>>(vec![burn_flex::FlexDevice; cpu_workers(devices)])
        }
        BackendKind::Cpu | BackendKind::Ndarray if precision != Precision::F32 => bail!(
            "--precision {} is not available on the {} backend: use --precision f32 (or int8 on --backend cpu), \
             or --backend cuda (f32, bf16, f16) / wgpu (f32, f16)",
            precision.name(),
            backend.name()
        ),
        // A CPU backend has one device: several indices make several workers on it.
        BackendKind::Cpu => job.run::<burn::backend::Autodiff<CpuBackend>>(vec![burn_flex::FlexDevice; cpu_workers(devices)]),
        BackendKind::Ndarray => job.run::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(vec![
            burn::backend::ndarray::NdArrayDevice::Cpu;
            cpu_workers(devices)
        ]),
        BackendKind::Cuda => cuda::dispatch(precision, devices, job),
        BackendKind::Wgpu => wgpu::dispatch(precision, devices, job),
    }
}

/// Workers on the one CPU device: one per `--devices` index, one without.
fn cpu_workers(devices: Option<&[usize]>) -> usize {
    devices.map_or(1, <[usize]>::len)
}

#[cfg(not(all(feature = "cuda", feature = "wgpu")))]
fn not_built(backend: BackendKind) -> anyhow::Error {
    anyhow::anyhow!(
        "this rsrefseg was built without the {0} backend: rebuild it with `cargo build --release -p rsrefseg-cli \
         --features {0}` (or use --backend cpu)",
        backend.name()
    )
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{BackendJob, Precision};
    use anyhow::Result;
    use burn::backend::cuda::CudaDevice;
    use burn::backend::{Autodiff, Cuda};
    use burn::tensor::{bf16, f16};

    pub fn dispatch<J: BackendJob>(precision: Precision, devices: Option<&[usize]>, job: J) -> Result<J::Output> {
        let devices: Vec<CudaDevice> = devices.unwrap_or(&[0]).iter().map(|&i| CudaDevice::new(i)).collect();
        match precision {
            Precision::F32 => job.run::<Autodiff<Cuda<f32>>>(devices),
            Precision::Bf16 => job.run::<Autodiff<Cuda<bf16>>>(devices),
            Precision::F16 => job.run::<Autodiff<Cuda<f16>>>(devices),
            Precision::Int8 => anyhow::bail!("--precision int8 runs on the cpu backend only (use --backend cpu)"),
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{not_built, BackendJob, BackendKind, Precision};
    use anyhow::Result;

    pub fn dispatch<J: BackendJob>(_: Precision, _: Option<&[usize]>, _: J) -> Result<J::Output> {
        Err(not_built(BackendKind::Cuda))
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::{BackendJob, Precision};
    use anyhow::{bail, Result};
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::{Autodiff, Wgpu};
    use burn::tensor::f16;

    /// No `--devices`: wgpu's default adapter (the high-power GPU, or what
    /// `CUBECL_WGPU_DEFAULT_DEVICE` names); indices are discrete GPUs in wgpu's enumeration.
    pub fn dispatch<J: BackendJob>(precision: Precision, devices: Option<&[usize]>, job: J) -> Result<J::Output> {
        let devices: Vec<WgpuDevice> = match devices {
            None => vec![WgpuDevice::DefaultDevice],
            Some(d) => d.iter().map(|&i| WgpuDevice::DiscreteGpu(i)).collect(),
        };
        match precision {
            Precision::F32 => job.run::<Autodiff<Wgpu<f32>>>(devices),
            Precision::F16 => job.run::<Autodiff<Wgpu<f16>>>(devices),
            Precision::Bf16 => bail!(
                "--precision bf16 is not available on the wgpu backend (WGSL has no bfloat16 arithmetic): use f16 \
                 or f32 there, or --backend cuda for bf16"
            ),
            Precision::Int8 => bail!("--precision int8 runs on the cpu backend only (use --backend cpu)"),
        }
    }
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use super::{not_built, BackendJob, BackendKind, Precision};
    use anyhow::Result;

    pub fn dispatch<J: BackendJob>(_: Precision, _: Option<&[usize]>, _: J) -> Result<J::Output> {
        Err(not_built(BackendKind::Wgpu))
    }
}
