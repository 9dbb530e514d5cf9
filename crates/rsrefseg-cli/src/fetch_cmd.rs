//! `rsrefseg fetch`: download the weights of a preset, the released RSRefSeg 2 checkpoint and the
//! datasets that live on the Hugging Face hub.
//!
//! `hf-hub` (its blocking `ureq` API) supplies the repository model (`Repo`: model or dataset
//! repo, revision, `/{repo}/resolve/{rev}/{file}` URLs), the file listing of a repository
//! (`/api/{models,datasets}/{repo}/revision/{rev}`), the token file and the cache layout
//! (`models--owner--name/{blobs,snapshots,refs}`, so files fetched here are found by other
//! Hugging Face tools and vice versa). The transfer itself is done here on the same HTTP client
//! (`ureq` 2), because hf-hub's download neither verifies what it received nor reports statuses
//! per file:
//!
//! 1. `HEAD /{repo}/resolve/{rev}/{file}` without following absolute redirects gives the commit
//!    (`X-Repo-Commit`), the size (`X-Linked-Size` / `Content-Length`) and the content hash: the
//!    sha256 for LFS files (`X-Linked-Etag`), the git blob sha1 for the others (`ETag`).
//! 2. `GET` (redirects followed) into a `.part` file, continued with `Range: bytes=N-` after a
//!    network failure, in this run (`--retries`) or the next one.
//! 3. The `.part` file is hashed; on a mismatch the command fails naming the file, the expected
//!    and the found hash, and keeps the `.part` file. Otherwise it is renamed into place.

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Args;
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file of a preset; optional files may be missing from the repository (a 404 skips them).
pub struct FileSpec {
    pub path: &'static str,
    pub required: bool,
}

const fn req(path: &'static str) -> FileSpec {
    FileSpec { path, required: true }
}

const fn opt(path: &'static str) -> FileSpec {
    FileSpec { path, required: false }
}

