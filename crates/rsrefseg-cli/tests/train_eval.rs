//! `rsrefseg train` and `rsrefseg eval` end to end on the CPU with a tiny synthetic dataset and
//! a `reference-dev`-sized model: run files, a stopped-and-resumed run equal to an
//! uninterrupted one, the non-finite-loss stop, and evaluation of the exported best model.

use rsrefseg::config::RsRefSegConfig;
use serde_json::Value;
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

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The synthetic grammar's word-level tokenizer (the nano model's: `<pad>`=0 `<eos>`=1 `<bos>`=2
/// `<unk>`=3, EOS appended as the released tokenizer does); returns the vocabulary size.
fn write_tokenizer(path: &Path) -> usize {
    std::fs::write(path, rsrefseg::synth::tokenizer::tokenizer_json()).unwrap();
    rsrefseg::synth::tokenizer::vocab_size()
}

/// `reference-dev` with a text tower sized for the vocabulary and the longest expressions.
fn write_model_config(path: &Path, vocab: usize) {
    let mut c = RsRefSegConfig::reference_dev();
    c.siglip.text_config.vocab_size = vocab.max(c.siglip.text_config.vocab_size);
    c.siglip.text_config.max_position_embeddings = 32;
    c.tokenizer.max_length = 32;
    std::fs::write(path, c.to_json()).unwrap();
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    lines(&run.join("metrics.jsonl"))
        .iter()
        .filter(|v| v["kind"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["total"].as_f64().unwrap()))
        .collect()
}

