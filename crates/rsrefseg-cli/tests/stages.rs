//! `rsrefseg stage`: the three stages of the nano recipe run end to end on generated scenes
//! (two steps each), chain through `--init` / `--siglip-from`, write their weights, log, SVG plots
//! and checkpoint; a finished stage resumed does nothing; bad options are refused by name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rsrefseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsrefseg")).args(args).output().expect("the rsrefseg binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_stage(stage: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "stage", "--stage", stage, "--out", out.to_str().unwrap(), "--steps", "2", "--scenes-per-step", "1",
        "--expressions-per-scene", "3", "--val-every", "2", "--val-scenes", "1", "--checkpoint-every", "1",
        "--warmup-steps", "1", "--threads", "2",
    ];
    args.extend_from_slice(extra);
    rsrefseg(&args)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn three_stages_chain_and_resume() {
    let dir = scratch("stages");
    let (vl, sam, refer) = (dir.join("1"), dir.join("2"), dir.join("3"));

    let out = run_stage("vision-language", &vl, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_stage("promptable", &sam, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (init, siglip) = (sam.join("weights.safetensors"), vl.join("weights.safetensors"));
    let out = run_stage("referring", &refer, &["--init", init.to_str().unwrap(), "--siglip-from", siglip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (dir, val_key, terms) in [
        (&vl, "region_accuracy", &["patches", "regions"][..]),
        (&sam, "iou_from_box", &["focal", "dice", "iou"][..]),
        (&refer, "sentence_sensitivity", &["bce", "dice", "ortho", "contrastive", "iou"][..]),
    ] {
        let log = lines(&dir.join("metrics.jsonl"));
        let steps: Vec<_> = log.iter().filter(|l| l["kind"] == "step").collect();
        assert_eq!(steps.len(), 2, "{}", dir.display());
        for t in terms.iter().chain(&["total"]) {
            assert!(steps[1][*t].as_f64().unwrap().is_finite(), "{t} in {}", dir.display());
        }
        let val: Vec<_> = log.iter().filter(|l| l["kind"] == "val").collect();
        assert_eq!(val.len(), 1);
        let v = val[0][val_key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{val_key} {v}");
        let svg = std::fs::read_to_string(dir.join("plots/loss.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("optimizer step") && svg.contains(terms[0]));
        assert!(dir.join("checkpoint/state.json").is_file());
    }
    // Stage 3 with a correction round, the dense-prompt term and stage 2's interactive loss:
    // each is a loss term of its own.
    let clicked = dir.join("3-clicks");
    let out = run_stage(
        "referring",
        &clicked,
        &[
            "--init", init.to_str().unwrap(), "--siglip-from", siglip.to_str().unwrap(), "--correction-clicks", "--dense-loss", "1",
            "--promptable-loss", "0.5",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = lines(&clicked.join("metrics.jsonl"));
    let last = log.iter().filter(|l| l["kind"] == "step").last().unwrap();
    for term in ["clicked", "dense", "promptable"] {
        assert!(last[term].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{term}: {last}");
    }
    let plain = lines(&refer.join("metrics.jsonl"));
    assert!(plain.iter().all(|l| l.get("dense").is_none() && l.get("promptable").is_none()), "extra terms are off by default");
    // The referring stage's held-out check also scores the decoder from a box and a point alone.
    let val = plain.iter().find(|l| l["kind"] == "val").unwrap();
    for key in ["iou_from_box", "iou_from_point"] {
        assert!(val[key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{key}: {val}");
    }

    // The final model loads and evaluates as a whole (stage 3's output is a full nano model).
    let weights = std::fs::read(refer.join("weights.safetensors")).unwrap();

    // A finished stage resumed takes no step and leaves its weights as they are.
    let out = run_stage("referring", &refer, &["--init", init.to_str().unwrap(), "--siglip-from", siglip.to_str().unwrap(), "--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(refer.join("weights.safetensors")).unwrap(), weights);
    assert_eq!(lines(&refer.join("metrics.jsonl")).len(), 3);

    // Resuming with other settings is refused (the schedule and data would not continue).
    let out = rsrefseg(&[
        "stage", "--stage", "referring", "--out", refer.to_str().unwrap(), "--steps", "5", "--resume", "--init",
        init.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other stage settings"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_stage_options_are_refused_by_name() {
    let dir = scratch("stages-bad");
    for (extra, what) in [
        (&["--val-every", "0"][..], "--val-every"),
        (&["--lr", "NaN"][..], "--lr"),
        (&["--lr=-1"][..], "--lr"),
        (&["--data-seed", "5", "--val-seed", "5"][..], "--val-seed"),
        (&["--dense-loss=-1"][..], "--dense-loss"),
        (&["--dense-loss", "1"][..], "--stage referring"),
        (&["--ranking-weight", "0"][..], "--ranking-weight"),
        (&["--ranking-weight", "inf"][..], "--ranking-weight"),
        (&["--promptable-loss=-1"][..], "--promptable-loss"),
        (&["--promptable-loss", "NaN"][..], "--promptable-loss"),
        (&["--promptable-loss", "1"][..], "--stage referring"),
    ] {
        let out = run_stage("vision-language", &dir.join("x"), extra);
        assert!(!out.status.success(), "{extra:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{extra:?}: {err}");
    }
    // Memory grows with the scenes of a step: bounded before anything is generated.
    let out = rsrefseg(&["stage", "--stage", "promptable", "--out", dir.join("z").to_str().unwrap(), "--steps", "1", "--scenes-per-step", "100000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenes per step"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_stage("referring", &dir.join("y"), &["--init", "/nonexistent/w.safetensors"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/w.safetensors"));
}