/// Which files of a repository a preset takes.
pub enum Files {
    /// Exactly these.
    Listed(&'static [FileSpec]),
    /// Every file the hub lists for the revision (except `.gitattributes`).
    All,
}

/// One repository of a preset.
pub struct Source {
    pub repo: &'static str,
    pub kind: RepoType,
    pub revision: &'static str,
    pub files: Files,
}

/// A named set of downloads.
pub struct FetchPreset {
    pub name: &'static str,
    pub about: &'static str,
    pub sources: &'static [Source],
}

/// The files a SigLIP2 checkpoint is used with: weights, the HF `config.json` (the `"siglip"`
/// part of a model configuration), the fast tokenizer; the rest is kept when the repo has it.
const SIGLIP2: Files = Files::Listed(&[
    req("model.safetensors"),
    req("config.json"),
    req("tokenizer.json"),
    opt("tokenizer_config.json"),
    opt("special_tokens_map.json"),
    opt("preprocessor_config.json"),
]);

/// SAM 2.1 in the HF `Sam2Model` layout (same repositories as Meta's `.pt`).
const SAM21_HF: Files = Files::Listed(&[req("model.safetensors"), req("config.json")]);

/// Every preset: repository, revision and files, in one table. The model presets follow
/// `rsrefseg config --preset paper|browser` (`crates/rsrefseg/src/config.rs`); repositories per
/// `../shared/docs/reference.md` §1, §10–§13 and §8.3.
pub const PRESETS: &[FetchPreset] = &[
    FetchPreset {
        name: "paper",
        about: "SigLIP2-so400m-patch16-512 + SAM 2.1-large (Meta's .pt): the encoders of the paper's model",
        sources: &[
            Source { repo: "google/siglip2-so400m-patch16-512", kind: RepoType::Model, revision: "main", files: SIGLIP2 },
            Source {
                repo: "facebook/sam2.1-hiera-large",
                kind: RepoType::Model,
                revision: "main",
                files: Files::Listed(&[req("sam2.1_hiera_large.pt")]),
            },
        ],
    },
    FetchPreset {
        name: "browser",
        about: "SigLIP2-base-patch16-512 + SAM 2.1-tiny (Meta's .pt): the encoders of the browser model",
        sources: &[
            Source { repo: "google/siglip2-base-patch16-512", kind: RepoType::Model, revision: "main", files: SIGLIP2 },
            Source {
                repo: "facebook/sam2.1-hiera-tiny",
                kind: RepoType::Model,
                revision: "main",
                files: Files::Listed(&[req("sam2.1_hiera_tiny.pt")]),
            },
        ],
    },
    FetchPreset {
        name: "sam2.1-large-hf",
        about: "SAM 2.1-large in the HF Sam2Model layout (model.safetensors + config.json)",
        sources: &[Source { repo: "facebook/sam2.1-hiera-large", kind: RepoType::Model, revision: "main", files: SAM21_HF }],
    },
    FetchPreset {
        name: "sam2.1-tiny-hf",
        about: "SAM 2.1-tiny in the HF Sam2Model layout (model.safetensors + config.json)",
        sources: &[Source { repo: "facebook/sam2.1-hiera-tiny", kind: RepoType::Model, revision: "main", files: SAM21_HF }],
    },
    FetchPreset {
        name: "rsrefseg2",
        about: "the authors' released RSRefSeg 2 checkpoints (paper model, PEFT keys): every file of the repo",
        sources: &[Source { repo: "KyanChen/RSRefSeg2", kind: RepoType::Model, revision: "main", files: Files::All }],
    },
    FetchPreset {
        name: "refsegrs",
        about: "the RefSegRS dataset (512x512 .tif images and masks, phrase files): every file of the dataset repo",
        sources: &[Source { repo: "JessicaYuan/RefSegRS", kind: RepoType::Dataset, revision: "main", files: Files::All }],
    },
];

const AFTER_HELP: &str = "\
Datasets: only RefSegRS is on the Hugging Face hub (preset `refsegrs`). RRSIS-D (from RMSIN) and
RISBench (from CroBIM) are not: download them from their authors' releases and convert them as
described in the README.

Files go to the Hugging Face cache (--cache-dir, default $HF_HOME/hub or ~/.cache/huggingface/hub)
in its usual layout, or with --out DIR to DIR/<repo>/<file> (dataset repos under DIR/datasets/).
An interrupted download is continued from its .part file (HTTP Range). Every file is checked
against the hash the hub publishes (sha256 for LFS files, the git blob sha1 otherwise); on a
mismatch the command fails and keeps the .part file for inspection.";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct FetchArgs {
    /// Presets to download (`--list` shows their repositories and files).
    #[arg(value_parser = preset_parser())]
    pub presets: Vec<String>,
    /// A hub repository (owner/name) to download from, besides the presets.
    #[arg(long)]
    pub repo: Option<String>,
    /// `--repo` is a dataset repository (default: a model repository).
    #[arg(long, requires = "repo")]
    pub dataset: bool,
    /// Revision of `--repo`: branch, tag or commit.
    #[arg(long, default_value = "main", requires = "repo")]
    pub revision: String,
    /// A file of `--repo` (repeatable); without it, every file of the repository.
    #[arg(long = "file", value_name = "NAME", requires = "repo")]
    pub files: Vec<String>,
    /// Hub endpoint [default: $HF_ENDPOINT, else https://huggingface.co].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Access token for gated or private repositories [default: $HF_TOKEN, else the hub cache's
    /// token file].
    #[arg(long)]
    pub token: Option<String>,
    /// Hugging Face cache directory [default: $HF_HOME/hub, else ~/.cache/huggingface/hub].
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub cache_dir: Option<PathBuf>,
    /// Write plain files to DIR/<repo>/<file> instead of the cache.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Retries per file after a network failure; each continues where the last one stopped.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Seconds without a byte from the server before a try is given up (then retried).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
    /// Print the presets (repositories, revisions, files) and exit; needs no network.
    #[arg(long)]
    pub list: bool,
    /// Resolve the files (listing repositories where needed) and print their URLs; download nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

fn preset_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(PRESETS.iter().map(|p| PossibleValue::new(p.name).help(p.about)))
}

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where fetched files go.
enum Layout {
    /// The Hugging Face cache: `blobs/{etag}`, `snapshots/{commit}/{file}` (a link), `refs/{rev}`.
    Cache(Cache),
    /// `DIR/{repo}/{file}`.
    Dir(PathBuf),
}

