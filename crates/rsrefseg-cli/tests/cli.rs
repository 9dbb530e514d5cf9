//! The `rsrefseg` binary end to end: benchmark smoke run, `inspect` against the reference
//! fixture, and input errors of `segment`.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rsrefseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsrefseg")).args(args).output().expect("the rsrefseg binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `shared/fixtures/reference/` next to the repository.
fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/reference").join(name)
}

/// Tensors by name as (shape, values converted to f32).
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of a safetensors file.
fn read_safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                Dtype::I64 => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                Dtype::U8 => data.iter().map(|&v| v as f32).collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

#[test]
fn bench_prints_a_table_with_parsable_numbers() {
    let dir = scratch("bench");
    let json = dir.join("bench.json");
    let out = rsrefseg(&["bench", "--tiny", "--reps", "1", "--stages", "prompter,decoder", "--threads", "1", "--json", json.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for stage in ["prompter", "decoder", "total"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {stage} |")))
            .unwrap_or_else(|| panic!("no {stage} row in\n{stdout}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 10, "{row}");
        // GMAC, median ms, GFLOP/s are numbers; the tiny sizes have no anchor.
        for i in [2, 3, 5] {
            let v: f64 = cells[i].parse().unwrap_or_else(|_| panic!("cell {i} of {row}"));
            assert!(v.is_finite() && v >= 0.0, "{row}");
        }
        assert!(cells[3].parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert!(!stdout.contains("| siglip-vision |"), "only the requested stages run");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["stages"].as_array().unwrap().len(), 2);
    assert!(report["stages"][0]["median_ms"].as_f64().unwrap() > 0.0);
}

/// The reference fixture's image as a PNG, its token ids, and the tiny model's configuration.
fn fixture_inputs(dir: &Path) -> (PathBuf, String, PathBuf, Tensors) {
    let io = read_safetensors(&reference("full_io.safetensors"));
    let (shape, rgb) = &io["image_rgb_u8"];
    let png = dir.join("image.png");
    image::RgbImage::from_raw(shape[1] as u32, shape[0] as u32, rgb.iter().map(|&v| v as u8).collect())
        .unwrap()
        .save(&png)
        .unwrap();
    let ids = io["input_ids"].1.iter().map(|&v| (v as i64).to_string()).collect::<Vec<_>>().join(",");
    let out = rsrefseg(&["config", "--preset", "reference-dev"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.join("model.json");
    std::fs::write(&config, &out.stdout).unwrap();
    (png, ids, config, io)
}

#[test]
fn inspect_matches_the_reference_fixture() {
    let dir = scratch("inspect");
    let (png, ids, config, io) = fixture_inputs(&dir);
    let out_path = dir.join("intermediates.safetensors");
    let weights = reference("full_model.safetensors");
    let out = rsrefseg(&[
        "inspect",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        png.to_str().unwrap(),
        "--token-ids",
        &ids,
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = read_safetensors(&out_path);
    for name in [
        "input_x01",
        "sam_pixel_values",
        "clip_pixel_values",
        "v",
        "t_word",
        "t_sent",
        "sam_trunk_out0",
        "sam_trunk_out3",
        "sam_fpn2",
        "sam_feat_s0",
        "sam_feat_s1",
        "sam_image_embed",
        "sam_image_pe",
        "prompter_t1",
        "prompter_t2",
        "prompter_sparse_prompts",
        "prompter_dense_prompts",
        "sam_dense_embed",
        "dec_all_masks",
        "dec_all_iou",
        "dec_stability_token0",
        "dec_selected_mask",
        "dec_selected_iou",
        "final_logits",
    ] {
        let (es, ev) = &io[name];
        let (gs, gv) = got.get(name).unwrap_or_else(|| panic!("{name} missing from the inspect output"));
        assert_eq!(gs, es, "{name}: shape");
        let diff = gv.iter().zip(ev).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "{name}: max abs diff {diff}");
    }
    assert_eq!(got["input_ids"].1, io["input_ids"].1);
}

#[test]
fn segment_rejects_a_corrupt_image_by_name() {
    let dir = scratch("segment-corrupt");
    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n this is not really a png").unwrap();
    let out = rsrefseg(&["segment", "--image", bad.to_str().unwrap(), "--text", "the ship"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("broken.png") && stderr.contains("cannot decode"), "{stderr}");

    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let out = rsrefseg(&["segment", "--image", empty.to_str().unwrap(), "--text", "the ship"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("empty file"), "{}", text(&out.stderr));
}

#[test]
fn segment_writes_mask_overlay_heatmap_and_summary() {
    let dir = scratch("segment");
    let (png, ids, config, io) = fixture_inputs(&dir);
    let weights = reference("full_model.safetensors");
    let out_dir = dir.join("out");
    let out = rsrefseg(&[
        "segment",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        png.to_str().unwrap(),
        "--token-ids",
        &ids,
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (shape, expected) = &io["final_mask"];
    let mask = image::open(out_dir.join("mask.png")).unwrap().to_luma8();
    assert_eq!((mask.height() as usize, mask.width() as usize), (shape[1], shape[2]));
    let mask_pixels = mask.pixels().filter(|p| p.0[0] > 127).count();
    let expected_pixels = expected.iter().filter(|&&v| v > 0.5).count();
    // Pixels within rounding of the threshold may flip; the fixture's mask has none far from it.
    assert!(mask_pixels.abs_diff(expected_pixels) <= 2, "{mask_pixels} vs {expected_pixels}");
    for f in ["overlay.png", "heatmap.png"] {
        let img = image::open(out_dir.join(f)).unwrap();
        assert_eq!((img.height() as usize, img.width() as usize), (shape[1], shape[2]), "{f}");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("result.json")).unwrap()).unwrap();
    let iou = summary["predicted_iou"].as_f64().unwrap();
    assert!((iou - io["dec_selected_iou"].1[0] as f64).abs() < 1e-4, "{iou}");
    assert!(summary["timings_ms"]["encode_image"].as_f64().unwrap() > 0.0);
}

/// Outputs replace links instead of writing through them, and a directory in use by another run
/// is refused with nothing written (four runs sharing one --out-dir once left an overlay.png of
/// two interleaved PNGs and a result.json describing another run's mask).
#[cfg(unix)]
#[test]
fn segment_outputs_are_atomic_and_a_busy_directory_is_refused() {
    let dir = scratch("segment-atomic");
    let (png, _, _, _) = fixture_inputs(&dir);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let victim = dir.join("victim.png");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("overlay.png")).unwrap();
    let args = ["segment", "--image", png.to_str().unwrap(), "--text", "the largest ship", "--out-dir", out_dir.to_str().unwrap()];
    let out = rsrefseg(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "the link's target is untouched");
    image::open(out_dir.join("overlay.png")).expect("a PNG replaced the link");
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Another run holds the directory: refused, outputs untouched.
    let before = std::fs::read(out_dir.join("mask.png")).unwrap();
    std::fs::remove_file(out_dir.join("mask.png")).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(out_dir.join(".rsrefseg.lock")).unwrap();
    lock.lock().unwrap();
    let out = rsrefseg(&args);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("in use by another rsrefseg run"), "{}", text(&out.stderr));
    assert!(!out_dir.join("mask.png").exists(), "nothing written while the directory is busy");
    drop(lock);
    let out = rsrefseg(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(out_dir.join("mask.png")).unwrap(), before);
}

#[test]
fn segment_without_a_model_runs_the_embedded_nano() {
    let dir = scratch("segment-nomodel");
    let (png, _, _, _) = fixture_inputs(&dir);
    let out_dir = dir.join("out");
    let out = rsrefseg(&["segment", "--image", png.to_str().unwrap(), "--text", "the largest ship", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mask = image::open(out_dir.join("mask.png")).unwrap();
    let input = image::open(&png).unwrap();
    assert_eq!((mask.width(), mask.height()), (input.width(), input.height()));
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("result.json")).unwrap()).unwrap();
    assert!(result["note"].is_null(), "{result}");
    // Words the model's vocabulary does not know are named, on stderr and in result.json.
    let out = rsrefseg(&["segment", "--image", png.to_str().unwrap(), "--text", "asdf 港口", "--out-dir", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning: No word") && stderr.contains("“asdf”"), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("result.json")).unwrap()).unwrap();
    assert!(result["note"].as_str().is_some_and(|n| n.contains("“港口”")), "{result}");
    // Weights without their configuration are an error that says what to pass.
    let weights = reference("full_model.safetensors");
    let out = rsrefseg(&["segment", "--weights", weights.to_str().unwrap(), "--image", png.to_str().unwrap(), "--text", "the ship"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--config"), "{stderr}");
}

/// Correction clicks and a box: recorded in result.json and drawn on the overlay; the answer
/// changes only through the decoder (same tokens); clicks outside the image, boxes without area
/// and malformed values are refused by name before anything is written.
#[test]
fn segment_takes_correction_clicks_and_a_box() {
    let dir = scratch("segment-clicks");
    let (png, _, _, _) = fixture_inputs(&dir);
    let input = image::open(&png).unwrap();
    let (w, h) = (input.width() as f32, input.height() as f32);
    let out_dir = dir.join("out");
    let png = png.to_str().unwrap();
    let base = ["segment", "--image", png, "--text", "the largest ship", "--out-dir", out_dir.to_str().unwrap()];
    let point = format!("{},{}", w / 2.0, h / 2.0);
    let negative = format!("{},{},-", w / 4.0, h / 4.0);
    let bbox = format!("1,1,{},{}", w - 2.0, h - 2.0);
    let out = rsrefseg(&[&base[..], &["--point", &point, "--point", &negative, "--box", &bbox]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("result.json")).unwrap()).unwrap();
    let clicks = result["clicks"].as_array().unwrap();
    assert_eq!(clicks.len(), 2, "{result}");
    assert_eq!((clicks[0]["positive"].as_bool(), clicks[1]["positive"].as_bool()), (Some(true), Some(false)));
    assert_eq!(result["box"].as_array().map(Vec::len), Some(4), "{result}");
    assert!(result["before_corrections"]["predicted_iou"].is_number(), "{result}");
    // The positive click is drawn in green on the overlay.
    let overlay = image::open(out_dir.join("overlay.png")).unwrap().to_rgb8();
    assert_eq!(overlay.get_pixel((w / 2.0) as u32, (h / 2.0) as u32).0, [40, 230, 80]);

    let refused = |extra: &[&str], want: &str| {
        let bad_dir = dir.join("refused");
        let out = rsrefseg(&[&["segment", "--image", png, "--text", "the ship", "--out-dir", bad_dir.to_str().unwrap()][..], extra].concat());
        assert!(!out.status.success(), "{extra:?}");
        assert!(text(&out.stderr).contains(want), "{extra:?}: {}", text(&out.stderr));
        assert!(!bad_dir.exists(), "{extra:?}: nothing is written");
    };
    refused(&["--point", "99999,1"], "outside");
    refused(&["--point", "1,a"], "must be numbers");
    refused(&["--point", "1,2,*"], "x,y,-");
    refused(&["--box", "5,5,2,2"], "no area");
    refused(&["--box", "1,2,3"], "four numbers");
}

#[test]
fn segment_rejects_bad_text() {
    let dir = scratch("segment-text");
    let (png, _, config, _) = fixture_inputs(&dir);
    let weights = reference("full_model.safetensors");
    let base = ["segment", "--config", config.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--image", png.to_str().unwrap()];
    // Longer than the tiny text tower's 16 positions.
    let long: String = (0..20).map(|i| (i % 90).to_string()).collect::<Vec<_>>().join(",");
    let out = rsrefseg(&[&base[..], &["--token-ids", &long]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("at most 16"), "{}", text(&out.stderr));
    // Text without a tokenizer next to the configuration.
    let out = rsrefseg(&[&base[..], &["--text", "the white ship"]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("tokenizer"), "{}", text(&out.stderr));

    // With the real Gemma tokenizer of the model crate's fixtures: empty and over-long sentences.
    let tokenizer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rsrefseg/tests/fixtures/tokenizer/tokenizer.json");
    let with_tokenizer = [&base[..], &["--tokenizer", tokenizer.to_str().unwrap()]].concat();
    let out = rsrefseg(&[&with_tokenizer[..], &["--text", "   "]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the sentence is empty"), "{}", text(&out.stderr));
    let long = "the small white ship next to the long pier ".repeat(4);
    let out = rsrefseg(&[&with_tokenizer[..], &["--text", &long]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("at most 16 are supported"), "{}", text(&out.stderr));
}

#[test]
fn bench_pipeline_runs_the_given_model_and_reports_every_stage() {
    let dir = scratch("bench-pipeline");
    let (png, ids, config, io) = fixture_inputs(&dir);
    let weights = reference("full_model.safetensors");
    let json = dir.join("pipeline.json");
    let out = rsrefseg(&[
        "bench", "--pipeline", "--config", config.to_str().unwrap(), "--weights", weights.to_str().unwrap(),
        "--image", png.to_str().unwrap(), "--token-ids", &ids, "--reps", "2", "--warmup", "0", "--threads", "1",
        "--json", json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["impl"], "rsrefseg");
    assert_eq!(r["mode"], "pipeline");
    for stage in ["preprocess", "siglip_vision", "hiera_fpn", "siglip_text", "prompter", "decoder", "postprocess"] {
        let m = &r["stages_ms"][stage];
        assert!(m["median"].as_f64().unwrap() >= m["min"].as_f64().unwrap(), "{stage}: {m}");
    }
    assert!(r["full_ms"]["median"].as_f64().unwrap() > 0.0 && r["requery_ms"]["median"].as_f64().unwrap() > 0.0);
    // The timed pipeline computes the model's real answer: the reference fixture's mask and IoU.
    let (_, expected) = &io["final_mask"];
    let expected_pixels = expected.iter().filter(|&&v| v > 0.5).count();
    let area = r["mask_area"].as_u64().unwrap() as usize;
    assert!(area.abs_diff(expected_pixels) <= 2, "{area} vs {expected_pixels}");
    let iou = r["iou_pred"].as_f64().unwrap();
    assert!((iou - io["dec_selected_iou"].1[0] as f64).abs() < 1e-4, "{iou}");
    let mask = image::open(r["mask_png"].as_str().unwrap()).unwrap().to_luma8();
    assert_eq!(mask.pixels().filter(|p| p.0[0] > 127).count(), area);
    assert_eq!(r["weights_bytes"].as_u64().unwrap() % 4, 0);
}

#[test]
fn bench_train_step_times_forward_backward_and_optimizer() {
    let dir = scratch("bench-train-step");
    let json = dir.join("train.json");
    let out = rsrefseg(&[
        "bench", "--train-step", "--config", "reference-dev", "--batch-size", "2", "--reps", "1", "--warmup", "0",
        "--threads", "1", "--json", json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mode"], "train_step");
    assert_eq!(r["batch_size"], 2);
    let phase = |k: &str| r[k]["median"].as_f64().unwrap();
    assert!(phase("forward_ms") > 0.0 && phase("backward_ms") > 0.0 && phase("optimizer_ms") > 0.0);
    assert!(phase("step_ms") >= phase("forward_ms") + phase("backward_ms"));
    // Every parameter of the preset is trained (the reference fixture's model has ≈ 1 M).
    assert!(r["trainable_params"].as_u64().unwrap() > 500_000);
}

#[test]
fn segment_accepts_the_nano_preset_with_its_embedded_tokenizer() {
    let dir = scratch("segment-nano-preset");
    let (png, _, _, _) = fixture_inputs(&dir);
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano/nano.safetensors");
    let out_dir = dir.join("out");
    let out = rsrefseg(&[
        "segment", "--config", "nano", "--weights", weights.to_str().unwrap(), "--image", png.to_str().unwrap(),
        "--text", "the largest ship", "--out-dir", out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Same answer as the embedded model (the same weights).
    let embedded_dir = dir.join("embedded");
    let out = rsrefseg(&["segment", "--image", png.to_str().unwrap(), "--text", "the largest ship", "--out-dir", embedded_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = image::open(out_dir.join("mask.png")).unwrap().to_luma8();
    let b = image::open(embedded_dir.join("mask.png")).unwrap().to_luma8();
    assert_eq!(a, b);
    // Another preset names what is missing.
    let out = rsrefseg(&["segment", "--config", "browser", "--weights", weights.to_str().unwrap(), "--image", png.to_str().unwrap(), "--text", "the ship"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--tokenizer"), "{}", text(&out.stderr));
}

#[test]
fn config_prints_presets_and_the_prompter_ablations() {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = rsrefseg(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let nano = json(&["config", "--preset", "nano"]);
    assert_eq!(nano["prompter"]["first_order_depth"], 2);
    assert_eq!(nano["prompter"]["dense_prompt"], true);
    let single = json(&["config", "--preset", "nano", "--ablation", "single-stage"]);
    let no_dense = json(&["config", "--preset", "nano", "--ablation", "no-dense"]);
    assert_eq!(single["prompter"]["first_order_depth"], 0);
    assert_eq!(no_dense["prompter"]["dense_prompt"], false);
    // Exactly one field changes.
    let mut a = single.clone();
    a["prompter"]["first_order_depth"] = 2.into();
    assert_eq!(a, nano);
    let mut b = no_dense.clone();
    b["prompter"]["dense_prompt"] = true.into();
    assert_eq!(b, nano);
}

/// `synth --size 100000` once tried to allocate 120 GB; out-of-range sizes and fractions are
/// refused before anything is generated or written.
#[test]
fn synth_refuses_sizes_beyond_its_memory_bound() {
    let dir = scratch("synth-bounds");
    let out = dir.join("data");
    for extra in [
        vec!["--size", "100000"],
        vec!["--size", "32"],
        vec!["--max-objects", "1000"],
        vec!["--expressions", "0"],
        vec!["--val-fraction=-0.5", "--test-fraction", "0.6"],
    ] {
        let mut args = vec!["synth", "--out", out.to_str().unwrap(), "--n", "2"];
        args.extend(extra.iter().copied());
        let o = rsrefseg(&args);
        assert!(!o.status.success(), "{extra:?}");
        let err = text(&o.stderr);
        let flag = extra[0].split('=').next().unwrap();
        assert!(err.contains(flag), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?}: nothing written");
    }
}

/// `bench --text-len 0` and `--prompter-text-len 0` once panicked inside burn.
#[test]
fn bench_refuses_empty_texts() {
    for flag in ["--text-len", "--prompter-text-len"] {
        let out = rsrefseg(&["bench", "--tiny", flag, "0"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
    }
}

/// All-NaN or partly NaN weights once gave an empty mask with `predicted_iou: null` and exit 0;
/// `export-web --block 7` silently wrote every layer in f32. Both are errors now.
#[test]
fn damaged_weights_and_untileable_blocks_are_refused() {
    let dir = scratch("nan-weights");
    let (png, _, _, _) = fixture_inputs(&dir);
    let nano = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano/nano.safetensors");
    let mut bytes = std::fs::read(&nano).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let (name, entry) = header.as_object().unwrap().iter().find(|(k, v)| *k != "__metadata__" && v["dtype"] == "F32").unwrap();
    let start = 8 + header_len + entry["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let bad = dir.join("nan.safetensors");
    std::fs::write(&bad, bytes).unwrap();
    let out_dir = dir.join("out");
    let out = rsrefseg(&[
        "segment", "--config", "nano", "--weights", bad.to_str().unwrap(), "--image", png.to_str().unwrap(), "--text", "the ship",
        "--out-dir", out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("damaged") && err.contains(name.as_str()), "{name}: {err}");
    assert!(!out_dir.join("mask.png").exists());

    let out = rsrefseg(&[
        "export-web", "--config", "nano", "--weights", nano.to_str().unwrap(), "--tokenizer",
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano/tokenizer.json").to_str().unwrap(), "--out",
        dir.join("x.rsb").to_str().unwrap(), "--block", "7",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--block"), "{}", text(&out.stderr));
    assert!(!dir.join("x.rsb").exists());
}
