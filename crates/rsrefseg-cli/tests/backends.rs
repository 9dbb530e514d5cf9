//! `--backend`, `--precision` and `--devices` of `train`, `eval` and `segment` on a CPU-only
//! build: clear errors for what is not built or not supported, and data-parallel training over
//! two CPU "devices" equal to one device accumulating the same shards.

use burn::backend::NdArray;
use rsrefseg::checkpoint::module_tensors;
use rsrefseg::config::RsRefSegConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rsrefseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsrefseg")).args(args).output().expect("the rsrefseg binary runs")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command fails and its stderr contains every one of `needles`.
fn fails_with(out: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure, got success:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from the error:\n{err}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The synthetic grammar's word-level tokenizer (the nano model's); returns the vocabulary size.
fn write_tokenizer(path: &Path) -> usize {
    std::fs::write(path, rsrefseg::synth::tokenizer::tokenizer_json()).unwrap();
    rsrefseg::synth::tokenizer::vocab_size()
}

/// `reference-dev` with a text tower sized for the vocabulary; returns the configuration.
fn write_model_config(path: &Path, vocab: usize) -> RsRefSegConfig {
    let mut c = RsRefSegConfig::reference_dev();
    c.siglip.text_config.vocab_size = vocab.max(c.siglip.text_config.vocab_size);
    c.siglip.text_config.max_position_embeddings = 32;
    c.tokenizer.max_length = 32;
    std::fs::write(path, c.to_json()).unwrap();
    c
}

/// Random initial weights in the crate's own names (what `--init` reads), so that two runs
/// start from the same weights whatever order they would draw them in.
fn write_init_weights(path: &Path, config: &RsRefSegConfig) {
    use safetensors::tensor::{Dtype, TensorView};
    let device = Default::default();
    <NdArray as burn::tensor::backend::Backend>::seed(&device, 1);
    let model = config.init::<NdArray>(&device).unwrap();
    let tensors = module_tensors::<NdArray, _>(&model);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.shape, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn step_lines(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .collect()
}

#[test]
fn backends_precisions_and_devices() {
    let dir = scratch("backends");
    let data = dir.join("data");
    let d = |p: &Path| p.to_str().unwrap().to_string();
    // 8 scenes of 64 px, 2 expressions each: 8 training samples (validation not needed here).
    ok(rsrefseg(&[
        "synth", "--out", &d(&data), "--seed", "0", "--n", "8", "--size", "64", "--expressions", "2",
        "--val-fraction", "0.25", "--test-fraction", "0.25",
    ]));
    let tok = dir.join("tokenizer.json");
    let vocab = write_tokenizer(&tok);
    let model = dir.join("model.json");
    let config = write_model_config(&model, vocab);
    let init = dir.join("init.safetensors");
    write_init_weights(&init, &config);

    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train".to_string(), "--config".into(), d(&model), "--data".into(), d(&data), "--tokenizer".into(), d(&tok),
            "--out".into(), d(out), "--epochs".into(), "1".into(), "--lr".into(), "1e-3".into(), "--warmup-epochs".into(),
            "0".into(), "--seed".into(), "3".into(), "--threads".into(), "2".into(), "--init".into(), d(&init),
            "--checkpoint-every".into(), "0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        rsrefseg(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Not built in: the error names the feature to build with.
    #[cfg(not(feature = "cuda"))]
    fails_with(train(&dir.join("run_cuda"), &["--backend", "cuda"]), &["--features cuda"]);
    #[cfg(not(feature = "wgpu"))]
    fails_with(train(&dir.join("run_wgpu"), &["--backend", "wgpu"]), &["--features wgpu"]);
    // The CPU backend computes in f32 only.
    fails_with(train(&dir.join("run_bf16"), &["--precision", "bf16"]), &["--precision bf16", "cpu"]);
    // A batch that does not split over the devices.
    fails_with(train(&dir.join("run_odd"), &["--devices", "0,1,2", "--batch-size", "4"]), &["--batch-size", "--devices"]);
    let eval = rsrefseg(&[
        "eval", "--config", &d(&model), "--weights", &d(&init), "--data", &d(&data), "--tokenizer", &d(&tok),
        "--precision", "f16",
    ]);
    fails_with(eval, &["--precision f16", "cpu"]);
    // int8 is an inference precision of the cpu backend.
    fails_with(train(&dir.join("run_int8"), &["--precision", "int8"]), &["--precision int8", "inference"]);
    let eval = rsrefseg(&[
        "eval", "--config", &d(&model), "--weights", &d(&init), "--data", &d(&data), "--tokenizer", &d(&tok),
        "--backend", "ndarray", "--precision", "int8",
    ]);
    fails_with(eval, &["--precision int8", "ndarray"]);
    #[cfg(not(feature = "cuda"))]
    {
        let seg = rsrefseg(&[
            "segment", "--config", &d(&model), "--weights", &d(&init), "--image", "x.png", "--token-ids", "2,5", "--backend",
            "cuda",
        ]);
        fails_with(seg, &["--features cuda"]);
    }

    // Two "devices" with 2 samples each per batch vs one device accumulating two batches of 2:
    // the same samples per step, the same per-shard batches, the same losses and updates.
    let a = dir.join("run_accum");
    ok(train(&a, &["--batch-size", "2", "--grad-accum", "2"]));
    let b = dir.join("run_devices");
    ok(train(&b, &["--batch-size", "4", "--devices", "0,1"]));
    let (la, lb) = (step_lines(&a), step_lines(&b));
    assert_eq!(la.len(), 2, "{la:?}");
    assert_eq!(lb.len(), 2, "{lb:?}");
    for (x, y) in la.iter().zip(&lb) {
        for key in ["total", "bce", "dice", "ortho", "contrastive", "grad_norm"] {
            let (p, q) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "step {}: {key} {p} vs {q}\n{la:?}\n{lb:?}", x["step"]);
        }
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(b.join("train_config.json")).unwrap()).unwrap();
    assert_eq!(saved["devices"], json!([0, 1]));
    assert_eq!(saved["precision"], "f32");
    assert_eq!(saved["backend"], "cpu");
}