/// Files of a repository with whether each is required.
type FileList = Vec<(String, bool)>;

/// One file to fetch.
struct Job {
    repo: Repo,
    label: String,
    file: String,
    required: bool,
}

pub fn run(args: FetchArgs) -> Result<()> {
    if args.list {
        print_presets();
        return Ok(());
    }
    let endpoint = args
        .endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    anyhow::ensure!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "--endpoint must be an http:// or https:// URL, got {endpoint:?}"
    );
    let cache = args.cache_dir.clone().map(Cache::new).unwrap_or_else(Cache::from_env);
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok())
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.clone())
        .with_token(token.clone())
        .with_progress(false)
        .build()
        .context("setting up the hub client")?;

    // Sources: the presets in the order given, then --repo; no file list = the repo's listing.
    let mut sources: Vec<(Repo, Option<FileList>)> = Vec::new();
    for name in &args.presets {
        let preset = PRESETS.iter().find(|p| p.name == name).expect("clap checked the preset name");
        for s in preset.sources {
            let repo = Repo::with_revision(s.repo.to_string(), s.kind, s.revision.to_string());
            let files = match &s.files {
                Files::Listed(list) => Some(list.iter().map(|f| (f.path.to_string(), f.required)).collect()),
                Files::All => None,
            };
            sources.push((repo, files));
        }
    }
    if let Some(id) = &args.repo {
        anyhow::ensure!(id.split('/').count() == 2 && safe_relative(id), "--repo must be owner/name, got {id:?}");
        anyhow::ensure!(safe_relative(&args.revision), "--revision {:?} is not a branch, tag or commit name", args.revision);
        for f in &args.files {
            anyhow::ensure!(safe_relative(f), "--file {f:?} {UNSAFE_PATH}");
        }
        let kind = if args.dataset { RepoType::Dataset } else { RepoType::Model };
        let repo = Repo::with_revision(id.clone(), kind, args.revision.clone());
        let files = (!args.files.is_empty()).then(|| args.files.iter().map(|f| (f.clone(), true)).collect());
        sources.push((repo, files));
    }
    if sources.is_empty() {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        bail!("nothing to fetch: name a preset ({}) or --repo OWNER/NAME [--file NAME]", names.join(", "));
    }

    // Expand repositories without a file list through the hub's listing.
    let mut jobs = Vec::new();
    for (repo, files) in sources {
        let label = repo_label(&repo);
        let files = match files {
            Some(files) => files,
            None => list_repo(&api.repo(repo.clone()), &label)?.into_iter().map(|f| (f, true)).collect(),
        };
        for (file, required) in files {
            jobs.push(Job { repo: repo.clone(), label: label.clone(), file, required });
        }
    }
    // The same file asked twice (overlapping presets) is fetched once.
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert((repo_label(&j.repo), j.file.clone())));

    if args.dry_run {
        for job in &jobs {
            let optional = if job.required { "" } else { "  (optional)" };
            println!("{}{optional}", api.repo(job.repo.clone()).url(&job.file));
        }
        return Ok(());
    }

    let layout = match &args.out {
        Some(dir) => Layout::Dir(dir.clone()),
        None => Layout::Cache(cache),
    };
    let client = Client::new(token, &endpoint, args.retries, args.stall_timeout, !args.no_progress);
    let mut failures = Vec::new();
    let (mut fetched, mut skipped) = (0usize, 0usize);
    for job in &jobs {
        let url = api.repo(job.repo.clone()).url(&job.file);
        match client.fetch(&layout, job, &url) {
            Ok(path) => {
                fetched += 1;
                println!("{}", path.display());
            }
            Err(FetchError::Status { code: 404, .. }) if !job.required => {
                skipped += 1;
                eprintln!("{} has no optional file {}: skipped", job.label, job.file);
            }
            Err(e) => {
                let message = format!("{} from {}: {e}", job.file, job.label);
                if jobs.len() > 1 {
                    eprintln!("error: {message}");
                }
                failures.push(message);
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} files could not be fetched:\n  - {}",
            failures.len(),
            jobs.len(),
            failures.join("\n  - ")
        );
    }
    eprintln!("{fetched} files in place{}", if skipped > 0 { format!(", {skipped} optional skipped") } else { String::new() });
    Ok(())
}