#[test]
fn train_resume_nan_stop_and_eval() {
    let dir = scratch("train_eval");
    let data = dir.join("data");
    let d = |p: &Path| p.to_str().unwrap().to_string();
    // 8 scenes of 64 px, 2 expressions each: 8 training, 4 validation, 4 test samples.
    ok(rsrefseg(&[
        "synth", "--out", &d(&data), "--seed", "0", "--n", "8", "--size", "64", "--expressions", "2",
        "--val-fraction", "0.25", "--test-fraction", "0.25",
    ]));
    let tok = dir.join("tokenizer.json");
    let vocab = write_tokenizer(&tok);
    let model = dir.join("model.json");
    write_model_config(&model, vocab);

    // 4 batches of 2 per epoch: step 4 ends epoch 0 (validation, best model); step 2 is mid-epoch.
    let train = |out: &Path, lr: &str, extra: &[&str]| {
        let mut args = vec![
            "train".to_string(), "--config".into(), d(&model), "--data".into(), d(&data), "--tokenizer".into(), d(&tok),
            "--out".into(), d(out), "--epochs".into(), "2".into(), "--batch-size".into(), "2".into(), "--lr".into(),
            lr.into(), "--warmup-epochs".into(), "0".into(), "--eval-every".into(), "1".into(), "--seed".into(), "3".into(), "--threads".into(), "2".into(),
        ];
        // An option given in `extra` replaces its default above.
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args.drain(i..i + 2);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        rsrefseg(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Uninterrupted: 4 steps.
    let a = dir.join("run_a");
    ok(train(&a, "1e-3", &["--max-steps", "4", "--checkpoint-every", "2"]));
    for f in ["config.json", "train_config.json", "tokenizer.json", "best.safetensors", "checkpoint/state.json", "plots/loss.svg", "plots/val_giou.svg"] {
        assert!(a.join(f).is_file(), "{f} missing in the run directory");
    }
    let log = lines(&a.join("metrics.jsonl"));
    let val: Vec<&Value> = log.iter().filter(|v| v["kind"] == "val").collect();
    assert_eq!(val.len(), 1, "one validation at the end of epoch 0: {log:?}");
    assert_eq!(val[0]["step"], 4);
    let train_config: Value = serde_json::from_str(&std::fs::read_to_string(a.join("train_config.json")).unwrap()).unwrap();
    assert_eq!(train_config["batch_size"], 2);
    RsRefSegConfig::from_json(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();

    // Stopped after 2 steps, resumed to 4: the same losses.
    let b = dir.join("run_b");
    ok(train(&b, "1e-3", &["--max-steps", "2", "--checkpoint-every", "2"]));
    assert_eq!(step_losses(&b).len(), 2);
    ok(train(&b, "1e-3", &["--max-steps", "4", "--checkpoint-every", "2", "--resume"]));
    let (la, lb) = (step_losses(&a), step_losses(&b));
    assert_eq!(la.len(), 4, "{la:?}");
    assert_eq!(la.iter().map(|x| x.0).collect::<Vec<_>>(), lb.iter().map(|x| x.0).collect::<Vec<_>>());
    for ((s, x), (_, y)) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-4, "step {s}: {x} vs {y}\n{la:?}\n{lb:?}");
    }

    // A damaged newest checkpoint (one flipped bit) is detected by its digest and the previous
    // one is used, with a warning; once the run goes on, checkpoints are written again.
    let model4 = b.join("checkpoint/model-4.bin");
    let mut bytes = std::fs::read(&model4).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&model4, bytes).unwrap();
    let out = ok(train(&b, "1e-3", &["--max-steps", "4", "--checkpoint-every", "2", "--resume"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("older checkpoint") && err.contains("model-4.bin is damaged"), "{err}");
    assert!(b.join("checkpoint/state-4.json").is_file() && b.join("checkpoint/state-2.json").is_file());

    // Options that cannot train are refused before anything is written.
    for (lr, extra, needle) in [
        ("nan", vec![], "--lr"),
        ("-1", vec![], "'-1'"),
        ("0", vec![], "--lr"),
        ("1e-3", vec!["--warmup-epochs", "nan"], "--warmup-epochs"),
        ("1e-3", vec!["--batch-size", "1000"], "larger than the"),
    ] {
        let run = dir.join("run_refused");
        let out = train(&run, lr, &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "--lr {lr} {extra:?}: {err}");
        assert!(!run.join("checkpoint").exists());
    }

    // A resumed run must keep the options that fix the batch sequence; a fresh run does not
    // overwrite an existing one.
    let out = train(&b, "1e-2", &["--max-steps", "4", "--resume"]);
    assert!(!out.status.success());
    let out = train(&b, "1e-3", &["--max-steps", "4"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // A diverging run stops with the error and a non-zero exit, keeping its last checkpoint.
    let n = dir.join("run_nan");
    let out = train(&n, "1e30", &["--checkpoint-every", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the loss became"), "{err}");
    assert!(n.join("checkpoint/state.json").is_file());

    // Evaluation of the exported best model on the test split.
    let json_path = dir.join("eval.json");
    let out = ok(rsrefseg(&[
        "eval", "--config", &d(&a.join("config.json")), "--weights", &d(&a.join("best.safetensors")), "--data", &d(&data),
        "--split", "test", "--json", &d(&json_path), "--threads", "2", "--clicks", "2",
    ]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("gIoU") && table.contains("target"), "{table}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let giou = v["giou"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&giou), "{v}");
    assert_eq!(v["num_samples"], 4);
    assert!(v["per_tag"].as_object().is_some_and(|t| !t.is_empty()), "{v}");
    // The synthetic data names each expression's form; the counts per form add up to the samples.
    let kinds = v["per_kind"].as_object().expect("per_kind from synthetic data");
    assert_eq!(kinds.values().map(|k| k["num_samples"].as_u64().unwrap()).sum::<u64>(), 4, "{v}");
    assert!(v["reference"]["gIoU_1"].is_number(), "{v}");
    // The click curve: 0, 1 and 2 simulated corrections; with none it is the evaluation itself.
    let curve = v["click_curve"].as_array().expect("click_curve with --clicks");
    assert_eq!(curve.iter().map(|c| c["clicks"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2], "{v}");
    assert!((curve[0]["giou"].as_f64().unwrap() - giou).abs() < 1e-9, "{v}");
    assert!(curve.iter().all(|c| c["num_samples"] == 4), "{v}");

    // The ground-truth-box diagnosis, both ways: every sample answered again, scored apart
    // from the sentence's answers (which stay as they were).
    for oracle in ["alone", "with-sentence"] {
        let json_path = dir.join(format!("eval-{oracle}.json"));
        let out = ok(rsrefseg(&[
            "eval", "--config", &d(&a.join("config.json")), "--weights", &d(&a.join("best.safetensors")), "--data", &d(&data),
            "--split", "test", "--json", &d(&json_path), "--threads", "2", "--oracle-box", oracle,
        ]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ground-truth box"));
        let w: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(w["giou"], v["giou"], "{w}");
        assert_eq!(w["oracle_box"]["num_samples"], 4, "{w}");
        assert_eq!(w["oracle_box"]["prompts"], oracle, "{w}");
        assert!((0.0..=1.0).contains(&w["oracle_box"]["giou"].as_f64().unwrap()), "{w}");
    }
}
