//! `rsrefseg fetch` against a stand-in for the Hugging Face hub on 127.0.0.1 (never the
//! internet). The server speaks the hub's layout: `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with
//! `X-Repo-Commit`, `ETag` (git blob sha1) for plain files and a redirect to `/cdn/{sha256}` with
//! `X-Linked-Etag`/`X-Linked-Size` for LFS files, `Range` requests, hub error codes, and
//! `/api/{models,datasets}/{repo}/revision/{rev}` listings. It records every request.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
struct HubFile {
    content: Vec<u8>,
    /// Served like an LFS file: redirect to `/cdn/{sha256}`, hash in `X-Linked-Etag`.
    lfs: bool,
    /// A published hash other than the content's (to provoke a mismatch).
    etag: Option<String>,
}

fn lfs(content: Vec<u8>) -> HubFile {
    HubFile { content, lfs: true, etag: None }
}

fn plain(content: &[u8]) -> HubFile {
    HubFile { content: content.to_vec(), lfs: false, etag: None }
}

#[derive(Default)]
struct HubRepo {
    files: BTreeMap<String, HubFile>,
    /// Only requests with `Authorization: Bearer {token}` see the repository.
    token: Option<String>,
}

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    /// Keyed like the URL: `owner/name` or `datasets/owner/name`.
    repos: HashMap<String, HubRepo>,
    log: Vec<Logged>,
    /// sha256 of a content → close the connection after this many body bytes, once.
    cut: HashMap<String, usize>,
    /// Answer Range requests with the whole file (200).
    ignore_range: bool,
    /// Base URL of the LFS storage the resolve URLs redirect to (default: this server).
    storage: Option<String>,
    /// `X-Repo-Commit` sent instead of [`COMMIT`] (a hostile server).
    commit_header: Option<String>,
    /// Seconds to sleep before answering a file request (a stalled server).
    stall: u64,
}

struct Hub {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Hub {
    fn start(repos: Vec<(&str, HubRepo)>) -> Hub {
        let state = State { repos: repos.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), ..State::default() };
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (st, base) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (st, base) = (st.clone(), base.clone());
                std::thread::spawn(move || handle(stream, &st, &base));
            }
        });
        Hub { url, state }
    }

    fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    fn cut_first_get(&self, content: &[u8], after: usize) {
        self.state.lock().unwrap().cut.insert(sha256(content), after);
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn git_sha1(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic filler bytes.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + (i >> 8) * 7) as u8) ^ seed).collect()
}