fn print_presets() {
    println!("{:<16} {:<40} files", "preset", "repository @ revision");
    for p in PRESETS {
        println!("{:<16} {}", p.name, p.about);
        for s in p.sources {
            let kind = if matches!(s.kind, RepoType::Dataset) { "dataset " } else { "" };
            let files = match &s.files {
                Files::Listed(list) => list
                    .iter()
                    .map(|f| if f.required { f.path.to_string() } else { format!("[{}]", f.path) })
                    .collect::<Vec<_>>()
                    .join(" "),
                Files::All => "every file of the repository".to_string(),
            };
            println!("{:<16} {:<40} {files}", "", format!("{kind}{} @ {}", s.repo, s.revision));
        }
    }
    println!("\n[name]: optional, skipped when the repository does not have it.");
    println!("Not on the hub: RRSIS-D and RISBench (see the README).");
}

const UNSAFE_PATH: &str = "is not a safe relative path (absolute, `..`, `.` or empty component, or a backslash)";

/// Whether a repository path (file name, `owner/name`, revision) stays below the directory it
/// is joined to: `/`-separated, non-empty components other than `.` and `..`, no backslash or
/// NUL, not absolute.
fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 4096
        && !name.contains(['\\', '\0'])
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A commit id as the hub sends it in `X-Repo-Commit`: 40 lowercase hex digits (git sha1) or 64
/// (sha256 repositories). Anything else never becomes a directory name.
fn valid_commit(c: &str) -> bool {
    matches!(c.len(), 40 | 64) && c.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// "model repo owner/name (revision main)".
fn repo_label(repo: &Repo) -> String {
    let url = repo.url();
    match url.strip_prefix("datasets/") {
        Some(id) => format!("dataset repo {id} (revision {})", repo.revision()),
        None => format!("model repo {url} (revision {})", repo.revision()),
    }
}

/// The files of a repository at its revision, through hf-hub's repo info call.
fn list_repo(api: &ApiRepo, label: &str) -> Result<Vec<String>> {
    let info = api.info().map_err(|e| {
        let detail = match &e {
            ApiError::RequestError(err) => match err.as_ref() {
                ureq::Error::Status(code, resp) => status_message(*code, resp.get_url(), &hub_detail(resp), None),
                ureq::Error::Transport(t) => format!("network error: {t}"),
            },
            other => other.to_string(),
        };
        anyhow::anyhow!("cannot list the files of {label}: {detail}")
    })?;
    let files: Vec<String> =
        info.siblings.into_iter().map(|s| s.rfilename).filter(|f| f != ".gitattributes").collect();
    anyhow::ensure!(!files.is_empty(), "{label} lists no files");
    // The names become paths under --out / the cache: one that could leave it refuses the whole
    // listing (a real repository never has one).
    if let Some(bad) = files.iter().find(|f| !safe_relative(f)) {
        anyhow::bail!("{label} lists the file {bad:?}, which {UNSAFE_PATH}; nothing was downloaded");
    }
    Ok(files)
}

/// What can go wrong with one file; the caller adds the file and repository.
#[derive(Debug)]
enum FetchError {
    /// An HTTP error status.
    Status { code: u16, message: String },
    /// No connection, or it broke off (after the retries).
    Network { url: String, reason: String, kept: Option<PathBuf> },
    /// The bytes do not hash to what the hub published.
    Checksum { algorithm: &'static str, expected: String, found: String, kept: PathBuf },
    Other(anyhow::Error),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Status { message, .. } => write!(f, "{message}"),
            FetchError::Network { url, reason, kept } => {
                write!(f, "network failure at {url}: {reason}")?;
                if let Some(kept) = kept {
                    write!(f, "; the bytes received so far are in {} and the next run continues from there", kept.display())?;
                }
                Ok(())
            }
            FetchError::Checksum { algorithm, expected, found, kept } => write!(
                f,
                "checksum mismatch: expected {algorithm} {expected}, found {found}; the downloaded data is kept in {} \
                 for inspection (delete it to download again)",
                kept.display()
            ),
            FetchError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        FetchError::Other(e.into())
    }
}

impl From<anyhow::Error> for FetchError {
    fn from(e: anyhow::Error) -> Self {
        FetchError::Other(e)
    }
}

/// The hub's own error code and message, when it sent them.
fn hub_detail(resp: &ureq::Response) -> String {
    match (resp.header("x-error-code"), resp.header("x-error-message")) {
        (Some(code), Some(msg)) => format!(" (hub: {code}: {msg})"),
        (Some(code), None) => format!(" (hub: {code})"),
        (None, Some(msg)) => format!(" (hub: {msg})"),
        (None, None) => String::new(),
    }
}

fn status_message(code: u16, url: &str, hub: &str, token: Option<&str>) -> String {
    let hint = match code {
        401 if token.is_some() => "the token was not accepted for this repository, or the repository does not exist",
        401 => "the repository is private or gated, or does not exist; pass --token (or set HF_TOKEN) for gated or private repositories",
        403 => "access denied: for a gated repository, accept its conditions on the hub page with the account of the token",
        404 => "not found: the file (or the repository or revision) does not exist on the hub",
        429 => "rate limited by the hub; try again later",
        _ if code >= 500 => "the hub had a server error; try again later",
        _ => "unexpected HTTP status",
    };
    format!("HTTP {code} at {url}{hub}: {hint}")
}

/// A transport error without the URL ureq puts in front (the messages name it once).
fn transport_reason(t: &ureq::Transport, url: &str) -> String {
    let s = t.to_string();
    s.strip_prefix(url).map(|r| r.trim_start_matches(": ").to_string()).unwrap_or(s)
}

/// What the HEAD request says about a file.
struct Meta {
    /// The content hash: sha256 for LFS files, git blob sha1 otherwise (quotes removed).
    etag: Option<String>,
    commit: Option<String>,
    size: Option<u64>,
}

/// The hash the hub publishes for a file, recognised from its form.
enum Expected {
    Sha256(String),
    GitSha1(String),
    None,
}

fn expected_hash(etag: Option<&str>) -> Expected {
    let Some(etag) = etag else { return Expected::None };
    let hex = etag.len() == 64 || etag.len() == 40;
    if hex && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let lower = etag.to_ascii_lowercase();
        if etag.len() == 64 {
            Expected::Sha256(lower)
        } else {
            Expected::GitSha1(lower)
        }
    } else {
        Expected::None
    }
}

