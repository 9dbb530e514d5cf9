//! torch.save archives written by real torch (tools/fixtures/gen_torch_zip_cases.py), compared
//! exactly with the same tensors saved as contiguous safetensors.

use rsrefseg::checkpoint::{read_tensors_from_bytes, safetensors_file, torch_zip, TensorMap};
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_zip").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn expected(case: &str) -> TensorMap {
    safetensors_file::read(&fixture(&format!("{case}.expected.safetensors")), case).unwrap()
}

fn assert_same(got: &TensorMap, want: &TensorMap) {
    let gk: Vec<_> = got.keys().collect();
    let wk: Vec<_> = want.keys().collect();
    assert_eq!(gk, wk, "tensor names");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.shape, w.shape, "{k}: shape");
        // Bit-exact, NaN-free fixtures: plain equality is the right check.
        assert_eq!(g.data, w.data, "{k}: values");
    }
}

#[test]
fn sam_style_model_entry() {
    let bytes = fixture("model.pt");
    let got = torch_zip::read(&bytes, "model.pt").unwrap();
    let want = expected("model");
    assert_same(&got, &want);
    // Spot checks on what the fixture is about.
    assert_eq!(got["transposed"].shape, vec![5, 4]);
    assert_eq!(got["offset_view"].data, (5..13).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>());
    assert_eq!(got["every_other"].shape, vec![10]);
    assert_eq!(got["bn.num_batches_tracked"].shape, Vec::<usize>::new());
    assert_eq!(got["bn.num_batches_tracked"].data, vec![7.0]);
    assert_eq!(got["int32"].data, vec![-3.0, 4.0, 5.0, 2147483.0]);
    assert_eq!(got["mask"].data, vec![1.0, 0.0, 1.0]);
    assert_eq!(got["empty"].shape, vec![0, 3]);
    // Same result through the container-sniffing entry point and with an explicit root.
    assert_same(&read_tensors_from_bytes(&bytes, "model.pt").unwrap(), &want);
    assert_same(&torch_zip::read_with_root(&bytes, "model.pt", Some("model")).unwrap(), &want);
}

#[test]
fn state_dict_entry_protocol_4() {
    let got = torch_zip::read(&fixture("state_dict.pt"), "state_dict.pt").unwrap();
    assert_same(&got, &expected("state_dict"));
    assert_eq!(got["decode_head.logit_scale1"].data, vec![2.5]);
}

#[test]
fn nested_dicts_are_flattened() {
    let got = torch_zip::read(&fixture("nested.pt"), "nested.pt").unwrap();
    assert_same(&got, &expected("nested"));
    let e = torch_zip::read_with_root(&fixture("nested.pt"), "nested.pt", Some("model")).unwrap_err();
    assert!(e.to_string().contains("no entry \"model\""), "{e}");
    // A dotted root path descends nested dicts.
    let enc = torch_zip::read_with_root(&fixture("nested.pt"), "nested.pt", Some("enc.blocks")).unwrap();
    assert_eq!(enc.keys().collect::<Vec<_>>(), vec!["0.b"]);
}

#[test]
fn forbidden_global_is_refused_by_name() {
    let e = torch_zip::read(&fixture("forbidden_global.pt"), "forbidden_global.pt").unwrap_err().to_string();
    assert!(e.contains("refusing to load") && e.contains("getcwd`"), "{e}");
    assert!(e.contains("not tensor storage"), "{e}");
}

#[test]
fn legacy_pickle_is_explained() {
    let bytes = fixture("legacy.pt");
    assert!(torch_zip::is_legacy_torch_pickle(&bytes));
    let e = torch_zip::read(&bytes, "legacy.pt").unwrap_err().to_string();
    assert!(e.contains("_use_new_zipfile_serialization=False") && e.contains("re-save"), "{e}");
}

#[test]
fn truncated_archive_is_an_error() {
    let bytes = fixture("model.pt");
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
        let r = std::panic::catch_unwind(|| torch_zip::read(&bytes[..keep], "cut.pt"));
        assert!(matches!(r, Ok(Err(_))), "cut at {keep}: expected an error, not a panic or success");
    }
}

/// Rewrite an archive without one record, or with one record shortened.
fn rewrite(bytes: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut src = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn missing_or_short_blob_is_an_error() {
    let bytes = fixture("model.pt");
    // The rewritten archive still loads when nothing is changed (the rewrite itself is sound).
    assert_same(&torch_zip::read(&rewrite(&bytes, |_, d| Some(d)), "same.pt").unwrap(), &expected("model"));
    let missing = rewrite(&bytes, |n, d| (n != "model/data/0").then_some(d));
    let e = torch_zip::read(&missing, "missing.pt").unwrap_err().to_string();
    assert!(e.contains("model/data/0") && e.contains("missing"), "{e}");
    let short = rewrite(&bytes, |n, d| Some(if n == "model/data/3" { d[..d.len() / 2].to_vec() } else { d }));
    let e = torch_zip::read(&short, "short.pt").unwrap_err().to_string();
    assert!(e.contains("data/3"), "{e}");
    let no_pickle = rewrite(&bytes, |n, d| (n != "model/data.pkl").then_some(d));
    assert!(torch_zip::read(&no_pickle, "nopkl.pt").unwrap_err().to_string().contains("data.pkl"));
}