fn handle(mut stream: TcpStream, state: &Mutex<State>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").split('?').next().unwrap().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    let mut st = state.lock().unwrap();
    st.log.push(Logged { method: method.clone(), path: path.clone(), range: range.clone(), auth: auth.clone() });
    let head = method == "HEAD";
    let respond = |stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let _ = stream.write_all(out.as_bytes());
        if !head {
            let _ = stream.write_all(body);
        }
        let _ = stream.flush();
    };
    let hub_error = |stream: &mut TcpStream, status: &str, code: &str, msg: &str| {
        respond(stream, status, &[("X-Error-Code", code.to_string()), ("X-Error-Message", msg.to_string())], msg.as_bytes());
    };
    let authorised = |repo: &HubRepo| repo.token.as_ref().is_none_or(|t| auth.as_deref() == Some(&format!("Bearer {t}")));

    // Listing: /api/models/{repo}/revision/{rev}, /api/datasets/{repo}/revision/{rev}.
    if let Some(rest) = path.strip_prefix("/api/") {
        let (kind, rest) = rest.split_once('/').unwrap_or(("", ""));
        let repo_id = rest.split("/revision/").next().unwrap_or("");
        let key = if kind == "datasets" { format!("datasets/{repo_id}") } else { repo_id.to_string() };
        match st.repos.get(&key) {
            Some(repo) if authorised(repo) => {
                let mut siblings: Vec<_> = repo.files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
                siblings.push(serde_json::json!({ "rfilename": ".gitattributes" }));
                let body = serde_json::json!({ "id": repo_id, "sha": COMMIT, "siblings": siblings }).to_string();
                respond(&mut stream, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes());
            }
            _ => hub_error(&mut stream, "401 Unauthorized", "RepoNotFound", "Repository not found"),
        }
        return;
    }

    // The bytes of a file, honouring Range, possibly cut off.
    let serve = |st: &mut State, stream: &mut TcpStream, content: &[u8], extra: Vec<(&str, String)>| {
        let total = content.len();
        let start = range
            .as_deref()
            .filter(|_| !st.ignore_range)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<usize>().ok());
        let (status, body, mut hdrs) = match start {
            Some(s) if s >= total => {
                return respond(stream, "416 Range Not Satisfiable", &[("Content-Range", format!("bytes */{total}"))], b"");
            }
            Some(s) => ("206 Partial Content", &content[s..], vec![("Content-Range", format!("bytes {s}-{}/{total}", total - 1))]),
            None => ("200 OK", content, vec![]),
        };
        hdrs.extend(extra);
        hdrs.push(("Content-Length", body.len().to_string()));
        let cut = if head { None } else { st.cut.remove(&sha256(content)) };
        match cut {
            Some(n) => {
                let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                for (k, v) in &hdrs {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = stream.write_all(out.as_bytes());
                let _ = stream.write_all(&body[..n.min(body.len())]);
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
            }
            None => respond(stream, status, &hdrs, body),
        }
    };

    if let Some(sha) = path.strip_prefix("/cdn/") {
        let content = st.repos.values().flat_map(|r| r.files.values()).find(|f| sha256(&f.content) == sha).map(|f| f.content.clone());
        match content {
            Some(content) => serve(&mut st, &mut stream, &content, vec![]),
            None => respond(&mut stream, "404 Not Found", &[], b"no such object"),
        }
        return;
    }

    let Some((repo_key, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return respond(&mut stream, "404 Not Found", &[], b"unknown route");
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(repo) = st.repos.get(repo_key).filter(|r| authorised(r)) else {
        return hub_error(&mut stream, "401 Unauthorized", "RepoNotFound", "Repository not found");
    };
    if rev != "main" && rev != COMMIT {
        return hub_error(&mut stream, "404 Not Found", "RevisionNotFound", "Invalid rev id");
    }
    let Some(f) = repo.files.get(file).cloned() else {
        return hub_error(&mut stream, "404 Not Found", "EntryNotFound", "Entry not found");
    };
    let commit = ("X-Repo-Commit", st.commit_header.clone().unwrap_or_else(|| COMMIT.to_string()));
    if st.stall > 0 {
        let secs = st.stall;
        drop(st);
        std::thread::sleep(std::time::Duration::from_secs(secs));
        st = state.lock().unwrap();
    }
    if f.lfs {
        let etag = f.etag.clone().unwrap_or_else(|| sha256(&f.content));
        let location = format!("{}/cdn/{}", st.storage.as_deref().unwrap_or(base), sha256(&f.content));
        let headers = [
            ("Location", location),
            commit,
            ("X-Linked-Etag", format!("\"{etag}\"")),
            ("X-Linked-Size", f.content.len().to_string()),
            ("ETag", "\"a1b2c3\"".to_string()),
        ];
        respond(&mut stream, "302 Found", &headers, b"");
    } else {
        let etag = f.etag.clone().unwrap_or_else(|| git_sha1(&f.content));
        serve(&mut st, &mut stream, &f.content, vec![commit, ("ETag", format!("\"{etag}\""))]);
    }
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fetch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `rsrefseg fetch ARGS --no-progress` with a clean environment (no token, endpoint,
/// proxy or home cache from the machine).
fn fetch(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsrefseg"));
    cmd.arg("fetch").args(args).arg("--no-progress").env("HF_HOME", home.join("hf-home"));
    for var in ["HF_TOKEN", "HF_ENDPOINT", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the rsrefseg binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn repo(files: Vec<(&str, HubFile)>) -> HubRepo {
    HubRepo { files: files.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), token: None }
}

#[test]
fn browser_preset_arrives_byte_identical_in_the_hub_cache_layout() {
    let dir = scratch("preset");
    let siglip = vec![
        ("model.safetensors", lfs(bytes(200_000, 1))),
        ("config.json", plain(br#"{"model_type": "siglip", "vision_config": {"image_size": 512}}"#)),
        ("tokenizer.json", lfs(bytes(5_000, 2))),
        ("tokenizer_config.json", plain(br#"{"model_max_length": 64}"#)),
        ("special_tokens_map.json", plain(br#"{"pad_token": "<pad>"}"#)),
        // no preprocessor_config.json: optional, skipped
    ];
    let sam = vec![("sam2.1_hiera_tiny.pt", lfs(bytes(120_000, 3)))];
    let hub = Hub::start(vec![
        ("google/siglip2-base-patch16-512", repo(siglip.clone())),
        ("facebook/sam2.1-hiera-tiny", repo(sam.clone())),
    ]);
    let cache = dir.join("cache");
    let out = fetch(&dir, &["browser", "--endpoint", &hub.url, "--cache-dir", cache.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stderr).contains("preprocessor_config.json"), "the skipped optional file is named\n{}", show(&out));

    let printed: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    let hf = hf_hub::Cache::new(cache.clone());
    let mut expected_paths = Vec::new();
    for (repo_id, files) in [("google/siglip2-base-patch16-512", &siglip), ("facebook/sam2.1-hiera-tiny", &sam)] {
        let cached = hf.repo(hf_hub::Repo::model(repo_id.to_string()));
        for (name, file) in files {
            // hf-hub's own cache lookup finds the file: same layout as other Hugging Face tools.
            let path = cached.get(name).unwrap_or_else(|| panic!("{repo_id}/{name} not in the cache\n{}", show(&out)));
            assert_eq!(read(&path), file.content, "{repo_id}/{name} differs");
            assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink(), "snapshot entries link to blobs");
            let blob_name = if file.lfs { sha256(&file.content) } else { git_sha1(&file.content) };
            let blob = cache.join(format!("models--{}", repo_id.replace('/', "--"))).join("blobs").join(&blob_name);
            assert_eq!(read(&blob), file.content, "blob {blob_name}");
            expected_paths.push(path);
        }
        let refs = cache.join(format!("models--{}", repo_id.replace('/', "--"))).join("refs/main");
        assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);
    }
    assert_eq!(printed, expected_paths, "stdout lists the fetched paths in order");
    let leftovers: Vec<_> = walk(&cache).into_iter().filter(|p| p.extension().is_some_and(|e| e == "part")).collect();
    assert!(leftovers.is_empty(), "no .part files remain: {leftovers:?}");

    // A second run finds everything in the cache: metadata requests only.
    hub.clear_log();
    let again = fetch(&dir, &["browser", "--endpoint", &hub.url, "--cache-dir", cache.to_str().unwrap()], &[]);
    assert!(again.status.success(), "{}", show(&again));
    let gets: Vec<_> = hub.log().into_iter().filter(|r| r.method == "GET").collect();
    assert!(gets.is_empty(), "nothing downloaded again: {gets:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn repo_and_file_flags_write_plain_files_under_out() {
    let dir = scratch("out");
    let files = vec![("a/b.bin", lfs(bytes(70_000, 4))), ("notes.txt", plain(b"phrases\n"))];
    let hub = Hub::start(vec![("datasets/someone/refs-data", repo(files.clone()))]);

    // One named file of a dataset repo.
    let out_dir = dir.join("one");
    let out = fetch(
        &dir,
        &["--repo", "someone/refs-data", "--dataset", "--file", "a/b.bin", "--endpoint", &hub.url, "--out", out_dir.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    let root = out_dir.join("datasets/someone/refs-data");
    assert_eq!(read(&root.join("a/b.bin")), files[0].1.content);
    assert!(!root.join("notes.txt").exists(), "only the named file");
    assert_eq!(text(&out.stdout).trim(), root.join("a/b.bin").display().to_string());
    assert!(hub.log().iter().all(|r| !r.path.starts_with("/api/")), "no listing needed");

    // The whole repository, through the hub's listing (without .gitattributes).
    let all_dir = dir.join("all");
    let out = fetch(&dir, &["--repo", "someone/refs-data", "--dataset", "--endpoint", &hub.url, "--out", all_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let root = all_dir.join("datasets/someone/refs-data");
    for (name, file) in &files {
        assert_eq!(read(&root.join(name)), file.content, "{name}");
    }
    assert!(!root.join(".gitattributes").exists());
    assert!(hub.log().iter().any(|r| r.path == "/api/datasets/someone/refs-data/revision/main"), "{:?}", hub.log());

    // Up to date: a rerun downloads nothing.
    hub.clear_log();
    let out = fetch(&dir, &["--repo", "someone/refs-data", "--dataset", "--endpoint", &hub.url, "--out", all_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(hub.log().iter().all(|r| r.method != "GET" || r.path.starts_with("/api/")), "{:?}", hub.log());

    // A revision other than main goes into the URL.
    hub.clear_log();
    let rev_dir = dir.join("rev");
    let out = fetch(
        &dir,
        &["--repo", "someone/refs-data", "--dataset", "--revision", COMMIT, "--file", "notes.txt", "--endpoint", &hub.url, "--out", rev_dir.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(hub.log().iter().any(|r| r.path == format!("/datasets/someone/refs-data/resolve/{COMMIT}/notes.txt")), "{:?}", hub.log());
}

#[test]
fn checksum_mismatch_fails_naming_the_file_and_keeps_the_part_file() {
    let dir = scratch("checksum");
    let weights = bytes(50_000, 5);
    let published = sha256(b"what the hub says the weights are");
    let config = b"{\"hidden_size\": 8}".to_vec();
    let published_sha1 = git_sha1(b"another config");
    let hub = Hub::start(vec![(
        "owner/bad",
        repo(vec![
            ("weights.bin", HubFile { content: weights.clone(), lfs: true, etag: Some(published.clone()) }),
            ("config.json", HubFile { content: config.clone(), lfs: false, etag: Some(published_sha1.clone()) }),
        ]),
    )]);
    let out_dir = dir.join("out");
    let args = ["--repo", "owner/bad", "--file", "weights.bin", "--endpoint", &hub.url, "--out", out_dir.to_str().unwrap()];
    let out = fetch(&dir, &args, &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    for needle in ["weights.bin", "owner/bad", "checksum mismatch", &published, &sha256(&weights)] {
        assert!(stderr.contains(needle), "error names {needle:?}\n{}", show(&out));
    }
    let final_path = out_dir.join("owner/bad/weights.bin");
    let part = out_dir.join("owner/bad/weights.bin.part");
    assert!(!final_path.exists(), "nothing moved into place");
    assert_eq!(read(&part), weights, "the received bytes are kept for inspection");

    // Never silently replaced: a second run fails the same way and leaves the file alone.
    let out = fetch(&dir, &args, &[]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(text(&out.stderr).contains("checksum mismatch"), "{}", show(&out));
    assert!(!final_path.exists());
    assert_eq!(read(&part), weights);

    // A plain (non-LFS) file is checked against its git blob sha1.
    let out = fetch(&dir, &["--repo", "owner/bad", "--file", "config.json", "--endpoint", &hub.url, "--out", out_dir.to_str().unwrap()], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    for needle in ["config.json", "git blob sha1", &published_sha1, &git_sha1(&config)] {
        assert!(stderr.contains(needle), "error names {needle:?}\n{}", show(&out));
    }
    assert!(!out_dir.join("owner/bad/config.json").exists());

    // Same in the cache layout: no blob, the .part is kept.
    let cache = dir.join("cache");
    let out = fetch(&dir, &["--repo", "owner/bad", "--file", "weights.bin", "--endpoint", &hub.url, "--cache-dir", cache.to_str().unwrap()], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let blobs = cache.join("models--owner--bad/blobs");
    assert!(!blobs.join(&published).exists());
    assert_eq!(read(&blobs.join(format!("{published}.part"))), weights);
    assert!(hf_hub::Cache::new(cache).repo(hf_hub::Repo::model("owner/bad".into())).get("weights.bin").is_none());
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let dir = scratch("resume");
    let weights = bytes(300_000, 6);
    let hub = Hub::start(vec![("owner/big", repo(vec![("model.safetensors", lfs(weights.clone()))]))]);
    let out_dir = dir.join("out");
    let args = ["--repo", "owner/big", "--file", "model.safetensors", "--endpoint", &hub.url, "--out", out_dir.to_str().unwrap()];

    // The connection breaks after 100 000 bytes and no retry is allowed: the run fails, the
    // bytes received stay in the .part file.
    hub.cut_first_get(&weights, 100_000);
    let out = fetch(&dir, &[&args[..], &["--retries", "0"]].concat(), &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("model.safetensors") && stderr.contains("network failure"), "{}", show(&out));
    let part = out_dir.join("owner/big/model.safetensors.part");
    assert_eq!(read(&part), weights[..100_000], "the first 100 000 bytes are kept");
    assert!(!out_dir.join("owner/big/model.safetensors").exists());

    // The next run asks only for the rest.
    hub.clear_log();
    let out = fetch(&dir, &args, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read(&out_dir.join("owner/big/model.safetensors")), weights);
    assert!(!part.exists(), "the .part file was moved into place");
    // (The resolve URL redirects to the storage, which sends the bytes.)
    let gets: Vec<_> = hub.log().into_iter().filter(|r| r.method == "GET" && r.path.starts_with("/cdn/")).collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range.as_deref(), Some("bytes=100000-"), "{gets:?}");

    // Within one run (default retries), into the cache.
    hub.clear_log();
    hub.cut_first_get(&weights, 123_457);
    let cache = dir.join("cache");
    let out = fetch(&dir, &["--repo", "owner/big", "--file", "model.safetensors", "--endpoint", &hub.url, "--cache-dir", cache.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let path = hf_hub::Cache::new(cache).repo(hf_hub::Repo::model("owner/big".into())).get("model.safetensors").unwrap();
    assert_eq!(read(&path), weights);
    let ranges: Vec<_> = hub.log().into_iter().filter(|r| r.path.starts_with("/cdn/")).map(|r| r.range).collect();
    assert_eq!(ranges, vec![None, Some("bytes=123457-".to_string())]);
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    let dir = scratch("no-range");
    let weights = bytes(80_000, 7);
    let hub = Hub::start(vec![("owner/big", repo(vec![("w.bin", lfs(weights.clone()))]))]);
    hub.state.lock().unwrap().ignore_range = true;
    hub.cut_first_get(&weights, 30_000);
    let out_dir = dir.join("out");
    let out = fetch(&dir, &["--repo", "owner/big", "--file", "w.bin", "--endpoint", &hub.url, "--out", out_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read(&out_dir.join("owner/big/w.bin")), weights, "no duplicated bytes from appending a full response");
    let ranges: Vec<_> = hub.log().into_iter().filter(|r| r.path.starts_with("/cdn/")).map(|r| r.range).collect();
    assert_eq!(ranges, vec![None, Some("bytes=30000-".to_string())]);
}

#[test]
fn missing_files_private_repos_and_network_failures_give_clear_errors() {
    let dir = scratch("errors");
    let secret = b"private weights".to_vec();
    let hub = Hub::start(vec![
        ("owner/public", repo(vec![("config.json", plain(b"{}"))])),
        ("owner/private", HubRepo { token: Some("hf_secret".into()), ..repo(vec![("w.bin", lfs(secret.clone()))]) }),
    ]);
    let out_dir = dir.join("out");
    let out_s = out_dir.to_str().unwrap();

    // 404: a file that is not in the repository.
    let out = fetch(&dir, &["--repo", "owner/public", "--file", "nope.bin", "--endpoint", &hub.url, "--out", out_s], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    let url = format!("{}/owner/public/resolve/main/nope.bin", hub.url);
    for needle in ["nope.bin", "owner/public", "404", &url, "EntryNotFound"] {
        assert!(stderr.contains(needle), "error names {needle:?}\n{}", show(&out));
    }

    // 401: a private repository without a token.
    let args = ["--repo", "owner/private", "--file", "w.bin", "--endpoint", &hub.url, "--out", out_s];
    let out = fetch(&dir, &args, &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    let url = format!("{}/owner/private/resolve/main/w.bin", hub.url);
    for needle in ["w.bin", "owner/private", "401", &url, "--token"] {
        assert!(stderr.contains(needle), "error names {needle:?}\n{}", show(&out));
    }
    // With the token (flag or HF_TOKEN) it works, and the token was sent.
    let out = fetch(&dir, &[&args[..], &["--token", "hf_secret"]].concat(), &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read(&out_dir.join("owner/private/w.bin")), secret);
    assert!(hub.log().iter().any(|r| r.auth.as_deref() == Some("Bearer hf_secret")));
    std::fs::remove_file(out_dir.join("owner/private/w.bin")).unwrap();
    let out = fetch(&dir, &args, &[("HF_TOKEN", "hf_secret")]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read(&out_dir.join("owner/private/w.bin")), secret);

    // The token goes to the hub, not to the storage host the LFS redirect points at (here the
    // same server under the name `localhost`).
    std::fs::remove_file(out_dir.join("owner/private/w.bin")).unwrap();
    let port = hub.url.rsplit(':').next().unwrap().to_string();
    hub.state.lock().unwrap().storage = Some(format!("http://localhost:{port}"));
    hub.clear_log();
    let out = fetch(&dir, &args, &[("HF_TOKEN", "hf_secret")]);
    assert!(out.status.success(), "{}", show(&out));
    let log = hub.log();
    assert!(log.iter().any(|r| r.path.starts_with("/cdn/")), "{log:?}");
    for r in &log {
        let expected = if r.path.starts_with("/cdn/") { None } else { Some("Bearer hf_secret") };
        assert_eq!(r.auth.as_deref(), expected, "{r:?}");
    }

    // A listing that fails names the repository.
    let out = fetch(&dir, &["--repo", "owner/missing", "--endpoint", &hub.url, "--out", out_s], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("owner/missing") && stderr.contains("401"), "{}", show(&out));

    // Nothing listening: a network error naming the URL.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = fetch(&dir, &["--repo", "owner/public", "--file", "config.json", "--endpoint", &closed, "--out", out_s, "--retries", "0"], &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = text(&out.stderr);
    let url = format!("{closed}/owner/public/resolve/main/config.json");
    for needle in ["config.json", "owner/public", "network failure", &url] {
        assert!(stderr.contains(needle), "error names {needle:?}\n{}", show(&out));
    }
}

#[test]
fn presets_resolve_to_the_table_repositories() {
    let dir = scratch("presets");
    let hub = Hub::start(vec![
        ("KyanChen/RSRefSeg2", repo(vec![("rrsisd.pth", lfs(bytes(10, 8)))])),
        ("datasets/JessicaYuan/RefSegRS", repo(vec![("images.zip", lfs(bytes(10, 9)))])),
    ]);
    let out = fetch(&dir, &["paper", "rsrefseg2", "refsegrs", "sam2.1-tiny-hf", "--dry-run", "--endpoint", &hub.url], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let u = &hub.url;
    for expected in [
        format!("{u}/google/siglip2-so400m-patch16-512/resolve/main/model.safetensors"),
        format!("{u}/google/siglip2-so400m-patch16-512/resolve/main/config.json"),
        format!("{u}/google/siglip2-so400m-patch16-512/resolve/main/tokenizer.json"),
        format!("{u}/facebook/sam2.1-hiera-large/resolve/main/sam2.1_hiera_large.pt"),
        format!("{u}/KyanChen/RSRefSeg2/resolve/main/rrsisd.pth"),
        format!("{u}/datasets/JessicaYuan/RefSegRS/resolve/main/images.zip"),
        format!("{u}/facebook/sam2.1-hiera-tiny/resolve/main/model.safetensors"),
        format!("{u}/facebook/sam2.1-hiera-tiny/resolve/main/config.json"),
    ] {
        assert!(lines.contains(&expected.as_str()), "{expected} missing\n{stdout}");
    }
    assert!(!stdout.contains(".gitattributes"));
    assert!(hub.log().iter().all(|r| r.path.starts_with("/api/")), "a dry run only lists: {:?}", hub.log());

    // The table and the help need no network.
    let out = fetch(&dir, &["--list"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    for needle in [
        "paper",
        "browser",
        "google/siglip2-so400m-patch16-512",
        "google/siglip2-base-patch16-512",
        "facebook/sam2.1-hiera-large",
        "facebook/sam2.1-hiera-tiny",
        "sam2.1_hiera_tiny.pt",
        "KyanChen/RSRefSeg2",
        "dataset JessicaYuan/RefSegRS",
        "RRSIS-D",
    ] {
        assert!(stdout.contains(needle), "--list shows {needle:?}\n{stdout}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_rsrefseg")).args(["fetch", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    for needle in ["--endpoint", "--token", "--cache-dir", "--out", "refsegrs", "RRSIS-D", "RISBench", "not"] {
        assert!(help.contains(needle), "--help mentions {needle:?}\n{help}");
    }

    // Nothing named: a clear error.
    let out = fetch(&dir, &["--endpoint", &hub.url], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nothing to fetch"), "{}", show(&out));
}

/// Every path under `root` (files, links, directories), relative to it.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn names_from_the_server_or_the_command_line_never_leave_the_output() {
    let dir = scratch("escape");
    let out_dir = dir.join("a/b/out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let victim = dir.join("a/victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let out_s = out_dir.to_str().unwrap();

    // A listing whose names climb out of --out, or are absolute: refused before any download.
    for name in ["../../../victim.txt", "ok/../../../../victim.txt", "/tmp/rsrefseg-fetch-abs.txt", "a\\..\\x", "./x", "a//b"] {
        let hub = Hub::start(vec![("owner/evil", repo(vec![("config.json", plain(b"{}")), (name, plain(b"pwned"))]))]);
        let out = fetch(&dir, &["--repo", "owner/evil", "--endpoint", &hub.url, "--out", out_s], &[]);
        assert!(!out.status.success(), "{name}: {}", show(&out));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("{name:?}")) && stderr.contains("not a safe relative path"), "{name}: {}", show(&out));
        assert!(hub.log().iter().all(|r| r.path.starts_with("/api/")), "{name}: nothing downloaded: {:?}", hub.log());
        assert_eq!(read(&victim), b"keep me");
        assert!(tree(&out_dir).is_empty(), "{name}: {:?}", tree(&out_dir));
    }
    assert!(!Path::new("/tmp/rsrefseg-fetch-abs.txt").exists());

    // The same names on the command line, and a repository or revision that climbs.
    let hub = Hub::start(vec![("owner/public", repo(vec![("config.json", plain(b"{}"))]))]);
    for args in [
        vec!["--repo", "owner/public", "--file", "../../../victim.txt"],
        vec!["--repo", "owner/public", "--file", "/etc/passwd"],
        vec!["--repo", "../..", "--file", "config.json"],
        vec!["--repo", "owner/public", "--revision", "../../x", "--file", "config.json"],
    ] {
        let mut a = args.clone();
        a.extend(["--endpoint", &hub.url, "--out", out_s]);
        let out = fetch(&dir, &a, &[]);
        assert!(!out.status.success(), "{args:?}: {}", show(&out));
        assert!(hub.log().is_empty(), "{args:?}: no request: {:?}", hub.log());
    }
    assert_eq!(read(&victim), b"keep me");
    assert!(tree(&out_dir).is_empty());
}

#[test]
fn a_hostile_commit_header_creates_nothing_outside_the_cache() {
    let dir = scratch("commit-header");
    let cache = dir.join("x/y/cache");
    for header in ["../../../../escaped", "/tmp/rsrefseg-abs-commit", "main", "0123456789ABCDEF0123456789abcdef01234567"] {
        let hub = Hub::start(vec![("owner/public", repo(vec![("config.json", plain(b"{}"))]))]);
        hub.state.lock().unwrap().commit_header = Some(header.to_string());
        let out = fetch(&dir, &["--repo", "owner/public", "--file", "config.json", "--endpoint", &hub.url, "--cache-dir", cache.to_str().unwrap()], &[]);
        assert!(!out.status.success(), "{header}: {}", show(&out));
        assert!(text(&out.stderr).contains("invalid commit id"), "{header}: {}", show(&out));
        assert!(!tree(&dir).iter().any(|p| p.to_string_lossy().contains("escaped")), "{:?}", tree(&dir));
        assert!(!tree(&cache).iter().any(|p| p.to_string_lossy().contains("snapshots/")), "{header}: {:?}", tree(&cache));
    }
    assert!(!Path::new("/tmp/rsrefseg-abs-commit").exists());
}

#[test]
fn a_stalled_server_is_given_up_after_the_stall_timeout() {
    let dir = scratch("stall");
    let hub = Hub::start(vec![("owner/public", repo(vec![("config.json", plain(b"{}"))]))]);
    hub.state.lock().unwrap().stall = 30;
    let start = std::time::Instant::now();
    let out = fetch(
        &dir,
        &["--repo", "owner/public", "--file", "config.json", "--endpoint", &hub.url, "--out", dir.join("out").to_str().unwrap(), "--retries", "1", "--stall-timeout", "1"],
        &[],
    );
    let took = start.elapsed().as_secs_f64();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < 15.0, "gave up after {took:.1} s");
    assert!(text(&out.stderr).contains("config.json"), "{}", show(&out));
}