/// Hashes `path` and compares with the published hash.
fn verify(path: &Path, expected: &Expected) -> Result<(), FetchError> {
    let (algorithm, want) = match expected {
        Expected::Sha256(h) => ("sha256", h),
        Expected::GitSha1(h) => ("git blob sha1", h),
        Expected::None => return Ok(()),
    };
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    sha1.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match expected {
            Expected::Sha256(_) => sha256.update(&buf[..n]),
            _ => sha1.update(&buf[..n]),
        }
    }
    let found = match expected {
        Expected::Sha256(_) => hex(&sha256.finalize()),
        _ => hex(&sha1.finalize()),
    };
    if &found == want {
        Ok(())
    } else {
        Err(FetchError::Checksum { algorithm, expected: want.clone(), found, kept: path.to_path_buf() })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `path` + `suffix` (`model.safetensors` → `model.safetensors.part`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The HTTP side: one agent that follows redirects (downloads; the token only goes to the hub's
/// host), one that does not (metadata, as the hub's own clients do).
struct Client {
    agent: ureq::Agent,
    no_redirect: ureq::Agent,
    token: Option<String>,
    endpoint: String,
    retries: u32,
    progress: bool,
}

impl Client {
    fn new(token: Option<String>, endpoint: &str, retries: u32, stall_timeout: u64, progress: bool) -> Self {
        let builder = || {
            ureq::AgentBuilder::new()
                .try_proxy_from_env(true)
                .timeout_connect(Duration::from_secs(30))
                .timeout_read(Duration::from_secs(stall_timeout))
                .user_agent(concat!("rsrefseg/", env!("CARGO_PKG_VERSION"), "; hf-hub/0.4"))
        };
        Client {
            agent: builder().redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost).build(),
            no_redirect: builder().redirects(0).build(),
            token,
            endpoint: endpoint.to_string(),
            retries,
            progress,
        }
    }

    /// A request with the token (only towards the endpoint) and without content encoding, so
    /// sizes, ranges and hashes are those of the file.
    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let mut req = agent.request(method, url).set("Accept-Encoding", "identity");
        if let Some(token) = &self.token {
            if url.strip_prefix(&self.endpoint).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')) {
                req = req.set("Authorization", &format!("Bearer {token}"));
            }
        }
        req
    }

    fn backoff(attempt: u32) {
        std::thread::sleep(Duration::from_millis((500u64 << attempt.min(4)).min(8_000)));
    }

    /// `HEAD` the resolve URL, following only relative redirects (renamed repositories); an
    /// absolute redirect (LFS storage) is not followed, its headers carry the metadata.
    fn head(&self, url: &str) -> Result<Meta, FetchError> {
        let mut current = url.to_string();
        let mut attempt = 0;
        let mut hops = 0;
        loop {
            match self.request(&self.no_redirect, "HEAD", &current).call() {
                Ok(resp) => {
                    if (300..400).contains(&resp.status()) {
                        if let Some(location) = resp.header("location").filter(|l| l.starts_with('/')) {
                            hops += 1;
                            if hops > 5 {
                                return Err(FetchError::Other(anyhow::anyhow!("too many redirects from {url}")));
                            }
                            let origin_end = current.find("://").map_or(0, |i| i + 3);
                            let host_end = current[origin_end..].find('/').map_or(current.len(), |i| origin_end + i);
                            current = format!("{}{location}", &current[..host_end]);
                            continue;
                        }
                    }
                    let header = |name: &str| resp.header(name).map(|v| v.trim().to_string());
                    let etag = header("x-linked-etag")
                        .or_else(|| header("etag"))
                        .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string());
                    let size = header("x-linked-size")
                        .or_else(|| header("content-length"))
                        .and_then(|s| s.parse().ok());
                    return Ok(Meta { etag, commit: header("x-repo-commit"), size });
                }
                Err(ureq::Error::Status(code, resp)) => {
                    if (code == 429 || code >= 500) && attempt < self.retries {
                        attempt += 1;
                        Self::backoff(attempt);
                        continue;
                    }
                    let message = status_message(code, &current, &hub_detail(&resp), self.token.as_deref());
                    return Err(FetchError::Status { code, message });
                }
                Err(ureq::Error::Transport(t)) => {
                    if attempt < self.retries {
                        attempt += 1;
                        eprintln!("{}; retry {attempt} of {}", transport_reason(&t, &current), self.retries);
                        Self::backoff(attempt);
                        continue;
                    }
                    return Err(FetchError::Network { reason: transport_reason(&t, &current), url: current, kept: None });
                }
            }
        }
    }

    /// Fetches one file into its place and returns that path.
    fn fetch(&self, layout: &Layout, job: &Job, url: &str) -> Result<PathBuf, FetchError> {
        let meta = self.head(url)?;
        let expected = expected_hash(meta.etag.as_deref());
        match layout {
            Layout::Dir(dir) => {
                let dest = dir.join(job.repo.url()).join(&job.file);
                if let Ok(m) = std::fs::metadata(&dest) {
                    let same_size = meta.size.is_none_or(|s| s == m.len());
                    if same_size && verify(&dest, &expected).is_ok() {
                        eprintln!("{} of {} is up to date", job.file, job.label);
                        return Ok(dest);
                    }
                }
                let part = with_suffix(&dest, ".part");
                let lock = self.open_part(&part, &part)?;
                self.download(url, &part, lock, meta.size, &job.file)?;
                verify(&part, &expected)?;
                std::fs::rename(&part, &dest).with_context(|| format!("moving {} into place", part.display()))?;
                Ok(dest)
            }
            Layout::Cache(cache) => {
                let Some(etag) = meta.etag.as_deref() else {
                    return Err(FetchError::Other(anyhow::anyhow!(
                        "the server sent no ETag for {url}, which the cache layout needs; use --out DIR"
                    )));
                };
                if etag.is_empty() || etag.contains(['/', '\\']) || etag == "." || etag == ".." {
                    return Err(FetchError::Other(anyhow::anyhow!("the server sent an unusable ETag {etag:?} for {url}")));
                }
                if let Some(c) = meta.commit.as_deref().filter(|c| !valid_commit(c)) {
                    return Err(FetchError::Other(anyhow::anyhow!(
                        "the server sent an invalid commit id (X-Repo-Commit {c:?}) for {url}; nothing was written"
                    )));
                }
                let commit = meta.commit.clone().unwrap_or_else(|| job.repo.revision().to_string());
                let repo_dir = cache.path().join(job.repo.folder_name());
                let blob = repo_dir.join("blobs").join(etag);
                let present = std::fs::metadata(&blob).is_ok_and(|m| meta.size.is_none_or(|s| s == m.len()));
                if present {
                    eprintln!("{} of {} is already in the cache", job.file, job.label);
                } else {
                    let part = with_suffix(&blob, ".part");
                    // The lock file hf-hub uses for the same blob.
                    let lock = self.open_part(&part, &with_suffix(&blob, ".lock"))?;
                    self.download(url, &part, lock, meta.size, &job.file)?;
                    verify(&part, &expected)?;
                    std::fs::rename(&part, &blob).with_context(|| format!("moving {} into place", part.display()))?;
                }
                let pointer = repo_dir.join("snapshots").join(&commit).join(&job.file);
                link_snapshot(&blob, &pointer, &job.file, etag)?;
                if meta.commit.is_some() && commit != job.repo.revision() {
                    cache.repo(job.repo.clone()).create_ref(&commit)?;
                }
                Ok(pointer)
            }
        }
    }

    /// Opens (creating) the `.part` file and takes the exclusive lock on `lock_path`, so two runs
    /// never write the same file.
    fn open_part(&self, part: &Path, lock_path: &Path) -> Result<(File, Option<File>), FetchError> {
        if let Some(parent) = part.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(part)
            .with_context(|| format!("opening {}", part.display()))?;
        let lock_file = if lock_path == part {
            None
        } else {
            Some(File::create(lock_path).with_context(|| format!("creating {}", lock_path.display()))?)
        };
        let to_lock = lock_file.as_ref().unwrap_or(&file);
        if to_lock.try_lock().is_err() {
            return Err(FetchError::Other(anyhow::anyhow!(
                "{} is locked: another download of the same file is running",
                lock_path.display()
            )));
        }
        Ok((file, lock_file))
    }

    /// GETs `url` into `part`, continuing after what it already holds with a Range request, and
    /// retrying network failures. The `.part` file is left in place on failure.
    fn download(
        &self,
        url: &str,
        part: &Path,
        (mut file, _lock): (File, Option<File>),
        size: Option<u64>,
        name: &str,
    ) -> Result<(), FetchError> {
        let mut pos = file.metadata()?.len();
        if let Some(size) = size {
            if pos > size {
                return Err(FetchError::Other(anyhow::anyhow!(
                    "{} holds {pos} bytes but the file has {size}; it is kept for inspection, delete it to download again",
                    part.display()
                )));
            }
        }
        let bar = match (self.progress, size) {
            (false, _) => ProgressBar::hidden(),
            (true, Some(size)) => ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr()),
            (true, None) => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        bar.set_position(pos);
        if pos > 0 && size != Some(pos) {
            eprintln!("{name}: continuing from byte {pos} of {}", part.display());
        }
        let mut attempt = 0;
        loop {
            if size == Some(pos) {
                break;
            }
            let mut req = self.request(&self.agent, "GET", url);
            if pos > 0 {
                req = req.set("Range", &format!("bytes={pos}-"));
            }
            let failure = match req.call() {
                Ok(resp) => {
                    if pos > 0 && resp.status() == 206 {
                        let range = resp.header("content-range").unwrap_or("");
                        if !range.starts_with(&format!("bytes {pos}-")) {
                            return Err(FetchError::Other(anyhow::anyhow!(
                                "asked {url} for bytes {pos}- and got the range {range:?}"
                            )));
                        }
                    } else if pos > 0 {
                        // The server ignored the range: start over.
                        eprintln!("{name}: the server does not resume (HTTP {}); starting over", resp.status());
                        file.set_len(0)?;
                        pos = 0;
                        bar.set_position(0);
                    }
                    file.seek(SeekFrom::Start(pos))?;
                    let mut reader = resp.into_reader();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut broke = None;
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                file.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
                                pos += n as u64;
                                bar.set_position(pos);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                broke = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    file.flush()?;
                    match (broke, size) {
                        (Some(reason), _) => reason,
                        (None, Some(size)) if pos < size => format!("the connection closed after {pos} of {size} bytes"),
                        (None, Some(size)) if pos > size => {
                            return Err(FetchError::Other(anyhow::anyhow!(
                                "{url} sent {pos} bytes, more than the {size} announced; {} is kept for inspection",
                                part.display()
                            )));
                        }
                        (None, _) => break,
                    }
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let message = status_message(code, url, &hub_detail(&resp), self.token.as_deref());
                    if code == 416 && size.is_none() {
                        break; // everything was already there
                    }
                    if !(code == 429 || code >= 500) {
                        return Err(FetchError::Status { code, message });
                    }
                    message
                }
                Err(ureq::Error::Transport(t)) => transport_reason(&t, url),
            };
            if attempt >= self.retries {
                bar.abandon();
                return Err(FetchError::Network {
                    url: url.to_string(),
                    reason: failure,
                    kept: (pos > 0).then(|| part.to_path_buf()),
                });
            }
            attempt += 1;
            eprintln!("{name}: {failure}; retry {attempt} of {} from byte {pos}", self.retries);
            Self::backoff(attempt);
        }
        file.sync_all()?;
        bar.finish();
        Ok(())
    }
}

/// Points `snapshots/{commit}/{file}` at `blobs/{etag}` (a relative symbolic link, as the
/// Hugging Face cache does; a copy where links are not available), replacing atomically.
fn link_snapshot(blob: &Path, pointer: &Path, file: &str, etag: &str) -> Result<(), FetchError> {
    let parent = pointer.parent().expect("snapshot paths have a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = pointer.file_name().expect("file name").to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    {
        // snapshots/{commit}/a/b → ../../../blobs/{etag}: two levels for snapshots/{commit}, one per folder of the file.
        let depth = 2 + file.split('/').count() - 1;
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
        let _ = blob;
    }
    #[cfg(not(unix))]
    {
        let _ = (file, etag);
        std::fs::copy(blob, &tmp).with_context(|| format!("copying {}", blob.display()))?;
    }
    std::fs::rename(&tmp, pointer).with_context(|| format!("moving {} into place", pointer.display()))?;
    Ok(())
}
